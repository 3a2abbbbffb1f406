"""`sagestack bench latency`: the seed's measurement, compiled vs uncompiled, through the whole stack.

One endpoint serves both variants of the model (`<model>` and `<model>_compiled`); the loop sends a
real photo sequentially, alternating `compiled=false` / `compiled=true` request by request, so both
see the same machine state. Warm-up requests are not recorded. The client runs pinned to the CPUs
in --loadgen-cpus where it can (the server uses all of them).

Threads: by default both variants run at SageMaker's defaults (OMP_NUM_THREADS=1, the intra-op pool left to
the runtime: TorchScript then runs on one thread while OpenVINO sizes its own pool). `--threads N` gives both
the same N (OMP_NUM_THREADS and SAGEMAKER_TFS_INTRA_OP_PARALLELISM, which the TorchScript runtime and every
compiled runtime honour), the fair comparison. The report names the settings.

Beside each request, the same variant's model runs once in this process, loaded by its runtime's own backend
(server.runtimes.RUNTIMES) with the runtime's thread settings, on zeros of its input shape: so each variant's
stack figure has its model figure from the same moments, and the report gives what the stack adds to each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

from bench.loadgen import percentile
from bench.payloads import Payload, payload
from bench.stack import start_stack

VARIANTS = {"uncompiled": "false", "compiled": "true"}


def backend_of(model_dir: Path) -> str:
    metas = sorted(model_dir.glob("*/compiled/metadata.json"))
    if not metas:
        return "tensorflow"
    meta = json.loads(metas[-1].read_text())
    return meta.get("backend", meta["runtime"])


def thread_env(threads: int) -> dict[str, str]:
    """The stack's thread settings for both variants: SageMaker's defaults (0), or N for both."""
    if not threads:
        return {}
    return {"OMP_NUM_THREADS": str(threads), "SAGEMAKER_TFS_INTRA_OP_PARALLELISM": str(threads)}


class Direct:
    """One variant's model without the stack: its runtime's backend, in this process, unpinned."""

    def __init__(self, model_dir: Path, threads: int) -> None:
        from server.modeldir import model_spec, version_dirs
        from server.runtimes import RUNTIMES
        from server.runtimes.model_server import backend_factory
        from server.runtimes.servable import DEFAULT_SIGNATURE, RuntimeOptions

        spec = model_spec(model_dir.name, model_dir)
        if "torch" in RUNTIMES[spec.kind].packages:  # the runtime's OMP_NUM_THREADS (1 by default)
            import torch

            torch.set_num_threads(threads or 1)
        backend = backend_factory(spec.kind)(RuntimeOptions(intra_op_threads=threads, inter_op_threads=threads))
        self.servable = backend(version_dirs(model_dir)[max(spec.versions)])
        sig = self.servable.signatures[DEFAULT_SIGNATURE]
        self.inputs = {n: np.zeros([1 if d < 0 else d for d in t.shape], t.np_dtype) for n, t in sig.inputs.items()}

    def __call__(self) -> float:
        """One run, in ms, on every CPU (the client's pinning lifted meanwhile)."""
        pinned = os.sched_getaffinity(0)
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
        try:
            started = time.perf_counter()
            self.servable.run("serving_default", self.inputs)
            return (time.perf_counter() - started) * 1e3
        finally:
            os.sched_setaffinity(0, pinned)


def run(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    for name in (args.model, f"{args.model}_compiled"):
        if not (args.model_dir / name).is_dir():
            raise SystemExit(f"bench latency: {args.model_dir / name} is missing (build and compile it first)")
    if args.url and args.threads:
        raise SystemExit("bench latency: --threads sets the stack's threads; it cannot with --url")
    body = payload(args.model)
    stack = None
    url = args.url
    if url is None:  # a stack serving just the two variants (links into the model directory)
        work = Path(tempfile.mkdtemp(prefix="sagestack-latency-"))
        for name in (args.model, f"{args.model}_compiled"):
            (work / "model").mkdir(exist_ok=True)
            (work / "model" / name).symlink_to((args.model_dir / name).resolve())
        stack = start_stack(work / "model", work / "run", SAGEMAKER_TFS_DEFAULT_MODEL_NAME=args.model,
                            **thread_env(args.threads))  # fmt: skip
        url = stack.url
    # before the client is pinned: native thread pools size themselves to the CPUs they see
    direct = {name: Direct(args.model_dir / model, args.threads)
              for name, model in (("uncompiled", args.model), ("compiled", f"{args.model}_compiled"))}  # fmt: skip
    if args.loadgen_cpus:
        os.sched_setaffinity(0, {int(c) for c in args.loadgen_cpus.split(",")})
    session = requests.Session()
    try:
        with Progress() as progress:
            times, model_times, errors = measure(session, url, body, direct, args, progress)
        agreement = (
            detection_agreement(session, url, args.model) if body.headers["Content-Type"] == "image/jpeg" else None
        )
    finally:
        if stack is not None:
            stack.stop()
    report = summarize(times, model_times, errors, args) | {"agreement": agreement}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot(report, times, args.out.with_suffix(".png"))
    print(json.dumps({"speedup": report["speedup"]} | {n: v["mean_ms"] for n, v in report["variants"].items()}))
    if agreement:
        print(json.dumps({"agreement_f1": agreement["f1"], "passes": agreement["passes"]}))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def variant_headers(headers: dict[str, str], model: str, variant: str) -> dict[str, str]:
    """`headers` with the custom attributes that pick one variant of the model."""
    attrs = f"tfs-model-name={model},compiled={VARIANTS[variant]}"
    return {**headers, "X-Amzn-SageMaker-Custom-Attributes": attrs}


def detection_agreement(session: requests.Session, url: str, model: str) -> dict[str, Any]:
    """The compiled variant's served detections against the uncompiled (FP32 TorchScript) ones on the fixed
    image set (the packaged photos `sagestack compile --evaluate detections` judges on): IoU-matched precision,
    recall and F1 per image (models.yolov4.boxes.agreement) and their means."""
    from compiler.evaluation import packaged_photos
    from models.yolov4.boxes import agreement
    from models.yolov4.evaluation import AGREEMENT_BAR, IOU_MATCH

    per_image = {}
    for photo in packaged_photos():
        found = {}
        for variant in VARIANTS:
            headers = variant_headers({"Content-Type": "image/jpeg"}, model, variant)
            r = session.post(url + "/invocations", data=photo.read_bytes(), headers=headers, timeout=300)
            r.raise_for_status()
            found[variant] = r.json()
        per_image[photo.name] = agreement(found["uncompiled"], found["compiled"], iou_threshold=IOU_MATCH)
        per_image[photo.name]["detections"] = [len(found["uncompiled"]), len(found["compiled"])]
    means = {k: round(statistics.fmean(v[k] for v in per_image.values()), 4) for k in ("precision", "recall", "f1")}
    return {"iou_threshold": IOU_MATCH, "bar_f1": AGREEMENT_BAR, "passes": means["f1"] >= AGREEMENT_BAR, **means,
            "images": per_image}  # fmt: skip


def measure(session: requests.Session, url: str, body: Payload, direct: dict[str, Direct], args: argparse.Namespace,
            progress: Any):  # fmt: skip
    """Both variants request by request, each followed by its model alone: times (ms) and error counts."""
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    model_times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    errors = dict.fromkeys(VARIANTS, 0)
    task = progress.add_task("bench latency", total=args.warmup + args.iters)
    for i in range(args.warmup + args.iters):
        for name in VARIANTS:
            headers = variant_headers(body.headers, args.model, name)
            started = time.perf_counter()
            r = session.post(url + "/invocations", data=body.body, headers=headers, timeout=300)
            took = (time.perf_counter() - started) * 1e3
            alone = direct[name]()
            if r.status_code != 200:
                errors[name] += 1
            elif i >= args.warmup:
                times[name].append(took)
                model_times[name].append(alone)
        done = ", ".join(f"{n} {statistics.median(t):.0f} ms" for n, t in times.items() if t)
        progress.update(task, advance=1, description=f"bench latency: {done or 'warm-up'}")
    return times, model_times, errors


def summarize(
    times: dict[str, list[float]], model_times: dict[str, list[float]], errors: dict[str, int], args: argparse.Namespace
) -> dict[str, Any]:
    backends = {"uncompiled": backend_of(args.model_dir / args.model),
                "compiled": backend_of(args.model_dir / f"{args.model}_compiled")}  # fmt: skip
    variants = {}
    for name, values in times.items():
        ordered = sorted(values) or [float("nan")]
        variants[name] = {
            "mean_ms": round(statistics.fmean(ordered), 2),
            "p50_ms": round(percentile(ordered, 50), 2),
            "p95_ms": round(percentile(ordered, 95), 2),
            "p99_ms": round(percentile(ordered, 99), 2),
            "model_p50_ms": round(statistics.median(model_times[name] or [float("nan")]), 2),
            "backend": backends[name],
            "n": len(values),
            "errors": errors[name],
        }
    for v in variants.values():
        v["stack_added_p50_ms"] = round(v["p50_ms"] - v["model_p50_ms"], 2)
        v["stack_added_percent"] = round(100 * v["stack_added_p50_ms"] / v["model_p50_ms"], 1)
    plain, fast = variants["uncompiled"], variants["compiled"]
    return {
        "model": args.model,
        "iters": args.iters,
        "warmup": args.warmup,
        "method": "sequential requests through nginx, variants alternated request by request",
        "threads": thread_env(args.threads)
        or {"OMP_NUM_THREADS": "1", "SAGEMAKER_TFS_INTRA_OP_PARALLELISM": "0 (each runtime's own choice)"},
        "variants": variants,
        "speedup": {
            "mean": round(plain["mean_ms"] / fast["mean_ms"], 3),
            "p95": round(plain["p95_ms"] / fast["p95_ms"], 3),
            "p50": round(plain["p50_ms"] / fast["p50_ms"], 3),
            "model_p50": round(plain["model_p50_ms"] / fast["model_p50_ms"], 3),
        },
    }


def plot(report: dict[str, Any], times: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, values in times.items():
        v = report["variants"][name]
        ax.hist(values, bins=40, alpha=0.6, label=f"{name} ({v['backend']}): mean {v['mean_ms']:.0f} ms, "
                f"p95 {v['p95_ms']:.0f} ms")  # fmt: skip
    ax.set_xlabel("latency (ms), whole stack, sequential")
    ax.set_ylabel("requests")
    s = report["speedup"]
    threads = ", ".join(f"{k}={v}" for k, v in report["threads"].items())
    ax.set_title(f"{report['model']}: compiled vs uncompiled, speedup mean {s['mean']}x, p95 {s['p95']}x\n{threads}",
                 fontsize=9)  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
