"""`sagestack bench explain`: what Clarify-style online explanations cost per record on credit_risk.

One stack serves credit_risk under examples/credit_risk_explained.json, its NumberOfSamples set to each value
asked for (one stack per value). Each round sends the same single application twice, interleaved: as a plain
prediction (`X-Amzn-SageMaker-Enable-Explanations: `false``: Clarify's answer, no SHAP) and explained (`true`).
Reported per value: the medians of both, the extra time an explained record costs, and their ratio; the synthetic
records each explanation scores are NumberOfSamples x baseline rows (+ the baseline).
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

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "credit_risk_explained.json"


def run(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from bench.stack import start_stack
    from models.credit_risk.data import load

    models = args.out.parent / "explain-model"  # credit_risk alone: the stack starts and serves nothing else
    if not (models / "credit_risk").exists():
        models.mkdir(parents=True, exist_ok=True)
        if (args.model_dir / "credit_risk").is_dir():
            (models / "credit_risk").symlink_to((args.model_dir / "credit_risk").resolve())
        else:
            from models.credit_risk.build import build

            build(models / "credit_risk", args.out.parent / "explain-reports")
    body = load().drop(columns=["risk"]).iloc[[args.record]].to_csv(index=False, header=False).encode()
    rows: list[dict[str, Any]] = []
    with Progress(transient=True) as progress:
        for samples in args.samples:
            config = json.loads(EXAMPLE.read_text())
            config["ExplainerConfig"]["ClarifyExplainerConfig"]["ShapConfig"]["NumberOfSamples"] = samples
            path = args.out.parent / f"explain-{samples}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(config))
            stack = start_stack(models, args.out.parent / f"explain-run-{samples}", SAGESTACK_ENDPOINT_CONFIG=str(path),
                                SAGESTACK_MODEL_DIR=str(models))  # fmt: skip
            plain, explained = [], []
            try:
                for flag in ("`false`", "`true`"):  # warm-up
                    post(stack.url, body, flag)
                task = progress.add_task(
                    f"NumberOfSamples={samples}: plain and explained, interleaved", total=args.runs
                )
                for _ in range(args.runs):
                    plain.append(post(stack.url, body, "`false`"))
                    explained.append(post(stack.url, body, "`true`"))
                    progress.advance(task)
            finally:
                stack.stop()
            p, e = statistics.median(plain), statistics.median(explained)
            rows.append({
                "number_of_samples": samples,
                "plain_ms": round(p * 1000, 2),
                "explained_ms": round(e * 1000, 2),
                "explanation_ms_per_record": round((e - p) * 1000, 2),
                "explained_over_plain": round(e / p, 2),
                "runs_s": {"plain": plain, "explained": explained},
            })  # fmt: skip
    report = {
        "model": "credit_risk (20 readable features, one baseline row)",
        "record": args.record,
        "runs": args.runs,
        "settings": "SageMaker's defaults on both sides (one gunicorn worker, one runtime instance, "
        "OMP_NUM_THREADS=1); the client waits for each answer",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot(report, args.out.with_suffix(".png"))
    print(json.dumps([{k: v for k, v in r.items() if k != "runs_s"} for r in rows]))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}", file=sys.stderr)
    return 0


def post(url: str, body: bytes, enable: str) -> float:
    headers = {"Content-Type": "text/csv", "Accept": "text/csv", "X-Amzn-SageMaker-Enable-Explanations": enable}
    started = time.perf_counter()
    r = requests.post(url + "/invocations", data=body, headers=headers, timeout=300)
    r.raise_for_status()
    return time.perf_counter() - started


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    fig, ax = plt.subplots(figsize=(7, 4))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["plain_ms"] for r in rows], width=0.4, label="plain prediction")
    ax.bar([i + 0.2 for i in x], [r["explained_ms"] for r in rows], width=0.4, label="with kernel SHAP")
    for i, r in zip(x, rows, strict=True):
        ax.text(i + 0.2, r["explained_ms"], f"{r['explained_over_plain']:.1f}x", ha="center", va="bottom")
    ax.set_xticks(list(x), [f"NumberOfSamples={r['number_of_samples']}" for r in rows])
    ax.set_ylabel("ms per record (median)")
    ax.set_title(f"credit_risk online explanations (median of {report['runs']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
