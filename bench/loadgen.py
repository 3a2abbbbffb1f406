"""Load generators for benchmarks: wrk for HTTP throughput, a gRPC driver, and sequential timing.

The machine is small and shared, so each result carries the load average and where the load
generator was pinned; callers interleave the variants they compare.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def load_average() -> float:
    return os.getloadavg()[0]


def taskset_prefix(cpus: str | None) -> list[str]:
    """`taskset -c CPUS` where taskset exists and CPUS is given; else nothing."""
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus]
    return []


def wrk(
    url: str,
    body: bytes,
    headers: dict[str, str],
    seconds: float,
    connections: int,
    cpus: str | None = None,
    method: str = "POST",
) -> dict[str, Any]:
    """Drive `url` with wrk (one thread); requests/s, latency percentiles and non-2xx count."""
    if shutil.which("wrk") is None:
        raise FileNotFoundError("wrk is not installed (apt-get install wrk; `make setup` does it)")
    with tempfile.TemporaryDirectory() as tmp:
        body_file = Path(tmp) / "body"
        body_file.write_bytes(body)
        script = Path(tmp) / "req.lua"
        lines = [
            f'wrk.method = "{method}"',
            f'local f = io.open("{body_file}", "rb")',
            "wrk.body = f:read('*a')",
            "f:close()",
        ]
        lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
        lines += [
            "done = function(summary, latency, requests)",
            "  for _, p in ipairs({50, 90, 95, 99}) do",
            '    io.write(string.format("PCT %d %d\\n", p, latency:percentile(p)))',
            "  end",
            "end",
        ]
        script.write_text("\n".join(lines) + "\n")
        argv = [
            *taskset_prefix(cpus),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out) | {"connections": connections, "seconds": seconds, "load_avg": load_average()}


def parse_wrk(text: str) -> dict[str, Any]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    pct = {int(p): int(us) / 1000 for p, us in re.findall(r"^PCT (\d+) (\d+)$", text, flags=re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:.*?connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": rps,
        "p50_ms": pct.get(50),
        "p90_ms": pct.get(90),
        "p95_ms": pct.get(95),
        "p99_ms": pct.get(99),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
    }


def sequential(call: Callable[[], Any], seconds: float, warmup: int = 50) -> dict[str, Any]:
    """Back-to-back calls from one thread: latency percentiles and calls/s."""
    for _ in range(warmup):
        call()
    latencies = []
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        call()
        latencies.append((time.perf_counter() - start) * 1e3)
    return summarize(latencies, seconds) | {"connections": 1, "load_avg": load_average()}


def concurrent_futures(start_call: Callable[[], Any], seconds: float, concurrency: int) -> dict[str, Any]:
    """Keep `concurrency` asynchronous calls (objects with add_done_callback) in flight."""
    latencies: list[float] = []
    lock = threading.Lock()
    done = threading.Event()
    end = time.perf_counter() + seconds
    in_flight = [0]

    def launch() -> None:
        t0 = time.perf_counter()
        future = start_call()

        def finished(f: Any) -> None:
            f.result()
            with lock:
                latencies.append((time.perf_counter() - t0) * 1e3)
                in_flight[0] -= 1
                more = time.perf_counter() < end
                if more:
                    in_flight[0] += 1
                elif in_flight[0] == 0:
                    done.set()
            if more:
                launch()

        future.add_done_callback(finished)

    with lock:
        in_flight[0] = concurrency
    for _ in range(concurrency):
        launch()
    done.wait(seconds + 30)
    return summarize(latencies, seconds) | {"connections": concurrency, "load_avg": load_average()}


def percentile(ordered: list[float], p: float) -> float:
    """The p-th percentile of sorted values (nearest rank)."""
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def summarize(latencies_ms: list[float], seconds: float) -> dict[str, Any]:
    ordered = sorted(latencies_ms)
    return {
        "rps": len(ordered) / seconds,
        "p50_ms": percentile(ordered, 50),
        "p90_ms": percentile(ordered, 90),
        "p99_ms": percentile(ordered, 99),
        "mean_ms": statistics.fmean(ordered),
        "n": len(ordered),
    }
