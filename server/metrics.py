"""Prometheus metrics for /metrics: requests and latency per model and route, and pool state.

Gunicorn workers are separate processes, so counters use prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by the supervisor); the pool state is read from the routing table
at scrape time.
"""

from __future__ import annotations

import functools
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from server.async_queue import Stats
from server.routes import RouteTable

SHADOW_BUCKETS = tuple(round(0.0005 * 1.25**i, 6) for i in range(53))  # 0.5 ms to 55 s, 25 % apart: for p50/p95
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
REQUESTS = Counter("sagestack_requests_total", "Requests answered", ["model", "route", "code"])
LATENCY = Histogram(
    "sagestack_request_duration_seconds",
    "Time from request to response inside the gateway",
    ["model", "route"],
    buckets=LATENCY_BUCKETS,
)
BATCH = Histogram(
    "sagestack_runtime_call_requests",
    "Requests carried by one gateway -> runtime Predict call (gateway batching, SAGESTACK_GATEWAY_BATCH_SIZE)",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
PHASE = Histogram(
    "sagestack_request_phase_seconds",
    "Where an invocation's time goes: queue (nginx -> worker), input, runtime, output, handler (handler())",
    ["model", "phase"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
VARIANT_REQUESTS = Counter("sagestack_variant_invocations_total", "Invocations answered, by endpoint variant",
                           ["endpoint", "variant", "code"])  # fmt: skip
VARIANT_LATENCY = Histogram(
    "sagestack_variant_latency_seconds",
    "Invocation latency inside the gateway, by endpoint variant (SageMaker's per-variant ModelLatency)",
    ["endpoint", "variant"],
    buckets=LATENCY_BUCKETS,
)
SHADOW = Counter("sagestack_shadow_invocations_total", "Copies sent to a shadow variant, by outcome (ok, error, "
                 "dropped: its queue was full)", ["endpoint", "variant", "outcome"])  # fmt: skip
SHADOW_LATENCY = Histogram("sagestack_shadow_latency_seconds", "The shadow variant's latency on its copies",
                           ["endpoint", "variant"], buckets=SHADOW_BUCKETS)  # fmt: skip
SHADOW_PRODUCTION_LATENCY = Histogram("sagestack_shadow_production_latency_seconds",
                                      "Production's latency on the same requests the shadow got",
                                      ["endpoint", "variant"], buckets=SHADOW_BUCKETS)  # fmt: skip
SHADOW_AGREEMENT = Histogram("sagestack_shadow_agreement", "How far the shadow's answer agrees with production's "
                             "(0-1; yolov4: F1 of IoU-matched detections, credit_risk: equal decisions)",
                             ["endpoint", "variant"], buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95,
                                                               0.99, 1.0))  # fmt: skip
CAPTURE = Counter("sagestack_capture_records_total", "Data capture records, by outcome (written, dropped: the "
                  "buffer was full, failed: the write failed)", ["endpoint", "variant", "outcome"])  # fmt: skip
IN_FLIGHT = Gauge("sagestack_in_flight_requests", "Requests being answered", ["model"], multiprocess_mode="livesum")

CONTENT_TYPE = CONTENT_TYPE_LATEST


@functools.cache
def _requests(model: str, route: str, code: int) -> Counter:
    return REQUESTS.labels(model, route, str(code))


@functools.cache
def _latency(model: str, route: str) -> Histogram:
    return LATENCY.labels(model, route)


@functools.cache
def in_flight(model: str) -> Gauge:
    """The in-flight gauge of one model (labelled children are cached: labels() costs per call)."""
    return IN_FLIGHT.labels(model)


@functools.cache
def _batch(model: str) -> Histogram:
    return BATCH.labels(model)


def observe_batch(key: tuple, requests: int) -> None:
    _batch(key[0]).observe(requests)


@functools.cache
def _phase(model: str, phase: str) -> Histogram:
    return PHASE.labels(model, phase)


def observe_phases(model: str, phases: dict[str, float]) -> None:
    for phase, seconds in phases.items():
        _phase(model, phase).observe(seconds)


def observe(model: str, route: str, code: int, seconds: float) -> None:
    _requests(model, route, code).inc()
    _latency(model, route).observe(seconds)


@functools.cache
def _variant(endpoint: str, variant: str, code: int) -> tuple[Counter, Histogram]:
    return VARIANT_REQUESTS.labels(endpoint, variant, str(code)), VARIANT_LATENCY.labels(endpoint, variant)


def observe_variant(endpoint: str, variant: str, code: int, seconds: float) -> None:
    count, latency = _variant(endpoint, variant, code)
    count.inc()
    latency.observe(seconds)


def observe_shadow(endpoint: str, variant: str, outcome: str, seconds: float | None = None,
                   production_seconds: float | None = None, agreement: float | None = None) -> None:  # fmt: skip
    SHADOW.labels(endpoint, variant, outcome).inc()
    if seconds is not None:
        SHADOW_LATENCY.labels(endpoint, variant).observe(seconds)
    if production_seconds is not None:
        SHADOW_PRODUCTION_LATENCY.labels(endpoint, variant).observe(production_seconds)
    if agreement is not None:
        SHADOW_AGREEMENT.labels(endpoint, variant).observe(agreement)


def observe_capture(endpoint: str, variant: str, outcome: str, records: int = 1) -> None:
    CAPTURE.labels(endpoint, variant, outcome).inc(records)


class PoolCollector:
    def __init__(self, table: RouteTable) -> None:
        self.table_ = table

    def collect(self):
        instances = GaugeMetricFamily(
            "sagestack_runtime_instances", "Runtime instances by model and state", labels=["model", "state"]
        )
        ready = GaugeMetricFamily("sagestack_model_ready", "1 when the model is AVAILABLE and warm", labels=["model"])
        for name, model in self.table_.models.items():
            counts: dict[str, int] = {"ready": 0, "starting": 0, "down": 0}
            for inst in model.instances:
                counts[inst.state] = counts.get(inst.state, 0) + 1
            for state, n in counts.items():
                instances.add_metric([name, state], n)
            ready.add_metric([name], 1.0 if model.ready else 0.0)
        failed = GaugeMetricFamily(
            "sagestack_model_failed", "1 for a model that could not start, with why", labels=["model", "reason"]
        )
        for name, why in self.table_.failed.items():  # SAGESTACK_FAIL_ON_MODEL_ERROR=false
            ready.add_metric([name], 0.0)
            failed.add_metric([name, why[:200]], 1.0)
        yield instances
        yield ready
        yield failed


class AsyncCollector:
    """The async queue, read from its sqlite file at scrape time (SageMaker's async endpoint metrics)."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self):
        s = self.stats
        yield GaugeMetricFamily("sagestack_async_backlog_size",
                                "Async requests queued or running (SageMaker's ApproximateBacklogSize)",
                                value=s.backlog)  # fmt: skip
        yield GaugeMetricFamily("sagestack_async_running", "Async requests being run now", value=s.running)
        yield GaugeMetricFamily("sagestack_async_oldest_request_age_seconds",
                                "Age of the oldest unfinished async request (ApproximateAgeOfOldestRequest)",
                                value=s.oldest_age)  # fmt: skip
        done = CounterMetricFamily("sagestack_async_invocations", "Async requests finished, by outcome",
                                   labels=["outcome"])  # fmt: skip
        done.add_metric(["success"], s.successes)
        done.add_metric(["failure"], s.failures)
        yield done


def render(table: RouteTable, async_stats: Stats | None = None) -> bytes:
    registry = CollectorRegistry()
    registry.register(PoolCollector(table))
    if async_stats is not None:
        registry.register(AsyncCollector(async_stats))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY) + generate_latest(registry)
