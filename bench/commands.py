"""`sagestack bench ...` and `sagestack tune`: benchmarks and the env-var tuner; results go to build/bench/."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from server.settings import WORKER_CLASSES


def cmd_bench(args: argparse.Namespace) -> int:
    """Each benchmark is `bench.<name>.run(args)`; locust must be imported first, for gevent to patch the process."""
    if getattr(args, "tool", None) == "locust":
        import locust  # noqa: F401

    return importlib.import_module(f"bench.{args.bench}").run(args)


def _worker_classes(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in WORKER_CLASSES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown worker class {unknown or value!r}; choose from {WORKER_CLASSES}")
    return names


def _extension_args(p: argparse.ArgumentParser, runs: int) -> None:
    """What the music benchmarks extend: the weights, the melody, its extension and seed, how many runs."""
    p.add_argument("--weights", type=Path, default=Path("models/music_transformer/weights/music_transformer.pt"))
    p.add_argument("--runs", type=int, default=runs)
    p.add_argument("--melody", default="twinkle_twinkle")
    p.add_argument("--extension-seconds", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("tune", help="search the SageMaker env vars for the best TPS under a p95 SLO")
    t.add_argument("--model", required=True)
    t.add_argument("--slo-ms", type=float, required=True, help="p95 latency objective")
    t.add_argument("--users", type=int, default=16, help="concurrent users during each measurement")
    t.add_argument("--seconds", type=float, default=4.0, help="first-rung measurement length (doubles per rung)")
    t.add_argument("--configs", type=int, default=12, help="configurations sampled into the first rung")
    t.add_argument("--finalists", type=int, default=1, help="stop halving at this many")
    t.add_argument("--final-rounds", type=int, default=3, help="interleaved rounds of the last rung (median wins)")
    t.add_argument("--space", help='JSON {"VAR": [values, ...]} replacing the default search space')
    t.add_argument("--model-dir", type=Path, default=Path("build/model"))
    t.add_argument("--out-dir", type=Path, default=Path("build/tune"))
    t.add_argument("--tool", choices=("locust", "wrk"), default="locust")
    t.add_argument("--loadgen-cpus", default="1")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(fn=cmd_bench, bench="tune")
    bench = sub.add_parser("bench", help="benchmarks; results go to build/bench/").add_subparsers(
        dest="bench", required=True
    )
    o = bench.add_parser("overhead", help="in-process model vs runtime direct vs the full stack")
    o.add_argument("--out", type=Path, default=Path("build/bench/overhead.json"))
    o.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    o.add_argument("--connections", type=int, default=32, help="concurrent connections (wrk -c)")
    o.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each variant")
    o.add_argument("--workers", type=int, default=1, help="gunicorn workers (1: one process batches all requests)")
    o.add_argument("--kserve-workers", type=int, default=2, help="KServe worker processes (2: its best on 2 cores)")
    o.add_argument("--instances", type=int, default=1, help="runtime instances")
    o.add_argument(
        "--worker-class",
        default="gevent",
        type=_worker_classes,
        help=f"gunicorn worker class, or several (comma-separated, one stack each, interleaved): {WORKER_CLASSES}",
    )
    o.add_argument("--loadgen-cpus", default="1", help="CPUs for the load generators (taskset); '' for any")
    o.add_argument("--no-kserve", action="store_true", help="skip the KServe peer")
    o.set_defaults(fn=cmd_bench)
    pe = bench.add_parser("peers", help="ours (default and tuned) against KServe and MLServer on one model")
    pe.add_argument("--seconds", type=float, default=10.0)
    pe.add_argument("--out", type=Path, default=None,
                    help="default build/bench/peers.json, or peers_v2.json with --protocol v2")  # fmt: skip
    pe.add_argument("--protocol", choices=("sagemaker", "v2"), default="sagemaker",
                    help="sagemaker: each server's native request; v2: one OIP v2 request to all")  # fmt: skip
    pe.add_argument("--rounds", type=int, default=3)
    pe.add_argument("--connections", type=int, default=32)
    pe.add_argument("--peer-workers", type=int, default=2, help="KServe/MLServer worker processes")
    pe.add_argument("--tuned-env", type=Path, default=Path("build/tune/half_plus_three.env"))
    pe.add_argument("--skip", nargs="*", default=[], choices=("kserve", "mlserver"))
    pe.add_argument("--loadgen-cpus", default="1")
    pe.set_defaults(fn=cmd_bench)
    bc = bench.add_parser("compile", help="eager, TorchScript, ONNX Runtime, TVM, OpenVINO on standard CNNs")
    bc.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet50", "resnet152", "unet", "yolov4_tiny"])
    bc.add_argument("--target", default="this_machine")
    bc.add_argument("--runs", type=int, default=5)
    bc.add_argument("--tune-trials", type=int, default=0, help="MetaSchedule trials for the TVM-tuned column")
    bc.add_argument("--trials-per-task", type=int, default=16)
    bc.add_argument("--out", type=Path, default=Path("build/bench/compile.json"))
    bc.set_defaults(fn=cmd_bench)
    la = bench.add_parser("latency", help="compiled vs uncompiled variants of one endpoint, sequential, interleaved")
    la.add_argument("--model", default="yolov4")
    la.add_argument("--iters", type=int, default=1000)
    la.add_argument("--warmup", type=int, default=100)
    la.add_argument("--model-dir", type=Path, default=Path("build/model"), help="holds <model> and <model>_compiled")
    la.add_argument("--url", help="use this running stack instead of starting one")
    la.add_argument("--threads", type=int, default=0, help="the same N threads for both (0: SageMaker's defaults)")
    la.add_argument("--loadgen-cpus", default="1", help="CPUs for the client; '' for any")
    la.add_argument("--out", type=Path, default=Path("build/bench/latency.json"))
    la.set_defaults(fn=cmd_bench)
    mu = bench.add_parser("music", help="30 s melody extension: KV cache vs eager without a cache")
    _extension_args(mu, runs=5)
    mu.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    mu.add_argument("--out", type=Path, default=Path("build/bench/music.json"))
    mu.set_defaults(fn=cmd_bench)
    ab = bench.add_parser("async", help="a burst of async requests against the same burst sent synchronously")
    ab.add_argument("--model", default="credit_risk")
    ab.add_argument("--model-dir", type=Path, default=Path("build/model"))
    ab.add_argument("--requests", type=int, default=200)
    ab.add_argument("--rounds", type=int, default=3)
    ab.add_argument("--concurrency", type=int, default=4, help="MaxConcurrentInvocationsPerInstance and client threads")
    ab.add_argument("--out", type=Path, default=Path("build/bench/async.json"))
    ab.set_defaults(fn=cmd_bench, bench="async_burst")
    st = bench.add_parser("streaming", help="music through the stack: first streamed note vs the whole extension")
    _extension_args(st, runs=10)
    st.add_argument("--out", type=Path, default=Path("build/bench/streaming.json"))
    st.set_defaults(fn=cmd_bench)
    ex = bench.add_parser("explain", help="credit_risk: an explained record (kernel SHAP) against a plain prediction")
    ex.add_argument("--model-dir", type=Path, default=Path("build/model"), help="where credit_risk is (else built)")
    ex.add_argument("--samples", type=lambda v: [int(x) for x in v.split(",")], default=[512, 2088],
                    help="NumberOfSamples values (2088: Clarify's default for 20 features)")  # fmt: skip
    ex.add_argument("--runs", type=int, default=30)
    ex.add_argument("--record", type=int, default=1, help="which German credit application to explain")
    ex.add_argument("--out", type=Path, default=Path("build/bench/explain.json"))
    ex.set_defaults(fn=cmd_bench)
    rv = bench.add_parser("revisions", help="bench overhead on an older revision and this tree, interleaved")
    rv.add_argument("--base", required=True, help="the revision to compare with (a commit, tag or branch)")
    rv.add_argument("--rounds", type=int, default=3, help="overhead rounds per tree, alternating")
    rv.add_argument("--seconds", type=float, default=8.0, help="length of each measurement")
    rv.add_argument("--connections", type=int, default=32)
    rv.add_argument("--loadgen-cpus", default="1", help="CPUs for the load generators; '' for any")
    rv.add_argument("--out", type=Path, default=Path("build/bench/revisions.json"))
    rv.set_defaults(fn=cmd_bench)
    so = bench.add_parser("soak", help="mixed load over every model for N minutes; memory of every process")
    so.add_argument("--minutes", type=float, default=30.0)
    so.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    so.add_argument("--model-dir", type=Path, default=Path("build/model"))
    so.add_argument("--out", type=Path, default=Path("build/bench/soak.json"))
    so.set_defaults(fn=cmd_bench)
    me = bench.add_parser("memory", help="RSS and PSS per process of the default stack, per runtime sharing mode")
    me.add_argument("--model-dir", type=Path, default=Path("build/model"))
    me.add_argument("--out", type=Path, default=Path("build/bench/memory.json"))
    me.set_defaults(fn=cmd_bench)
    ld = bench.add_parser("load", help="step users against the running stack; TPS, latency, CPU, memory, knee")
    ld.add_argument("--model", required=True)
    ld.add_argument("--users", default="1,2,4,8,16,32", help="comma-separated user counts, one step each")
    ld.add_argument("--step-seconds", type=float, default=10.0)
    ld.add_argument("--slo-ms", type=float, help="p95 latency objective for the knee")
    ld.add_argument("--url", default="http://127.0.0.1:8080")
    ld.add_argument("--tool", choices=("locust", "wrk"), default="locust")
    ld.add_argument("--loadgen-cpus", default="1", help="CPUs for the load generator; '' for any")
    ld.add_argument("--out", type=Path, help="default build/bench/load_<model>.json")
    ld.set_defaults(fn=cmd_bench)
