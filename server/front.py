"""What every front protocol does with a request: read its body within the limit, pick its model target, and count
it as an invocation of its model and variant (in flight, timed, logged). Falcon's routes and OIP v2's gRPC service
(server.v2_grpc) share it, so every protocol gets the same metrics and access log."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import IO, Any

import falcon

from server import metrics, request_log
from server.errors import ApiError, bad_request
from server.gateway import Gateway, Target
from server.variants import TARGET_VARIANT


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The whole body, or 413 when it passes SAGEMAKER_MAX_PAYLOAD_IN_MB (also without nginx)."""
    if req.content_length is not None and req.content_length > limit:
        raise ApiError(413, f"request body of {req.content_length} bytes exceeds SAGEMAKER_MAX_PAYLOAD_IN_MB")
    body = req.bounded_stream.read(limit + 1)
    if len(body) > limit:
        raise ApiError(413, "request body exceeds SAGEMAKER_MAX_PAYLOAD_IN_MB")
    return body


def spool_body(req: falcon.Request, limit: int, in_memory: int, folder: Path) -> IO[bytes]:
    """An async request's input (up to 1 GB): kept in memory up to `in_memory` bytes, past that in a file."""
    if req.content_length is not None and req.content_length > limit:
        raise ApiError(413, f"request body of {req.content_length:,} bytes exceeds {limit:,} bytes")
    folder.mkdir(parents=True, exist_ok=True)
    spooled = tempfile.SpooledTemporaryFile(max_size=in_memory, dir=folder)
    try:
        total = 0
        while chunk := req.bounded_stream.read(1 << 20):
            total += len(chunk)
            if total > limit:
                raise ApiError(413, f"request body exceeds {limit:,} bytes")
            spooled.write(chunk)
    except BaseException:
        spooled.close()
        raise
    return spooled


def begin(context: Any, request_id: str | None, request_start: str | None = None) -> str:
    """A request's bookkeeping on `context` (falcon's req.context, or a gRPC call's): start time, id, timings."""
    context.started = time.perf_counter()
    context.model = ""
    context.variant = None  # (endpoint, variant) of an invocation
    context.in_flight = False
    rid = request_log.request_id(request_id)
    context.timings = request_log.RequestTimings(rid, request_log.queue_seconds(request_start))
    return rid


def start_invocation(context: Any, target: Target) -> None:
    """From here the request is an invocation of its model and variant: in flight until `finish`."""
    context.model = target.model
    context.variant = (target.endpoint, target.variant)
    metrics.in_flight(target.model).inc()
    context.in_flight = True


def finish(context: Any, route: str, code: int, access_log: bool) -> None:
    """Counted and timed by model, route and status (and variant); an invocation also gets its log line."""
    if context.in_flight:
        metrics.in_flight(context.model).dec()
    if route == "/metrics":
        return
    took = time.perf_counter() - context.started
    metrics.observe(context.model or "-", route, code, took)
    if context.variant is not None:
        metrics.observe_variant(*context.variant, code, took)
    if context.in_flight:  # an invocation: where its time went, under its id
        metrics.observe_phases(context.model, context.timings.phases)
        if access_log:
            request_log.write(context.timings.log_line(context.model, route, code, took))


def model_target(gateway: Gateway, model: str, version: str | None, target_variant: str | None,
                 method: str = "predict", load: bool = True) -> Target:  # fmt: skip
    """A tensor protocol's target: the model (and version) its path or message names, as custom attributes;
    `load=False` for a request that asks about the model (on a multi-model endpoint, it does not load it)."""
    if version is not None and not version.isdigit():
        raise bad_request(f"model version {version!r} must be a number")
    attributes = f"tfs-method={method}" + (f",tfs-model-version={version}" if version else "")
    return gateway.target(attributes, model, target_variant, load)


class ModelResource:
    """A tensor protocol's route for one model (and version): OIP v2's, TF Serving's REST."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def target(self, req: falcon.Request, model: str, version: str | None, method: str = "predict",
               load: bool = True) -> Target:  # fmt: skip
        return model_target(self.gateway, model, version, req.get_header(TARGET_VARIANT), method, load)
