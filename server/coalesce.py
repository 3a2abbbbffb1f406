"""Opportunistic batching in the gateway: requests ride together when the runtime is busy anyway.

Each gunicorn worker keeps at most `limit` calls in flight per (model, version, signature,
input layout), `limit` being the model's instance count. A request that finds a free slot goes
out at once, alone: no timer, so a quiet endpoint adds no latency. Requests that arrive while
every slot is busy wait; when a call returns, its caller hands the waiting requests (up to
SAGESTACK_GATEWAY_BATCH_SIZE rows) to the first of them, which sends them as one joined call.
This is TorchServe's frontend batching without the delay, and it pays the per-call cost of
HTTP/2, protobuf and the runtime's Python once per batch instead of once per request.

Requests are joined only along a dynamic leading dimension, and a batch whose call is refused as
a client error is re-run request by request, so one bad request never fails its neighbours.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from server.errors import ApiError
from server.tensors import Signature, TensorError, batch_rows, join_batch, split_batch

Arrays = dict[str, np.ndarray]
RETRYABLE = (503, 504)  # no instance, or out of time: running the requests one by one cannot help
Call = Callable[[Arrays], Arrays]


@dataclass
class _Job:
    inputs: Arrays
    rows: int
    done: threading.Event | None = None  # made only when the job has to wait
    batch: list[_Job] | None = None  # set when this job is promoted to send a batch
    result: Arrays | None = None
    error: BaseException | None = None

    def outcome(self) -> Arrays:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@dataclass
class _Lane:
    running: int = 0
    waiting: deque[_Job] = field(default_factory=deque)


def batch_key(model: str, version: int | None, sig: Signature, inputs: Arrays) -> Hashable | None:
    """What must match for requests to be joined, or None when this request cannot be.

    Every input of the signature must have a dynamic leading dimension; the rest of each
    shape and the dtype must be the same across the joined requests.
    """
    if not all(isinstance(v, np.ndarray) for v in inputs.values()):
        return None
    for name, spec in sig.inputs.items():
        if spec.shape is None or not spec.shape or spec.shape[0] != -1 or name not in inputs:
            return None
    if batch_rows(inputs) is None:
        return None
    layout = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))
    return (model, version, sig.name, layout)


class Coalescer:
    def __init__(self, max_rows: int, observe: Callable[[Hashable, int], None] | None = None) -> None:
        self.max_rows = max_rows
        self.observe = observe  # told (key, requests) for every call sent
        self._lock = threading.Lock()
        self._lanes: dict[Hashable, _Lane] = {}
        self._unsplittable: set[Hashable] = set()

    def run(self, key: Hashable | None, inputs: Arrays, limit: int, call: Call) -> Arrays:
        """`call(inputs)` for this request, possibly joined with others waiting on the same key."""
        if key is None or self.max_rows <= 1 or key in self._unsplittable:
            return call(inputs)
        rows = batch_rows(inputs)
        assert rows is not None
        job = _Job(inputs, rows)
        with self._lock:
            lane = self._lanes.setdefault(key, _Lane())
            if lane.running < max(1, limit):
                lane.running += 1
                job.batch = [job]
            else:
                job.done = threading.Event()
                lane.waiting.append(job)
        if job.done is not None:
            job.done.wait()
            if job.batch is None:  # another request sent it
                return job.outcome()
        try:
            self._send(key, job.batch, call)
        finally:
            self._hand_over(key, lane)
        return job.outcome()

    def _hand_over(self, key: Hashable, lane: _Lane) -> None:
        """Give the waiting requests (one batch of them) to the first of them, or free the slot."""
        with self._lock:
            if not lane.waiting:
                lane.running -= 1
                if lane.running == 0:
                    self._lanes.pop(key, None)
                return
            batch, rows = [], 0
            while lane.waiting and (not batch or rows + lane.waiting[0].rows <= self.max_rows):
                rows += lane.waiting[0].rows
                batch.append(lane.waiting.popleft())
        batch[0].batch = batch
        assert batch[0].done is not None
        batch[0].done.set()

    def _send(self, key: Hashable, batch: list[_Job], call: Call) -> None:
        if self.observe is not None:
            self.observe(key, len(batch))
        try:
            if len(batch) == 1:
                batch[0].result = call(batch[0].inputs)
                return
            try:
                parts = split_batch(call(join_batch([j.inputs for j in batch])), [j.rows for j in batch])
            except TensorError:  # outputs without the batch dimension: never join this key again
                self._unsplittable.add(key)
                self._one_by_one(batch, call)
                return
            except ApiError as exc:
                if exc.status in RETRYABLE:
                    raise
                # Find the request the runtime refused; if none was, the model cannot take joined batches.
                if self._one_by_one(batch, call) and exc.status >= 500:
                    self._unsplittable.add(key)
                return
            for job, part in zip(batch, parts, strict=True):
                job.result = part
        except BaseException as exc:
            for job in batch:
                job.error = exc
        finally:
            for job in batch[1:]:
                assert job.done is not None
                job.done.set()

    @staticmethod
    def _one_by_one(batch: list[_Job], call: Call) -> bool:
        """Each request on its own; True when every one succeeded."""
        ok = True
        for job in batch:
            try:
                job.result = call(job.inputs)
            except BaseException as exc:
                job.error, ok = exc, False
        return ok
