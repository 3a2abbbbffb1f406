"""`sagestack transform`: a SageMaker batch transform job against the local stack (one it starts, or `--url`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transform.job import ASSEMBLY, BATCH_STRATEGIES, JOIN_SOURCES, SPLIT_TYPES

# The flags that set a TransformJob field of the same name (CreateTransformJob's parameters, as flags).
JOB_FLAGS = ("model", "input", "output", "content_type", "split_type", "batch_strategy", "max_payload_mb",
             "max_concurrent_transforms", "assemble_with", "accept", "input_filter", "output_filter",
             "join_source")  # fmt: skip


def cmd_transform(args: argparse.Namespace) -> int:
    from server.storage import StorageError
    from transform.job import JobError, TransformJob, from_request, load_request
    from transform.run import Endpoint, EndpointError

    given = {flag: getattr(args, flag) for flag in JOB_FLAGS if getattr(args, flag) is not None}
    try:
        if args.job_json:
            job = from_request(load_request(args.job_json), **given)
        else:
            missing = [f"--{f.replace('_', '-')}" for f in ("model", "input", "output") if f not in given]
            if missing:
                raise JobError(f"{', '.join(missing)} required (or --job-json)")
            job = TransformJob(**given)
        with stack_url(args, job) as url:
            token = args.auth_token or os.environ.get("SAGESTACK_AUTH_TOKEN")
            probe = Endpoint(url, job.model, job.invocations_timeout_s, job.invocations_max_retries, 1, token)
            job = job.with_defaults(probe.execution_parameters())
            endpoint = Endpoint(url, job.model, job.invocations_timeout_s, job.invocations_max_retries,
                                job.max_concurrent_transforms or 1, token)  # fmt: skip
            summary = _with_progress(job, endpoint, args)
    except (JobError, StorageError, EndpointError, RuntimeError, ValueError) as exc:
        raise SystemExit(f"sagestack transform: {exc}") from None
    print(json.dumps({"job": job.name, **summary.as_dict()}))
    return 1 if summary.failed and args.fail_on_record_error else 0


def _with_progress(job, endpoint, args):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from transform.run import run

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("objects"),
               TextColumn("{task.fields[records]} records ({task.fields[rate]}/s)"), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=Console(stderr=True)) as progress:  # stdout keeps the JSON summary alone
        task = progress.add_task(f"transform {job.model}", total=None, records=0, rate="-")
        counts = {"records": 0}

        def on_progress(kind: str, n: int) -> None:
            if kind == "objects":  # the listing, made once by run()
                progress.update(task, total=n)
                return
            if kind == "object":
                progress.advance(task, n)
                return
            counts["records"] += n
            elapsed = progress.tasks[0].elapsed or 0
            rate = f"{counts['records'] / elapsed:.0f}" if elapsed else "-"
            progress.update(task, records=counts["records"], rate=rate)

        return run(job, endpoint, args.shard_index, args.shard_count, on_progress)


@contextmanager
def stack_url(args: argparse.Namespace, job) -> Iterator[str]:
    """The running stack at --url, or one started here with the job's container environment (as SageMaker sets
    SAGEMAKER_BATCH and the job's values in a transform container)."""
    if args.url:
        yield args.url
        return
    try:
        from bench.stack import start_stack
    except ModuleNotFoundError:
        raise SystemExit("sagestack transform: no stack to start here (bench/ is not installed): give --url") from None
    run_dir = Path(tempfile.mkdtemp(prefix="sagestack-transform-"))
    print(f"[transform] starting the stack on {args.model_dir} (log: {run_dir}/stdout.log)", file=sys.stderr)
    stack = start_stack(args.model_dir, run_dir, **job.container_env())
    try:
        yield stack.url
    finally:
        stack.stop()


def add_parsers(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("transform", help="a SageMaker batch transform job (CreateTransformJob's parameters)")
    t.add_argument("--job-json", type=Path, help="the CreateTransformJob request JSON (boto3's arguments); "
                   "flags given beside it override its values")  # fmt: skip
    t.add_argument("--model", help="ModelName: the model to send the records to")
    t.add_argument("--input", help="S3Uri: s3://bucket/prefix, file:///path or a folder or file")
    t.add_argument("--output", help="S3OutputPath: each input object becomes <output>/<key>.out")
    t.add_argument("--content-type", help="ContentType of the records (text/csv, application/jsonlines, image/png ...)")
    t.add_argument("--split-type", choices=SPLIT_TYPES, help="None (default): an object is one record; Line")
    t.add_argument("--batch-strategy", choices=BATCH_STRATEGIES, help="default: the container's execution parameters")
    t.add_argument("--max-payload-mb", type=int, help="MaxPayloadInMB of one request (default: the container's)")
    t.add_argument(
        "--max-concurrent-transforms",
        type=int,
        help="objects transformed at once, each one's requests in order (default: the container's)",
    )
    t.add_argument("--assemble-with", choices=ASSEMBLY, help="None (default): answers as they come; Line: one a line")
    t.add_argument("--accept", help="Accept: the answers' content type")
    t.add_argument("--input-filter", help="JSONPath applied to each record before it is sent (e.g. '$[1:]')")
    t.add_argument("--output-filter", help="JSONPath applied to each (joined) output record (e.g. '$[0,-1]')")
    t.add_argument("--join-source", choices=JOIN_SOURCES, help="Input: each output joined to its input record")
    t.add_argument("--url", help="a running stack; without it, one is started on --model-dir")
    t.add_argument("--auth-token", help="the stack's SAGESTACK_AUTH_TOKEN (default: that variable)")
    t.add_argument("--model-dir", type=Path, default=Path("build/model"), help="for the stack started here")
    t.add_argument("--shard-index", type=int, default=0, help="this worker's share of the objects (Indexed Job)")
    t.add_argument("--shard-count", type=int, default=1, help="how many workers share the objects")
    t.add_argument("--fail-on-record-error", action="store_true", help="exit 1 if any record failed")
    t.set_defaults(fn=cmd_transform)
