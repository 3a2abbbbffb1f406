"""One request's id and where its time went: queue, input handler, runtime, output handler.

The id is the one nginx passes (`X-Amzn-RequestId`: the client's, else nginx's fresh one), or a fresh one when
gunicorn is called directly; the response carries it back and handlers see it as `context.request_id`.
`queue` is from nginx's `X-Request-Start` to the worker picking the request up. Each phase goes to Prometheus
(`sagestack_request_phase_seconds`) and, unless SAGESTACK_ACCESS_LOG=off, to stdout as one JSON line with the
id, beside nginx's JSON access line for the same request.
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

REQUEST_ID = "X-Amzn-RequestId"
REQUEST_START = "X-Request-Start"
_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(header: str | None) -> str:
    """The caller's id when it is a plausible one (letters, digits, `._:-`, at most 128), else a fresh one."""
    return header if header and _ID.fullmatch(header) else uuid.uuid4().hex


def queue_seconds(header: str | None, now: float | None = None) -> float | None:
    """Seconds since nginx's `X-Request-Start: t=<epoch seconds.millis>`, or None without one."""
    if not header or not header.startswith("t="):
        return None
    try:
        started = float(header[2:])
    except ValueError:
        return None
    return max((time.time() if now is None else now) - started, 0.0)


class RequestTimings:
    """Phase durations of one request, in seconds; a phase entered twice adds up."""

    def __init__(self, rid: str, queue: float | None = None) -> None:
        self.request_id = rid
        self.phases: dict[str, float] = {} if queue is None else {"queue": queue}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - started

    def log_line(self, model: str, route: str, status: int, total: float) -> str:
        fields = {"log": "gateway", "request_id": self.request_id, "model": model, "route": route, "status": status,
                  "total_ms": round(total * 1e3, 3)}  # fmt: skip
        fields |= {f"{name}_ms": round(seconds * 1e3, 3) for name, seconds in self.phases.items()}
        return json.dumps(fields)


def write(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
