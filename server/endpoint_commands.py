"""`sagestack variants`, `sagestack shadow report` and `sagestack capture read`: what SAGESTACK_ENDPOINT_CONFIG
turned on, seen and steered from the command line.

`variants` speaks to the running stack's control socket (in its run directory, so `kubectl exec` into a pod does
the same), or with `--endpoint-name` to SageMaker's UpdateEndpointWeightsAndCapacities.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from server import control


def _weights(pairs: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise SystemExit(f"sagestack variants set-weights: {pair!r} is not VARIANT=WEIGHT (e.g. compiled=0.1)")
    return out


def _control(run_dir: Path | None, method: str, path: str, body: dict | None = None) -> dict:
    from server.cli import settings_or_exit

    socket = (run_dir or settings_or_exit().run_dir) / "control.sock"
    try:
        status, reply = control.request(socket, method, path, body, timeout=30)
    except OSError as exc:
        raise SystemExit(f"sagestack variants: no stack answers on {socket} ({exc}); is `sagestack serve` running "
                         "with this SAGESTACK_RUN_DIR?") from None  # fmt: skip
    if status != 200:
        raise SystemExit(f"sagestack variants: {reply.get('error', status)}")
    return reply


def _print_endpoints(reply: dict) -> None:
    for name, endpoint in sorted(reply["endpoints"].items()):
        default = " (default)" if name == reply.get("default") else ""
        print(f"endpoint {name}{default}")
        total = sum(v["weight"] for v in endpoint["variants"]) or 1.0
        for v in endpoint["variants"]:
            share = 100 * v["weight"] / total
            print(f"  {v['name']:<24} model {v['model']:<24} weight {v['weight']:<8g} {share:5.1f}%")
        if endpoint.get("shadow"):
            s = endpoint["shadow"]
            print(f"  {s['name']:<24} model {s['model']:<24} shadow {endpoint['shadow_percentage']:g}% of requests")


def cmd_variants_show(args: argparse.Namespace) -> int:
    _print_endpoints(_control(args.run_dir, "GET", "/variants"))
    return 0


def cmd_variants_set_weights(args: argparse.Namespace) -> int:
    weights = _weights(args.weights)
    if args.endpoint_name:
        import boto3

        sm = boto3.Session(profile_name=args.profile).client("sagemaker")
        sm.update_endpoint_weights_and_capacities(
            EndpointName=args.endpoint_name,
            DesiredWeightsAndCapacities=[{"VariantName": k, "DesiredWeight": v} for k, v in weights.items()],
        )
        print(f"SageMaker endpoint {args.endpoint_name}: UpdateEndpointWeightsAndCapacities "
              f"{', '.join(f'{k}={v:g}' for k, v in weights.items())}")  # fmt: skip
        return 0
    _print_endpoints(_control(args.run_dir, "POST", "/variants/weights", {"endpoint": args.endpoint,
                                                                          "weights": weights}))  # fmt: skip
    return 0


def cmd_capture_read(args: argparse.Namespace) -> int:
    from server.data_capture import dataset, read_records
    from server.storage import StorageError

    try:
        kind, items = dataset(read_records(args.where), args.what)
    except (StorageError, ValueError, KeyError) as exc:
        raise SystemExit(f"sagestack capture read: {exc}") from None
    if kind == "BASE64":  # images and the like: one file each
        if args.out is None:
            raise SystemExit("sagestack capture read: the captured payloads are binary; give --out DIR")
        args.out.mkdir(parents=True, exist_ok=True)
        for n, item in enumerate(items):
            (args.out / f"{args.what}-{n:06d}.bin").write_bytes(item)
        print(f"capture read: {len(items)} {args.what}s -> {args.out}/")
        return 0
    text = b"".join(item + b"\n" for item in items)
    if args.out is None:
        sys.stdout.buffer.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(text)
        print(f"capture read: {len(items)} {kind} {args.what} rows -> {args.out}")
    return 0


def cmd_shadow_report(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from server import shadow_report
    from server.cli import settings_or_exit

    try:
        rows = shadow_report.summarize(shadow_report.scrape(args.url, settings_or_exit().auth_token))
    except OSError as exc:
        raise SystemExit(f"sagestack shadow report: no stack answers at {args.url} ({exc})") from None
    if not rows:
        raise SystemExit("sagestack shadow report: no shadow copies yet (is ShadowProductionVariants configured?)")
    table = Table(title="production against its shadow, on the same requests")
    columns = ["endpoint", "variant", "ok", "error", "dropped", "production_p50_ms", "shadow_p50_ms",
               "production_p95_ms", "shadow_p95_ms", "agreement", "fully_agreed"]  # fmt: skip
    for column in columns:
        table.add_column(column.replace("_", " "), justify="left" if column in ("endpoint", "variant") else "right")
    for row in rows:
        table.add_row(*("-" if row.get(c) is None else str(row.get(c, 0)) for c in columns))
    Console(width=None if sys.stdout.isatty() else 160).print(table)  # a pipe keeps the whole table
    shadow_report.write(rows, args.out, args.out.with_suffix(".json"))
    print(f"shadow report: {args.out} and {args.out.with_suffix('.json')}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    va = sub.add_parser("variants", help="an endpoint's production variants: show them, set their weights")
    vs = va.add_subparsers(dest="variants_command", required=True)
    show = vs.add_parser("show", help="the running stack's endpoints, variants and weights")
    show.add_argument("--run-dir", type=Path, help="the stack's run directory (default: $SAGESTACK_RUN_DIR)")
    show.set_defaults(fn=cmd_variants_show)
    sw = vs.add_parser("set-weights", help="new weights without a restart (UpdateEndpointWeightsAndCapacities)")
    sw.add_argument("weights", nargs="+", metavar="VARIANT=WEIGHT")
    sw.add_argument("--endpoint", help="the endpoint (default: the configured one; a compiled twin's is its model)")
    sw.add_argument("--run-dir", type=Path, help="the stack's run directory (default: $SAGESTACK_RUN_DIR)")
    sw.add_argument("--endpoint-name", help="a SageMaker endpoint instead of the local stack")
    sw.add_argument("--profile", help="AWS profile for --endpoint-name")
    sw.set_defaults(fn=cmd_variants_set_weights)
    sh = sub.add_parser("shadow", help="the shadow variant (ShadowProductionVariants)")
    ss = sh.add_subparsers(dest="shadow_command", required=True)
    sr = ss.add_parser("report", help="production against the shadow: latency, failures, drops, agreement")
    sr.add_argument("--url", default="http://127.0.0.1:8080", help="the running stack")
    sr.add_argument("--out", type=Path, default=Path("build/shadow/report.png"), help="the PNG (and .json beside it)")
    sr.set_defaults(fn=cmd_shadow_report)
    ca = sub.add_parser("capture", help="data capture records (DataCaptureConfig)")
    cs = ca.add_subparsers(dest="capture_command", required=True)
    cr = cs.add_parser("read", help="the captured requests (or answers) as a data set to score again")
    cr.add_argument("where", metavar="DIR", help="a folder, file:// or s3:// prefix of capture files")
    cr.add_argument("--what", choices=("input", "output"), default="input")
    cr.add_argument("--out", type=Path, help="a CSV or JSON Lines file (a folder for binary payloads); "
                                             "default: stdout")  # fmt: skip
    cr.set_defaults(fn=cmd_capture_read)
