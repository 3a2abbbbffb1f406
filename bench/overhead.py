"""`sagestack bench overhead`: what the serving stack costs on top of the model.

Side by side, in one run, on the same trivial model (half_plus_three), interleaved round by round:
- the model called in-process (TF SavedModel signature, one thread);
- our runtime server called directly over gRPC (sequential, and with N calls in flight);
- the full stack through nginx (sequential, and wrk with N connections);
- KServe's Python ModelServer on the same model, from its own venv (wrk with N connections).
Reports medians over rounds, the stack/KServe throughput ratio and the stack's added p50 latency
over the runtime called directly, as JSON and a PNG.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import loadgen, peers
from bench.stack import demo_model_dir, free_port, start_stack

BODY = json.dumps({"instances": [1.0, 2.0, 5.0]}).encode()
HEADERS = {"Content-Type": "application/json"}
EXPECTED = [3.5, 4.0, 5.5]


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _inprocess(model_dir: Path):
    import numpy as np
    import tensorflow as tf

    fn = tf.saved_model.load(str(model_dir / "half_plus_three" / "1")).signatures["serving_default"]
    x = np.array([1.0, 2.0, 5.0], dtype=np.float32)

    def call() -> None:
        fn(x=tf.constant(x))["y"].numpy()

    return call


def _grpc_client(port: int):
    import grpc
    import numpy as np

    from server.protos import predict_pb2, prediction_service_pb2_grpc
    from server.tensors import to_proto

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_three"
    request.inputs["x"].CopyFrom(to_proto(np.array([1.0, 2.0, 5.0], dtype=np.float32)))
    return (lambda: stub.Predict(request, timeout=10)), (lambda: stub.Predict.future(request, timeout=10))


def _http_client(url: str):
    host_port = url.removeprefix("http://")
    conn = http.client.HTTPConnection(host_port, timeout=10)

    def call() -> None:
        conn.request("POST", "/invocations", body=BODY, headers=HEADERS)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"stack answered {response.status}")

    return call


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / "overhead"
    models = demo_model_dir(work)
    classes: list[str] = args.worker_class
    stacks = {}
    kserve = None
    try:
        for worker_class in classes:
            log(f"starting the stack ({args.workers} {worker_class} workers, {args.instances} runtime instances)")
            stacks[worker_class] = start_stack(
                models,
                Path(tempfile.mkdtemp(prefix="sagestack-bench-")),
                SAGEMAKER_GUNICORN_WORKERS=str(args.workers),
                SAGEMAKER_GUNICORN_WORKER_CLASS=worker_class,
                SAGEMAKER_TFS_INSTANCE_COUNT=str(args.instances),
                SAGESTACK_NGINX_WORKERS="1",
                SAGEMAKER_GUNICORN_LOGLEVEL="warning",
            )
        first = stacks[classes[0]]
        if not args.no_kserve:
            log("starting KServe")
            kserve = peers.start_kserve(free_port(), args.kserve_workers, models / "half_plus_three" / "1")
        grpc_port = first.routes()["models"]["half_plus_three"]["instances"][0]["grpc_port"]
        # The Python load generators run here; keep them off the servers' CPU where we can.
        if args.loadgen_cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {int(c) for c in args.loadgen_cpus.split(",")})
        grpc_call, grpc_future = _grpc_client(grpc_port)
        inprocess_call = _inprocess(models)
        variants = {
            "in_process_c1": lambda: loadgen.sequential(inprocess_call, args.seconds),
            "runtime_grpc_c1": lambda: loadgen.sequential(grpc_call, args.seconds),
            f"runtime_grpc_c{args.connections}": lambda: loadgen.concurrent_futures(
                grpc_future, args.seconds, args.connections
            ),
        }
        for worker_class, stack in stacks.items():
            suffix = _suffix(worker_class, classes)
            variants[f"stack_http_c1{suffix}"] = lambda url=stack.url: loadgen.sequential(
                _http_client(url), args.seconds
            )
            variants[f"stack_wrk_c{args.connections}{suffix}"] = lambda url=stack.url: loadgen.wrk(
                url + "/invocations", BODY, HEADERS, args.seconds, args.connections, args.loadgen_cpus
            )
        if kserve is not None:
            variants[f"kserve_wrk_c{args.connections}"] = lambda: loadgen.wrk(
                kserve.url, BODY, HEADERS, args.seconds, args.connections, args.loadgen_cpus
            )
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for r in range(args.rounds):
            for name, measure in variants.items():
                result = measure()
                runs[name].append(result)
                rps, p50 = result["rps"], result["p50_ms"]
                log(f"round {r + 1}/{args.rounds} {name}: {rps:.0f} req/s, p50 {p50:.3f} ms")
    finally:
        for stack in stacks.values():
            stack.stop()
        if kserve is not None:
            kserve.stop()

    report = summarize(runs, args)
    if kserve is not None:
        report["versions"] = {"kserve": kserve.version}
    out.write_text(json.dumps(report, indent=2))
    plot(report, out.with_suffix(".png"))
    log(f"wrote {out} and {out.with_suffix('.png')}")
    print(json.dumps(report["summary"], indent=2))
    return 0


def summarize(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    med = {
        name: {key: statistics.median(r[key] for r in results) for key in ("rps", "p50_ms", "p99_ms")}
        for name, results in runs.items()
    }
    c = args.connections
    classes: list[str] = args.worker_class
    per_class = {
        worker_class: {
            "stack_rps": med[f"stack_wrk_c{c}{_suffix(worker_class, classes)}"]["rps"],
            "stack_added_p50_ms": med[f"stack_http_c1{_suffix(worker_class, classes)}"]["p50_ms"]
            - med["runtime_grpc_c1"]["p50_ms"],
        }
        for worker_class in classes
    }
    best = max(classes, key=lambda name: per_class[name]["stack_rps"])
    summary: dict[str, Any] = {
        **per_class[best],
        "stack_worker_class": best,
        "runtime_direct_rps": med[f"runtime_grpc_c{c}"]["rps"],
    }
    if len(classes) > 1:
        summary["by_worker_class"] = per_class
    if f"kserve_wrk_c{c}" in med:
        summary["kserve_rps"] = med[f"kserve_wrk_c{c}"]["rps"]
        summary["stack_vs_kserve_rps_ratio"] = summary["stack_rps"] / summary["kserve_rps"]
    return {
        "model": "half_plus_three",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": {
            "gunicorn_workers": args.workers,
            "gunicorn_worker_classes": classes,
            "runtime_instances": args.instances,
            "kserve_workers": args.kserve_workers,
            "connections": c,
            "seconds_per_measurement": args.seconds,
            "rounds": args.rounds,
            "placement": f"load generators on CPU(s) {args.loadgen_cpus or 'any'}; servers unpinned",
        },
        "median": med,
        "runs": runs,
        "summary": summary,
    }


def _suffix(worker_class: str, classes: list[str]) -> str:
    """Variant names carry the worker class only when several are compared."""
    return f"_{worker_class}" if len(classes) > 1 else ""


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = report["median"]
    names = list(med)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.barh(names, [med[n]["rps"] for n in names], color="tab:blue")
    ax1.set_xlabel("requests/s (median over rounds)")
    ax1.set_title("Throughput")
    y = range(len(names))
    ax2.barh([i - 0.2 for i in y], [med[n]["p50_ms"] for n in names], height=0.4, label="p50")
    ax2.barh([i + 0.2 for i in y], [med[n]["p99_ms"] for n in names], height=0.4, label="p99")
    ax2.set_yticks(list(y), names)
    ax2.set_xscale("log")
    ax2.set_xlabel("latency, ms (log)")
    ax2.set_title("Latency")
    ax2.legend()
    s = report["summary"]
    title = (
        f"half_plus_three: stack ({s['stack_worker_class']}) {s['stack_rps']:.0f} req/s, "
        f"+{s['stack_added_p50_ms']:.2f} ms p50 vs runtime"
    )
    if "stack_vs_kserve_rps_ratio" in s:
        title += f", {s['stack_vs_kserve_rps_ratio']:.2f}x KServe"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
