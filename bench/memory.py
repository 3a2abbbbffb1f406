"""`sagestack bench memory`: RSS and PSS of every process of the default stack, under each runtime sharing mode.

For SAGESTACK_RUNTIME_SHARING=model and =framework in turn, the stack starts over the model directory at
SageMaker's defaults (one gevent worker, one instance), settles, and is sampled idle; then each model gets one
request (its real payload from bench.payloads) and it is sampled again. RSS counts shared pages in every process
that maps them (TensorFlow's libraries, the gunicorn fork); PSS splits them, so PSS sums to what the stack costs
the machine. JSON and a PNG (stacked per process) go to --out.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import requests

from bench import payloads
from bench.procstats import sample
from bench.stack import start_stack

MODES = ("model", "framework")
TARGET_MB = 2500  # issue 17: the whole default stack, framework mode
SETTLE_S = 3.0


def measure(model_dir: Path, sharing: str) -> dict[str, Any]:
    """Start the stack in one mode; its processes idle and after one request to every model."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"sagestack-memory-{sharing}-"))
    stack = start_stack(model_dir, run_dir, SAGESTACK_RUNTIME_SHARING=sharing, SAGESTACK_FAIL_ON_MODEL_ERROR="false")
    try:
        root = psutil.Process(stack.proc.pid)
        models = sorted(stack.routes()["models"])
        time.sleep(SETTLE_S)
        idle = sample(root)
        codes = {}
        for name in models:
            p = payloads.for_model(name)
            codes[name] = requests.post(
                stack.url + "/invocations", data=p.body, headers=p.headers, timeout=300
            ).status_code
        time.sleep(SETTLE_S)
        warm = sample(root)
    finally:
        stack.stop()
    return {"sharing": sharing, "models": models, "status": codes, "idle": idle, "warm": warm}


def totals(processes: dict[str, dict[str, float]]) -> dict[str, float]:
    """Sums over the stack: everything, and everything but the gateway worker(s) (the issue's two figures)."""
    rss = sum(p["rss_mb"] for p in processes.values())
    pss = sum(p["pss_mb"] for p in processes.values())
    workers = sum(p["rss_mb"] for name, p in processes.items() if name.startswith("gunicorn worker"))
    return {"rss_mb": round(rss, 1), "pss_mb": round(pss, 1), "rss_without_workers_mb": round(rss - workers, 1)}


def run(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    results = []
    with Progress() as progress:
        task = progress.add_task("bench memory", total=len(MODES))
        for sharing in MODES:
            progress.update(task, description=f"bench memory: sharing={sharing}")
            result = measure(args.model_dir, sharing)
            result["totals"] = {phase: totals(result[phase]) for phase in ("idle", "warm")}
            results.append(result)
            progress.advance(task)
    report = {
        "settings": {
            "model_dir": str(args.model_dir),
            "stack": "SageMaker defaults: 1 gevent worker, SAGEMAKER_TFS_INSTANCE_COUNT=1, OMP_NUM_THREADS=1",
            "target_mb": TARGET_MB,
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot(report, args.out.with_suffix(".png"))
    print(json.dumps({r["sharing"]: r["totals"] for r in results}, indent=1))
    return 0


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(f"{r['sharing']}\n{phase}", r[phase]) for r in report["results"] for phase in ("idle", "warm")]
    names = sorted({name for _, procs in bars for name in procs}, key=lambda n: (not n.startswith("runtime"), n))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for ax, metric in zip(axes, ("rss_mb", "pss_mb"), strict=True):
        bottoms = [0.0] * len(bars)
        for name in names:
            heights = [procs.get(name, {}).get(metric, 0.0) for _, procs in bars]
            ax.bar([b[0] for b in bars], heights, bottom=bottoms, label=name)
            bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        for x, total in enumerate(bottoms):
            ax.text(x, total, f"{total:.0f}", ha="center", va="bottom", fontsize=8)
        ax.axhline(report["settings"]["target_mb"], color="red", ls=":", lw=1)
        ax.set_title(metric.removesuffix("_mb").upper() + ", MB (stacked per process)")
    axes[0].legend(fontsize=7)
    fig.suptitle("bench memory: the default stack per SAGESTACK_RUNTIME_SHARING mode (red: 2.5 GB target)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
