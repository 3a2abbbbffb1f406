"""`sagestack bench async`: a burst of async requests against the same burst sent synchronously, interleaved.

One stack with async inference on (file:// input and output under the bench folder). Each round sends N
requests to one model twice: as InvokeEndpointAsync, accepted from C client threads and then run by the
dispatcher C at a time (SAGESTACK_ASYNC_MAX_CONCURRENT_INVOCATIONS), and as InvokeEndpoint from C client
threads waiting for each answer (the baseline). Reported per round and as medians: the time to accept the
burst, the time until every output is written, completions per second against the synchronous requests per
second, and the backlog (sagestack_async_backlog_size, read from the queue file as /metrics reads it, so the
sampling does not load the gateway worker) every 0.1 s while it drains.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench.payloads import payload
from server.async_queue import AsyncQueue


def run(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from bench.stack import start_stack

    work = args.out.parent / "async-burst"
    shutil.rmtree(work, ignore_errors=True)  # no outputs or queue of an earlier run
    inputs, outputs = work / "in", work / "out"
    inputs.mkdir(parents=True, exist_ok=True)
    sample = payload(args.model)
    (inputs / "request").write_bytes(sample.body)
    stack = start_stack(args.model_dir, work / "run", SAGESTACK_ASYNC_OUTPUT_PATH=f"file://{outputs.resolve()}",
                        SAGESTACK_ASYNC_INPUT_PREFIXES=str(inputs.resolve()),
                        SAGESTACK_ASYNC_QUEUE_PATH=str((work / "queue.sqlite3").resolve()),
                        SAGESTACK_ASYNC_MAX_CONCURRENT_INVOCATIONS=str(args.concurrency),
                        SAGEMAKER_TFS_DEFAULT_MODEL_NAME=args.model)  # fmt: skip
    queue = AsyncQueue((work / "queue.sqlite3").resolve())  # the backlog, read where /metrics reads it
    rounds: list[dict[str, Any]] = []
    try:
        with Progress(transient=True) as progress:
            task = progress.add_task(
                f"{args.rounds} rounds of {args.requests} requests, sync and async", total=args.rounds
            )
            for n in range(args.rounds):
                sync_s = sync_burst(stack.url, sample, args.requests, args.concurrency)
                rounds.append(
                    {
                        "sync_s": sync_s,
                        **async_burst(stack.url, queue, inputs, outputs, sample, args.requests, args.concurrency, n),
                    }
                )
                progress.advance(task)
    finally:
        stack.stop()
    report = summarize(rounds, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot(report, args.out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in report.items() if k not in ("rounds", "backlog")}))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}", file=sys.stderr)
    return 0


def sync_burst(url: str, sample: Any, n: int, concurrency: int) -> float:
    headers = sample.headers

    def one(_: int) -> None:
        requests.post(url + "/invocations", data=sample.body, headers=headers, timeout=120).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - started


def async_burst(
    url: str, queue: AsyncQueue, inputs: Path, outputs: Path, sample: Any, n: int, concurrency: int, round_no: int
) -> dict[str, Any]:
    """Submit n requests from `concurrency` client threads, sampling the backlog until every output is there."""
    headers = {"X-Amzn-SageMaker-InputLocation": f"file://{(inputs / 'request').resolve()}",
               "X-Amzn-SageMaker-Content-Type": sample.headers["Content-Type"]}  # fmt: skip
    if "X-Amzn-SageMaker-Custom-Attributes" in sample.headers:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = sample.headers["X-Amzn-SageMaker-Custom-Attributes"]
    started = time.perf_counter()
    backlog: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample_backlog() -> None:
        while not stop.is_set():
            backlog.append((time.perf_counter() - started, queue.stats().backlog))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample_backlog, daemon=True)
    sampler.start()

    def submit(i: int) -> str:
        r = requests.post(url + "/endpoints/bench/async-invocations", timeout=30,
                          headers={**headers, "X-Amzn-SageMaker-Inference-Id": f"r{round_no}-{i}"})  # fmt: skip
        r.raise_for_status()
        return r.json()["InferenceId"]

    with ThreadPoolExecutor(concurrency) as pool:
        ids = list(pool.map(submit, range(n)))
    accepted = time.perf_counter() - started
    pending = {outputs / f"{i}.out" for i in ids}
    while pending:
        pending = {p for p in pending if not p.exists()}
        time.sleep(0.02)
    done = time.perf_counter() - started
    stop.set()
    sampler.join()
    return {"accept_s": accepted, "done_s": done, "drain_s": done - accepted,
            "peak_backlog": max(b for _, b in backlog), "backlog": backlog}  # fmt: skip


def summarize(rounds: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    sync = statistics.median(r["sync_s"] for r in rounds)
    done = statistics.median(r["done_s"] for r in rounds)
    return {
        "model": args.model,
        "requests": args.requests,
        "rounds": len(rounds),
        "concurrency": args.concurrency,
        "settings": "SageMaker's defaults (one gunicorn worker, one runtime instance); async dispatches "
        f"{args.concurrency} at a time, the sync baseline uses {args.concurrency} client threads",
        "accept_per_s": round(args.requests / statistics.median(r["accept_s"] for r in rounds), 1),
        "async_completions_per_s": round(args.requests / done, 1),
        "sync_requests_per_s": round(args.requests / sync, 1),
        "async_over_sync": round(sync / done, 3),
        "peak_backlog": statistics.median(r["peak_backlog"] for r in rounds),
        "rounds_detail": [{k: v for k, v in r.items() if k != "backlog"} for r in rounds],
        "backlog": rounds[-1]["backlog"],
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    times, sizes = zip(*report["backlog"], strict=True) if report["backlog"] else ((), ())
    left.plot(times, sizes, color="tab:blue")
    left.set_xlabel("seconds since the burst began (last round)")
    left.set_ylabel("sagestack_async_backlog_size")
    left.set_title(f"backlog of a {report['requests']}-request burst ({report['model']})")
    names = ("accepted (async)", "completed (async)", "answered (sync)")
    values = (report["accept_per_s"], report["async_completions_per_s"], report["sync_requests_per_s"])
    right.bar(range(3), values, color=("tab:green", "tab:blue", "tab:grey"), alpha=0.7)
    for i, v in enumerate(values):
        right.text(i, v, f"{v:g}/s", ha="center", va="bottom")
    right.set_xticks(range(3), names)
    right.set_title(f"async completes at {report['async_over_sync']:.2f}x the sync rate (medians)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
