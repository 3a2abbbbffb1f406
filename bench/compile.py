"""`sagestack bench compile`: the seed's speedup table at model level (no HTTP).

For each model (torchvision architectures with random weights, and a U-Net) it times PyTorch eager
and TorchScript, then runs the compilation job with every backend (TVM untuned, ignoring any tuning
database, ONNX Runtime, OpenVINO) and, with --tune-trials, again with MetaSchedule for TVM tuned.
Latencies are medians at batch 1; compile times are what each backend's build took.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

COLUMNS = ("eager", "torchscript", "onnxruntime", "tvm_untuned", "tvm_tuned", "openvino")


def log(message: str) -> None:
    print(f"[bench compile] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    import torch

    from bench.cnn_zoo import MODELS
    from compiler.artifact import pack_model_tar
    from compiler.job import Tuning, compile_model, median_ms
    from server.settings import Settings

    unknown = set(args.models) - set(MODELS)
    if unknown:
        raise SystemExit(f"bench compile: unknown model(s) {sorted(unknown)} (have: {', '.join(MODELS)})")
    tuning_root = Settings.from_env().tuning_dir
    work = Path(tempfile.mkdtemp(prefix="sagestack-bench-compile-"))
    rows: dict[str, dict[str, Any]] = {}
    for name in args.models:
        make, shape = MODELS[name]
        torch.manual_seed(0)
        model = make().eval()
        x = torch.rand(*shape)
        with torch.no_grad():
            traced = torch.jit.trace(model, x)
            latency = {
                "eager": median_ms(lambda m=model, x=x: m(x), args.runs),
                "torchscript": median_ms(lambda m=traced, x=x: m(x), args.runs),
            }
        log(f"{name}: eager {latency['eager']:.1f} ms, TorchScript {latency['torchscript']:.1f} ms")
        tar = pack_model_tar(traced, work / f"{name}.tar.gz")
        out = work / name
        meta = compile_model(tar, "pytorch", {"input0": shape}, args.target, out, args.runs,
                             tuning=Tuning(use_database=False))  # fmt: skip
        candidates = list(meta["candidates"])
        if args.tune_trials:
            tuning = Tuning(args.tune_trials, args.trials_per_task, root=tuning_root)
            tuned = compile_model(tar, "pytorch", {"input0": shape}, args.target, work / f"{name}_tuned", args.runs,
                                  backends=("tvm",), tuning=tuning, tuning_key=f"bench-{name}")  # fmt: skip
            candidates += tuned["candidates"]
        compile_s, parity = {}, {}
        for c in candidates:
            column = c["backend"].replace("-metaschedule", "_tuned").replace("-untuned", "_untuned")
            latency[column] = c.get("latency_ms")
            compile_s[column] = c.get("compile_s")
            parity[column] = c.get("parity", {}).get("max_rel", c.get("error"))
        eager = latency["eager"]
        rows[name] = {
            "input": shape,
            "latency_ms": {k: round(latency[k], 2) if latency.get(k) else None for k in COLUMNS},
            "speedup_vs_eager": {k: round(eager / latency[k], 2) if latency.get(k) else None for k in COLUMNS},
            "compile_s": compile_s,
            "parity_max_rel": parity,
        }
    report = {"target": args.target, "runs": args.runs, "tune_trials": args.tune_trials, "models": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot(report, args.out.with_suffix(".png"))
    print(table(report))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def table(report: dict[str, Any]) -> str:
    lines = ["| model | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, row in report["models"].items():
        cells = []
        for k in COLUMNS:
            ms, built = row["latency_ms"][k], row["compile_s"].get(k)
            cells.append("-" if ms is None else f"{ms:.1f} ms" + (f" ({built:.0f} s build)" if built else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["models"])
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(COLUMNS)
    for i, column in enumerate(COLUMNS):
        values = [report["models"][n]["speedup_vs_eager"][column] or 0 for n in names]
        ax.bar([j + i * width for j in range(len(names))], values, width, label=column)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names)
    ax.set_ylabel("speedup over PyTorch eager (log)")
    ax.set_title(f"batch-1 latency by backend, target {report['target']}")
    ax.legend(ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
