"""The shadow variant: a copy of a share of production's requests, run after production has its answer.

Copies wait on a bounded queue that a few workers (greenlets under gevent) drain, so a slow or failing shadow
never holds up or fails a production answer: when the queue is full the copy is dropped and counted. Each
shadow answer is timed and compared with production's, on the same request, by the production model's
`agreement(production, shadow, content_type)` in its inference.py (yolov4: detections matched by IoU; credit_risk:
the share of equal decisions), else by equality; `/metrics` and `sagestack shadow report` show both.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass

from server import handlers, metrics
from server.errors import ApiError
from server.gateway import Gateway, Target
from server.handler_kit import ClientError
from server.request_log import RequestTimings

log = logging.getLogger("sagestack.shadow")


@dataclass(frozen=True)
class Copy:
    target: Target  # the production request's (its shadow is set)
    body: bytes
    content_type: str | None
    accept: str | None
    answer: bytes  # production's
    seconds: float  # production's latency


def equal_answers(production: bytes, shadow: bytes, content_type: str) -> float:
    """1.0 when the answers are the same (as JSON when both parse, else byte for byte), else 0.0."""
    try:
        return float(json.loads(production) == json.loads(shadow))
    except ValueError:
        return float(production == shadow)


class ShadowRunner:
    def __init__(self, gateway: Gateway, queue_size: int, workers: int) -> None:
        self.gateway = gateway
        self.copies: queue.Queue[Copy] = queue.Queue(maxsize=queue_size)
        self.workers = workers
        self._started = False
        self._lock = threading.Lock()

    def offer(self, copy: Copy) -> None:
        """Queue the copy, or drop it when the queue is full. Never blocks."""
        self._start()
        try:
            self.copies.put_nowait(copy)
        except queue.Full:
            metrics.observe_shadow(copy.target.endpoint, copy.target.shadow.name, "dropped")  # type: ignore[union-attr]

    def _start(self) -> None:
        """The workers start in the gunicorn worker that first needs them (after the fork)."""
        if self._started:
            return
        with self._lock:
            if not self._started:
                for n in range(self.workers):
                    threading.Thread(target=self._work, name=f"shadow-{n}", daemon=True).start()
                self._started = True

    def _work(self) -> None:
        while True:
            copy = self.copies.get()
            try:
                self._run(copy)
            except Exception:  # a shadow's failure is only ever counted and logged
                log.exception("shadow run failed")
                metrics.observe_shadow(copy.target.endpoint, copy.target.shadow.name, "error")  # type: ignore[union-attr]

    def _run(self, copy: Copy) -> None:
        production = copy.target
        assert production.shadow is not None
        shadow = dataclasses.replace(production, model=production.shadow.model, variant=production.shadow.name,
                                     version=None, shadow=None, shadow_percentage=0.0)  # fmt: skip
        started = time.perf_counter()
        try:
            reply, content_type = self.gateway.invoke(shadow, copy.body, copy.content_type, copy.accept,
                                                      RequestTimings("shadow", 0.0))  # fmt: skip
            if not isinstance(reply, bytes):
                reply = b"".join(reply)
        except (ApiError, ClientError) as exc:
            log.warning("shadow variant %s: %s", shadow.variant, exc)
            metrics.observe_shadow(production.endpoint, shadow.variant, "error")
            return
        seconds = time.perf_counter() - started
        try:
            agreement: float | None = self._agreement(production.model)(copy.answer, reply, content_type)
        except Exception:  # the shadow answered: a comparison that fails loses only the agreement
            log.exception("shadow variant %s: agreement() failed", shadow.variant)
            agreement = None
        metrics.observe_shadow(production.endpoint, shadow.variant, "ok", seconds, copy.seconds, agreement)

    def _agreement(self, model: str):
        code: handlers.ModelHandlers | None = self.gateway.handlers(model)
        return code.agreement if code is not None and code.agreement is not None else equal_answers
