"""`sagestack bench streaming`: the music model through the whole stack, streamed against whole.

The same melody, parameters and seed are sent alternately as a streamed request (Accept: application/jsonlines:
a line per note as the runtime samples it, then the MIDI) and as a whole one (Accept: audio/midi), to one stack
at SageMaker's defaults. Reported: the streamed request's time to its first note and to its last line, and the
whole request's time; the headline is first note / whole extension (medians). Both get the same extension, so
the whole request and the stream's end should take about as long.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import requests


def run(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from bench.stack import start_stack
    from models.music_transformer.build import export
    from models.music_transformer.melodies import melody
    from models.music_transformer.tokens import write_midi

    models = args.out.parent / "streaming-model"
    if not (models / "music_transformer" / "1").is_dir():
        export(args.weights, models / "music_transformer")
    body = write_midi(melody(args.melody))
    attrs = f"extension_duration={args.extension_seconds:g},seed={args.seed}"
    stack = start_stack(models, args.out.parent / "streaming-run", SAGEMAKER_TFS_DEFAULT_MODEL_NAME="music_transformer")
    first, streamed, whole, notes = [], [], [], []
    try:
        post(stack.url, body, "audio/midi", "extension_duration=1")  # warm-up
        with Progress(transient=True) as progress:
            task = progress.add_task("streamed and whole, interleaved", total=args.runs)
            for _ in range(args.runs):
                to_first, to_end, lines = stream(stack.url, body, attrs)
                first.append(to_first)
                streamed.append(to_end)
                notes.append(lines - 1)
                started = time.perf_counter()
                post(stack.url, body, "audio/midi", attrs)
                whole.append(time.perf_counter() - started)
                progress.advance(task)
    finally:
        stack.stop()
    report = summarize(first, streamed, whole, notes, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot(report, args.out.with_suffix(".png"))
    print(json.dumps({k: report[k] for k in ("first_note_s", "stream_end_s", "whole_s", "first_note_over_whole")}))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}", file=sys.stderr)
    return 0


def post(url: str, body: bytes, accept: str, attrs: str) -> bytes:
    headers = {"Content-Type": "audio/midi", "Accept": accept, "X-Amzn-SageMaker-Custom-Attributes": attrs}
    r = requests.post(url + "/invocations", data=body, headers=headers, timeout=300)
    r.raise_for_status()
    return r.content


def stream(url: str, body: bytes, attrs: str) -> tuple[float, float, int]:
    """(seconds to the first note line, seconds to the last line, lines)."""
    headers = {
        "Content-Type": "audio/midi",
        "Accept": "application/jsonlines",
        "X-Amzn-SageMaker-Custom-Attributes": attrs,
    }
    started = time.perf_counter()
    to_first, lines = None, 0
    with requests.post(url + "/invocations", data=body, headers=headers, stream=True, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            lines += 1
            if to_first is None and "note" in json.loads(line):
                to_first = time.perf_counter() - started
    end = time.perf_counter() - started
    return (end if to_first is None else to_first), end, lines


def summarize(first: list[float], streamed: list[float], whole: list[float], notes: list[int],
              args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    med = {name: round(statistics.median(v), 4) for name, v in (("first", first), ("end", streamed), ("whole", whole))}
    return {
        "melody": args.melody,
        "extension_seconds": args.extension_seconds,
        "seed": args.seed,
        "runs": args.runs,
        "settings": "SageMaker's defaults on both (one gunicorn worker, one runtime instance, OMP_NUM_THREADS=1)",
        "first_note_s": med["first"],
        "stream_end_s": med["end"],
        "whole_s": med["whole"],
        "first_note_over_whole": round(med["first"] / med["whole"], 4),
        "notes_streamed": notes,
        "runs_s": {"first_note": first, "stream_end": streamed, "whole": whole},
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("first note (streamed)", "last line (streamed)", "whole answer")
    keys = ("first_note", "stream_end", "whole")
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, key in enumerate(keys):
        runs = report["runs_s"][key]
        median = statistics.median(runs)
        ax.bar(i, median, color=("tab:green", "tab:blue", "tab:grey")[i], alpha=0.7)
        ax.scatter([i] * len(runs), runs, color="black", s=12, zorder=3)
        ax.text(i, median, f"{median:.3f} s", ha="center", va="bottom")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(f"seconds, {report['extension_seconds']:g} s extension")
    ax.set_title(f"music streaming: first note at {report['first_note_over_whole']:.1%} of the whole (median of "
                 f"{report['runs']})")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
