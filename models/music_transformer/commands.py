"""`sagestack music train|evaluate|extend|plot`: the parsers here, the work (and torch) imported on use."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from models.music_transformer.melodies import MELODIES

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "music_transformer.pt"
DEFAULT_METRICS = Path("build/reports/music/metrics.json")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("music", help="DeepComposer-style melody extension")
    sub = parser.add_subparsers(dest="action", required=True)
    t = sub.add_parser("train", help="train on the Bach chorales (progress, checkpoints, --resume)")
    t.add_argument("--config", choices=["default", "tiny"], default="default")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--warmup", type=int, default=200)
    t.add_argument("--eval-every", type=int, default=250)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    t.add_argument("--limit", type=int, help="use only the first N chorales (tests)")
    t.add_argument("--out", type=Path, default=Path("build/music"), help="checkpoints and train.json")
    t.add_argument("--export", type=Path, default=DEFAULT_WEIGHTS, help="where the best model is written")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument("--device", default="auto", help="auto (a GPU where there is one), cpu, cuda")
    e = sub.add_parser("evaluate", help="validation/test NLL of the shipped model -> metrics.json")
    e.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    e.add_argument("--out", type=Path, default=DEFAULT_METRICS)
    e.add_argument("--limit", type=int, help="use only the first N chorales (tests)")
    x = sub.add_parser("extend", help="extend a melody: IN.mid (or a shipped melody's name) -> --out OUT.mid")
    x.add_argument("input", help=f"a MIDI file, or one of the shipped melodies ({', '.join(MELODIES)})")
    x.add_argument("--out", type=Path, required=True)
    x.add_argument("--plot", type=Path, help="also write a piano roll PNG here")
    x.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    x.add_argument("--no-cache", action="store_true", help="re-run the whole window per token (the baseline)")
    add_generation_args(x)
    pl = sub.add_parser("plot", help="a piano roll PNG of a MIDI file")
    pl.add_argument("input", type=Path)
    pl.add_argument("--out", type=Path, required=True)
    pl.add_argument("--split", type=float, help="seconds where the extension starts (coloured apart)")
    for p in (t, e, x, pl):
        p.set_defaults(fn=run)


def add_generation_args(p: argparse.ArgumentParser) -> None:
    """DeepComposer's parameters as flags, defaults from Params."""
    from models.music_transformer.params import Params

    d = Params()
    p.add_argument("--sampling", choices=["nucleus", "top_k"], default=d.sampling)
    p.add_argument("--threshold", type=float, default=d.threshold, help="nucleus p, or top-k k")
    p.add_argument("--temperature", type=float, default=d.temperature, help="creative risk")
    p.add_argument("--input-duration", type=float, default=d.input_duration, help="seconds of input used")
    p.add_argument("--extension-duration", type=float, default=d.extension_duration, help="seconds added (<= 30)")
    p.add_argument("--max-rest", type=float, default=d.max_rest, help="longest rest, seconds")
    p.add_argument("--max-notes", type=int, default=d.max_notes, help="notes the extension may add")
    p.add_argument("--max-polyphony", type=int, default=d.max_polyphony, help="notes sounding at once")
    p.add_argument("--max-note-length", type=float, default=d.max_note_length, help="seconds")
    p.add_argument("--seed", type=int, default=d.seed)


def generation_params(args: argparse.Namespace):
    from dataclasses import fields

    from models.music_transformer.params import ParameterError, Params, parse

    try:
        return parse({f.name: getattr(args, f.name) for f in fields(Params)})
    except ParameterError as exc:
        raise SystemExit(f"sagestack music: {exc}") from None


def read_input(source: str) -> list:
    from models.music_transformer.melodies import melody
    from models.music_transformer.tokens import MidiError, read_midi

    path = Path(source)
    if not path.exists() and source in MELODIES:
        return melody(source)
    try:
        return read_midi(path.read_bytes())
    except (OSError, MidiError) as exc:
        raise SystemExit(f"sagestack music: {source}: {exc}") from None


def cmd_extend(args: argparse.Namespace) -> None:
    import time

    from models.music_transformer.generate import extend
    from models.music_transformer.model import load
    from models.music_transformer.pianoroll import piano_roll_png
    from models.music_transformer.tokens import decode, write_midi

    params = generation_params(args)
    model = load(args.weights)
    started = time.perf_counter()
    context, generated = extend(model, read_input(args.input), params, cached=not args.no_cache)
    took = time.perf_counter() - started
    given, notes = decode(context), decode(context + generated)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(write_midi(notes))
    print(
        f"wrote {args.out}: {len(given)} input notes + {len(notes) - len(given)} added, "
        f"{len(generated)} tokens in {took:.2f} s"
    )
    if args.plot:
        split = max(n.end for n in given)
        added = [n for n in notes if n.start >= split]
        args.plot.write_bytes(piano_roll_png([n for n in notes if n.start < split], added, args.out.name))
        print(f"wrote {args.plot}")


def cmd_plot(args: argparse.Namespace) -> None:
    from models.music_transformer.pianoroll import piano_roll_png

    notes = read_input(str(args.input))
    split = args.split if args.split is not None else float("inf")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    given, added = [n for n in notes if n.start < split], [n for n in notes if n.start >= split]
    args.out.write_bytes(piano_roll_png(given, added, args.input.name))
    print(f"wrote {args.out}")


def run(args: argparse.Namespace) -> int:
    if args.action == "train":
        from models.music_transformer.train import train

        train(args)
    elif args.action == "evaluate":
        from models.music_transformer.train import run_evaluate

        print(json.dumps(run_evaluate(args.weights, args.out, args.limit)))
    elif args.action == "extend":
        cmd_extend(args)
    else:
        cmd_plot(args)
    return 0
