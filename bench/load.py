"""`sagestack bench load`: step the number of users against the running stack and find the knee.

Each step holds N concurrent users for S seconds with a real payload for the model (Locust as a
library for the scenario; `--tool wrk` for raw throughput with N connections) and records TPS,
p50/p95/p99, errors, and the stack's CPU% and memory (nginx + gunicorn + runtimes, summed). The
knee is the last step before p95 passes the SLO or TPS stops growing by more than 5%.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench import loadgen
from bench.payloads import Payload, payload
from bench.procstats import Sampler, stack_processes

GROWTH = 0.05


def log(message: str) -> None:
    print(f"[load] {message}", file=sys.stderr, flush=True)


def knee(steps: list[dict[str, Any]], slo_ms: float | None) -> int | None:
    """Index of the last good step: p95 within the SLO and TPS still growing by more than 5%."""
    best = None
    for i, step in enumerate(steps):
        if slo_ms is not None and (step["p95_ms"] is None or step["p95_ms"] > slo_ms):
            break
        if best is not None and step["tps"] < steps[best]["tps"] * (1 + GROWTH):
            break
        best = i
    return best


class LocustDriver:
    """Locust's runner in this process (gevent), reused across steps."""

    def __init__(self, url: str, load: Payload) -> None:
        from locust import FastHttpUser, constant, task
        from locust.env import Environment

        body, headers = load.body, load.headers

        class Client(FastHttpUser):
            host = url
            wait_time = constant(0)

            @task
            def invoke(self) -> None:
                with self.client.post("/invocations", data=body, headers=headers, catch_response=True) as r:
                    if r.status_code != 200:
                        r.failure(f"HTTP {r.status_code}")

        self.env = Environment(user_classes=[Client])
        self.runner = self.env.create_local_runner()

    def step(self, users: int, seconds: float) -> dict[str, Any]:
        import gevent

        self.runner.start(users, spawn_rate=max(users, 1) * 10)
        gevent.sleep(min(1.0, seconds / 4))  # ramp, not measured
        self.env.stats.reset_all()
        started = time.perf_counter()
        gevent.sleep(seconds)
        total = self.env.stats.total
        elapsed = time.perf_counter() - started
        result = {
            "tps": total.num_requests / elapsed,
            "p50_ms": total.get_response_time_percentile(0.50),
            "p95_ms": total.get_response_time_percentile(0.95),
            "p99_ms": total.get_response_time_percentile(0.99),
            "errors": total.num_failures,
            "requests": total.num_requests,
        }
        return result

    def close(self) -> None:
        self.runner.quit()


class WrkDriver:
    def __init__(self, url: str, load: Payload, cpus: str | None) -> None:
        self.url, self.load, self.cpus = url + "/invocations", load, cpus

    def step(self, users: int, seconds: float) -> dict[str, Any]:
        r = loadgen.wrk(self.url, self.load.body, self.load.headers, seconds, users, self.cpus)
        return {
            "tps": r["rps"],
            "p50_ms": r["p50_ms"],
            "p95_ms": r["p95_ms"],
            "p99_ms": r["p99_ms"],
            "errors": r["non_2xx"] + r["socket_errors"],
        }

    def close(self) -> None:
        return None


def run_steps(
    url: str, model: str, users: list[int], step_seconds: float, tool: str = "locust", cpus: str | None = "1"
) -> dict[str, Any]:
    load = payload(model)
    port = urlparse(url).port or 80
    sampler = Sampler(stack_processes(port))
    if cpus and tool == "locust" and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    driver = LocustDriver(url, load) if tool == "locust" else WrkDriver(url, load, cpus)
    steps = []
    try:
        for n in users:
            sampler.start()
            t0 = time.perf_counter()
            result = driver.step(n, step_seconds)
            result |= sampler.stop(time.perf_counter() - t0) | {"users": n, "load_avg": loadgen.load_average()}
            steps.append(result)
            log(
                f"{n:>4} users: {result['tps']:8.1f} TPS  p95 {result['p95_ms']:.1f} ms  errors {result['errors']}  "
                f"stack CPU {result['cpu_percent']:.0f}%  RSS {result['rss_mb']:.0f} MB"
            )
    finally:
        driver.close()
    return {
        "model": model,
        "url": url,
        "payload": load.description,
        "tool": tool,
        "placement": f"load generator on CPU(s) {cpus or 'any'}; the stack unpinned; "
        f"{len(sampler.processes)} stack processes measured (CPU 100% = one core; RSS summed)",
        "steps": steps,
    }


def plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = report["steps"]
    users = [s["users"] for s in steps]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    panels = [
        ("tps", "TPS"),
        ("p95_ms", "p95 latency (ms)"),
        ("cpu_percent", "stack CPU % (100 = 1 core)"),
        ("rss_mb", "stack memory (MB RSS)"),
    ]
    for ax, (key, label) in zip(axes.flat, panels, strict=True):
        ax.plot(users, [s[key] for s in steps], marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent users")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if report.get("slo_ms"):
        axes[0, 1].axhline(report["slo_ms"], color="red", ls="--", label="SLO")
        axes[0, 1].legend()
    k = report.get("knee")
    if k is not None:
        axes[0, 0].axvline(steps[k]["users"], color="green", ls=":", label="knee")
        axes[0, 0].legend()
    fig.suptitle(f"{report['model']}: load steps ({report['tool']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    users = [int(u) for u in args.users.split(",")]
    report = run_steps(args.url, args.model, users, args.step_seconds, args.tool, args.loadgen_cpus or None)
    report["slo_ms"] = args.slo_ms
    k = knee(report["steps"], args.slo_ms)
    report["knee"] = k
    report["knee_users"] = report["steps"][k]["users"] if k is not None else None
    out = args.out or Path(f"build/bench/load_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    plot(report, out.with_suffix(".png"))
    log(f"knee at {report['knee_users']} users; wrote {out} and {out.with_suffix('.png')}")
    return 0
