"""`sagestack bench music`: time to generate a 30 s extension, KV cache against eager without one.

Both variants run the same model, melody, parameters and seed in one process, interleaved run by
run (cached, uncached, cached, ...), and the medians are compared. The served path runs the same
cached loop inside the music runtime, so this is the model-level cost of one request.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = {"kv_cache": True, "eager_no_cache": False}


def run(args: argparse.Namespace) -> int:
    import torch

    from models.music_transformer.generate import extend
    from models.music_transformer.melodies import melody
    from models.music_transformer.model import load
    from models.music_transformer.params import Params

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load(args.weights)
    notes = melody(args.melody)
    params = Params(extension_duration=args.extension_seconds, seed=args.seed)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    tokens: dict[str, list[int]] = {name: [] for name in VARIANTS}
    extend(model, notes, Params(extension_duration=1.0))  # warm-up
    for i in range(args.runs):
        for name, cached in VARIANTS.items():
            started = time.perf_counter()
            _, generated = extend(model, notes, params, cached=cached)
            times[name].append(time.perf_counter() - started)
            tokens[name].append(len(generated))
            print(
                f"[bench music] run {i + 1}/{args.runs} {name}: {times[name][-1]:.2f} s, {len(generated)} tokens",
                file=sys.stderr,
            )
    report = summarize(times, tokens, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot(report, args.out.with_suffix(".png"))
    print(
        json.dumps(
            {k: report[k] for k in ("speedup", "target_met")}
            | {name: v["median_s"] for name, v in report["variants"].items()}
        )
    )
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def summarize(times: dict[str, list[float]], tokens: dict[str, list[int]], args: argparse.Namespace) -> dict[str, Any]:
    import torch

    variants = {
        name: {
            "median_s": round(statistics.median(runs), 3),
            "runs_s": [round(t, 3) for t in runs],
            "tokens": tokens[name],
            "tokens_per_s": round(sum(tokens[name]) / sum(runs), 1),
        }
        for name, runs in times.items()
    }
    speedup = variants["eager_no_cache"]["median_s"] / variants["kv_cache"]["median_s"]
    return {
        "extension_seconds": args.extension_seconds,
        "melody": args.melody,
        "runs": args.runs,
        "threads": torch.get_num_threads(),
        "weights": str(args.weights),
        "variants": variants,
        "speedup": round(speedup, 2),
        "target_met": speedup >= 3.0 and variants["kv_cache"]["median_s"] < 5.0,
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["variants"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, name in enumerate(names):
        v = report["variants"][name]
        ax.bar(i, v["median_s"], color=("tab:green", "tab:grey")[i % 2], alpha=0.7)
        ax.scatter([i] * len(v["runs_s"]), v["runs_s"], color="black", s=12, zorder=3)
        ax.text(i, v["median_s"], f"{v['median_s']:.2f} s", ha="center", va="bottom")
    ax.axhline(5.0, color="red", linestyle="--", linewidth=1, label="5 s target")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(f"seconds for a {report['extension_seconds']:g} s extension")
    ax.set_title(f"music generation: {report['speedup']}x with the KV cache (median of {report['runs']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
