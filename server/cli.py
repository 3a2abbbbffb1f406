"""`sagestack`: one command for every user-facing job; each subcommand imports only what it needs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from server.settings import WORKER_CLASSES, Settings, SettingsError

BUILDERS = {
    "half_plus_three": "models.half_plus_three.build",
    "credit_risk": "models.credit_risk.build",
    "anomaly": "models.anomaly.build",
    "yolov4": "models.yolov4.build",
    "music_transformer": "models.music_transformer.build",
}


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise SystemExit(f"sagestack: {exc}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from server.supervisor import serve

    return serve(_settings())


def cmd_fetch_model(args: argparse.Namespace) -> int:
    from server import model_archive

    settings = _settings()
    url = args.url or settings.model_url
    if not url:
        raise SystemExit("sagestack fetch-model: give a URL or set SAGESTACK_MODEL_URL")
    try:
        names = model_archive.fetch(url, args.dest or settings.model_dir)
    except (model_archive.ArchiveError, OSError) as exc:
        raise SystemExit(f"sagestack fetch-model: {exc}") from None
    print(f"fetch-model: {url} -> {args.dest or settings.model_dir}: {', '.join(names)}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(_settings().as_env(), indent=2))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    import importlib

    out = args.out or _settings().model_dir / args.model
    module = importlib.import_module(BUILDERS[args.model])
    module.main(["--out", str(out), *args.extra])
    return 0


def cmd_flow(args: argparse.Namespace) -> int:
    from models.credit_risk import flow

    try:
        if args.action == "preview":
            import pandas as pd

            with pd.option_context("display.max_columns", 12, "display.width", 160):
                print(flow.preview(args.flow, args.steps, args.rows))
        elif args.action == "run":
            frame = flow.run(args.flow, args.out)
            print(f"wrote {args.out}: {frame.shape[0]} rows x {frame.shape[1]} columns")
        else:
            print(f"wrote {flow.export(args.flow, args.out)}")
    except flow.FlowError as exc:
        raise SystemExit(f"sagestack flow: {exc}") from None
    return 0


def cmd_anomaly(args: argparse.Namespace) -> int:
    if args.action == "make-dataset":
        from models.anomaly.generate import make_dataset

        manifest = make_dataset(args.out, args.normal, args.anomaly, args.seed, args.test_normal, args.test_anomaly)
        print(f"wrote {len(manifest)} images to {args.out} (kinds in {args.out / 'manifest.json'})")
        return 0
    from models.anomaly.train import main as train_main

    train_main([str(args.dataset), *args.extra])
    return 0


def cmd_music(args: argparse.Namespace) -> int:
    from models.music_transformer import commands

    return commands.run(args)


def cmd_bench_load(args: argparse.Namespace) -> int:
    if args.tool == "locust":
        import locust  # noqa: F401 - gevent must patch the process before anything else loads

    from bench.load import main as load_main

    return load_main(args)


def cmd_tune(args: argparse.Namespace) -> int:
    if args.tool == "locust":
        import locust  # noqa: F401 - gevent must patch the process before anything else loads

    from bench.tune import main as tune_main

    return tune_main(args)


def cmd_bench_peers(args: argparse.Namespace) -> int:
    from bench.peers import run

    return run(args)


def cmd_push(args: argparse.Namespace) -> int:
    import boto3

    from containers.sagemaker_sync import PushRequest, SageMakerSync, SyncError, read_env_file

    try:
        autoscale = tuple(int(x) for x in args.autoscale.split(":")) if args.autoscale else None
        req = PushRequest(
            model=args.model,
            endpoint_name=args.endpoint_name,
            instance_type=args.instance_type,
            model_dir=args.model_dir or _settings().model_dir,
            image=args.image,
            instance_count=args.instance_count,
            env=read_env_file(args.env_file) if args.env_file else {},
            role_arn=args.role_arn,
            push_image=not args.no_image_push,
            autoscale=autoscale,  # type: ignore[arg-type]
            target_invocations=args.target_invocations,
            dry_run=args.dry_run,
        )
        if args.dry_run:
            print("plan (--dry-run: nothing is changed):")
        SageMakerSync(boto3.Session(profile_name=args.profile)).push(req)
    except SyncError as exc:
        raise SystemExit(f"sagestack push: {exc}") from None
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    from containers.sagemaker_sync import invoke

    if args.file:
        body, ctype = args.file.read_bytes(), args.content_type
    elif args.body:
        body, ctype = args.body.encode(), args.content_type
    else:
        from bench.payloads import payload

        sample = payload(args.model)
        body, ctype = sample.body, sample.headers["Content-Type"]
    url = args.url if args.local else None
    data, content_type = invoke(args.endpoint_name, body, ctype, args.accept, url)
    sys.stdout.write(data.decode(errors="replace") + ("" if data.endswith(b"\n") else "\n"))
    print(f"({content_type})", file=sys.stderr)
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from compiler.job import Tuning, compile_model

    try:
        shape = json.loads(args.input_shape)
        backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
        tuning = Tuning(args.tune_trials, args.trials_per_task)
        compile_model(args.model_tar, args.framework, shape, args.target, args.out, args.runs, backends, tuning)
    except (ValueError, RuntimeError) as exc:
        raise SystemExit(f"sagestack compile: {exc}") from None
    return 0


def cmd_bench_compile(args: argparse.Namespace) -> int:
    from bench.compile import run

    return run(args)


def cmd_bench_latency(args: argparse.Namespace) -> int:
    from bench.latency import run

    return run(args)


def cmd_bench_music(args: argparse.Namespace) -> int:
    from bench.music import run

    return run(args)


def cmd_bench_overhead(args: argparse.Namespace) -> int:
    from bench.overhead import run

    return run(args)


def _worker_classes(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in WORKER_CLASSES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown worker class {unknown or value!r}; choose from {WORKER_CLASSES}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sagestack", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("serve", help="start runtimes, gunicorn and nginx (the container entry point)").set_defaults(
        fn=cmd_serve
    )
    sub.add_parser("config", help="print the effective settings").set_defaults(fn=cmd_config)
    fm = sub.add_parser("fetch-model", help="put a model.tar.gz (s3://, file:// or a path) into the model directory")
    fm.add_argument("url", nargs="?", help="default: $SAGESTACK_MODEL_URL")
    fm.add_argument("--dest", type=Path, help="default: $SAGESTACK_MODEL_DIR")
    fm.set_defaults(fn=cmd_fetch_model)

    b = sub.add_parser("build", help="build a model into the model directory")
    b.add_argument("model", choices=sorted(BUILDERS))
    b.add_argument("--out", type=Path, help="model base directory (default: $SAGESTACK_MODEL_DIR/<model>)")
    b.add_argument("extra", nargs=argparse.REMAINDER, help="options passed to the model's builder")
    b.set_defaults(fn=cmd_build)

    f = sub.add_parser("flow", help="Data-Wrangler-style prep flows").add_subparsers(dest="action", required=True)
    fp = f.add_parser("preview", help="show the table after the first N steps")
    fp.add_argument("flow", type=Path)
    fp.add_argument("--steps", type=int, required=True)
    fp.add_argument("--rows", type=int, default=10)
    fr = f.add_parser("run", help="fit the flow and run it on the whole data set")
    fr.add_argument("flow", type=Path)
    fr.add_argument("--out", type=Path, required=True, help="x.csv or x.parquet")
    fe = f.add_parser("export", help="write a standalone prep.py that reproduces the fitted flow")
    fe.add_argument("flow", type=Path)
    fe.add_argument("--out", type=Path, required=True)
    for parser in (fp, fr, fe):
        parser.set_defaults(fn=cmd_flow)

    a = sub.add_parser("anomaly", help="Lookout-style anomaly detection").add_subparsers(dest="action", required=True)
    am = a.add_parser("make-dataset", help="generate PCB images: OUT/normal, OUT/anomaly (+ OUT/test/...)")
    am.add_argument("out", type=Path)
    am.add_argument("--normal", type=int, default=60)
    am.add_argument("--anomaly", type=int, default=40)
    am.add_argument("--test-normal", type=int, default=0)
    am.add_argument("--test-anomaly", type=int, default=0)
    am.add_argument("--seed", type=int, default=7)
    at = a.add_parser("train", help="train on DATASET (normal/, anomaly/, optional test/) and export the model")
    at.add_argument("dataset", type=Path)
    at.add_argument("extra", nargs=argparse.REMAINDER, help="--out, --reports, --roi X Y W H, --version, --fast")
    for parser in (am, at):
        parser.set_defaults(fn=cmd_anomaly)

    from models.music_transformer.commands import add_parsers as add_music_parsers

    add_music_parsers(sub.add_parser("music", help="DeepComposer-style melody extension"), cmd_music)

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
    t.set_defaults(fn=cmd_tune)

    pu = sub.add_parser("push", help="push the image and a model to a SageMaker endpoint (ECR, S3, SageMaker)")
    pu.add_argument("--model", required=True)
    pu.add_argument("--endpoint-name", required=True)
    pu.add_argument("--instance-type", required=True, help="e.g. ml.c5.xlarge")
    pu.add_argument("--instance-count", type=int, default=1)
    pu.add_argument("--env-file", type=Path, help="KEY=VALUE lines, e.g. from sagestack tune")
    pu.add_argument("--image", default="sagestack:latest", help="the local image to push")
    pu.add_argument("--no-image-push", action="store_true", help="the image is already in ECR under its tag")
    pu.add_argument("--model-dir", type=Path, help="default: $SAGESTACK_MODEL_DIR")
    pu.add_argument("--role-arn", help="SageMaker execution role (default: <account>/SageMakerExecutionRole)")
    pu.add_argument("--autoscale", metavar="MIN:MAX", help="register target-tracking autoscaling")
    pu.add_argument("--target-invocations", type=int, default=100, help="invocations per instance per minute")
    pu.add_argument("--profile", help="AWS profile (default: boto3's usual lookup)")
    pu.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    pu.set_defaults(fn=cmd_push)
    iv = sub.add_parser("invoke", help="call an endpoint through boto3's sagemaker-runtime (or the local stack)")
    iv.add_argument("--endpoint-name", required=True)
    iv.add_argument("--local", action="store_true", help="call the local stack (--url) instead of SageMaker")
    iv.add_argument("--url", default="http://127.0.0.1:8080")
    iv.add_argument("--model", default="half_plus_three", help="send this model's sample payload")
    iv.add_argument("--body", help="send this text instead")
    iv.add_argument("--file", type=Path, help="send this file instead")
    iv.add_argument("--content-type", default="application/json")
    iv.add_argument("--accept", default="application/json")
    iv.set_defaults(fn=cmd_invoke)

    c = sub.add_parser("compile", help="Neo-style compilation of a traced model.tar.gz")
    c.add_argument("model_tar", type=Path)
    c.add_argument("--framework", default="pytorch")
    c.add_argument("--input-shape", required=True, help="e.g. '{\"input0\": [1, 3, 416, 416]}'")
    c.add_argument("--target", default="this_machine", help="ml_c5, ml_m5, ml_c6i, ... or this_machine")
    c.add_argument("--out", type=Path, required=True, help="model base directory for the compiled model")
    c.add_argument("--runs", type=int, default=10, help="timed runs per backend")
    c.add_argument("--backends", default="tvm,onnxruntime,openvino", help="candidates; the fastest passing wins")
    c.add_argument("--tune-trials", type=int, default=0, help="MetaSchedule trials to add to the target's database")
    c.add_argument("--trials-per-task", type=int, default=64, help="MetaSchedule trials per task (this run)")
    c.set_defaults(fn=cmd_compile)

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
    o.set_defaults(fn=cmd_bench_overhead)
    pe = bench.add_parser("peers", help="ours (default and tuned) against KServe and MLServer on one model")
    pe.add_argument("--seconds", type=float, default=10.0)
    pe.add_argument("--out", type=Path, default=Path("build/bench/peers.json"))
    pe.add_argument("--rounds", type=int, default=3)
    pe.add_argument("--connections", type=int, default=32)
    pe.add_argument("--peer-workers", type=int, default=2, help="KServe/MLServer worker processes")
    pe.add_argument("--tuned-env", type=Path, default=Path("build/tune/half_plus_three.env"))
    pe.add_argument("--skip", nargs="*", default=[], choices=("kserve", "mlserver"))
    pe.add_argument("--loadgen-cpus", default="1")
    pe.set_defaults(fn=cmd_bench_peers)
    bc = bench.add_parser("compile", help="eager, TorchScript, ONNX Runtime, TVM, OpenVINO on standard CNNs")
    bc.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet50", "resnet152", "unet"])
    bc.add_argument("--target", default="this_machine")
    bc.add_argument("--runs", type=int, default=5)
    bc.add_argument("--tune-trials", type=int, default=0, help="MetaSchedule trials for the TVM-tuned column")
    bc.add_argument("--trials-per-task", type=int, default=16)
    bc.add_argument("--out", type=Path, default=Path("build/bench/compile.json"))
    bc.set_defaults(fn=cmd_bench_compile)
    la = bench.add_parser("latency", help="compiled vs uncompiled variants of one endpoint, sequential, interleaved")
    la.add_argument("--model", default="yolov4")
    la.add_argument("--iters", type=int, default=1000)
    la.add_argument("--warmup", type=int, default=100)
    la.add_argument("--model-dir", type=Path, default=Path("build/model"), help="holds <model> and <model>_compiled")
    la.add_argument("--url", help="use this running stack instead of starting one")
    la.add_argument("--loadgen-cpus", default="1", help="CPUs for the client; '' for any")
    la.add_argument("--out", type=Path, default=Path("build/bench/latency.json"))
    la.set_defaults(fn=cmd_bench_latency)
    mu = bench.add_parser("music", help="30 s melody extension: KV cache vs eager without a cache")
    mu.add_argument("--weights", type=Path, default=Path("models/music_transformer/weights/music_transformer.pt"))
    mu.add_argument("--runs", type=int, default=5)
    mu.add_argument("--melody", default="twinkle_twinkle")
    mu.add_argument("--extension-seconds", type=float, default=30.0)
    mu.add_argument("--seed", type=int, default=0)
    mu.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    mu.add_argument("--out", type=Path, default=Path("build/bench/music.json"))
    mu.set_defaults(fn=cmd_bench_music)
    ld = bench.add_parser("load", help="step users against the running stack; TPS, latency, CPU, memory, knee")
    ld.add_argument("--model", required=True)
    ld.add_argument("--users", default="1,2,4,8,16,32", help="comma-separated user counts, one step each")
    ld.add_argument("--step-seconds", type=float, default=10.0)
    ld.add_argument("--slo-ms", type=float, help="p95 latency objective for the knee")
    ld.add_argument("--url", default="http://127.0.0.1:8080")
    ld.add_argument("--tool", choices=("locust", "wrk"), default="locust")
    ld.add_argument("--loadgen-cpus", default="1", help="CPUs for the load generator; '' for any")
    ld.add_argument("--out", type=Path, help="default build/bench/load_<model>.json")
    ld.set_defaults(fn=cmd_bench_load)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.fn(args))


def serve_main() -> None:
    """The plain `serve` script, so `docker run image serve` works as SageMaker calls it."""
    extra = [a for a in sys.argv[1:] if a != "serve"]
    if extra:
        raise SystemExit(f"serve: unexpected arguments {extra} (SageMaker runs the image as `serve`)")
    main(["serve"])


if __name__ == "__main__":
    main()
