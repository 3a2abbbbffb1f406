"""What every front protocol's resource does with a request: read its body within the limit, and count it as an
invocation of its model and variant (in flight, timed, logged by app.RequestMetrics)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import IO

import falcon

from server import metrics
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


def start_invocation(req: falcon.Request, target: Target) -> None:
    req.context.model = target.model
    req.context.variant = (target.endpoint, target.variant)
    metrics.in_flight(target.model).inc()
    req.context.in_flight = True


class ModelResource:
    """A tensor protocol's route for one model (and version): OIP v2's, TF Serving's REST."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def target(self, req: falcon.Request, model: str, version: str | None, method: str = "predict") -> Target:
        if version is not None and not version.isdigit():
            raise bad_request(f"model version {version!r} must be a number")
        attributes = f"tfs-method={method}" + (f",tfs-model-version={version}" if version else "")
        return self.gateway.target(attributes, model, req.get_header(TARGET_VARIANT))
