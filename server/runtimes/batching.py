"""Server-side batching (SAGEMAKER_TFS_ENABLE_BATCHING) for our runtimes, with TF Serving's four parameters."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from server.runtimes.servable import Overloaded
from server.tensors import batch_rows, join_batch, split_batch

if TYPE_CHECKING:
    from server.runtimes.servable import Servable
    from server.settings import Settings


class Batching:
    """Server-side batching (SAGEMAKER_TFS_ENABLE_BATCHING): concurrent requests to one signature
    are joined along axis 0, run once, and split again. At most `num_threads` batches run at a time
    (SAGEMAKER_TFS_NUM_BATCH_THREADS, as TF Serving's batch threads)."""

    def __init__(self, max_batch_size: int, timeout_micros: int, max_enqueued: int, num_threads: int) -> None:
        self.max_batch_size = max_batch_size
        self.timeout = timeout_micros / 1e6
        self.max_enqueued = max_enqueued
        self.running = threading.BoundedSemaphore(num_threads)
        self.lock = threading.Lock()
        self.queues: dict[tuple[int, str], list[_Pending]] = {}

    @classmethod
    def from_settings(cls, s: Settings) -> Batching:
        return cls(s.max_batch_size, s.batch_timeout_micros, s.max_enqueued_batches, s.num_batch_threads)

    def run(self, servable: Servable, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch_rows(inputs)
        if rows is None:
            return servable.run(signature, inputs)  # not batchable: no shared leading dimension
        job = _Pending(inputs, rows)
        key = (id(servable), signature)
        with self.lock:
            queue = self.queues.setdefault(key, [])
            if len(queue) >= self.max_enqueued * self.max_batch_size:
                raise Overloaded(f"the batch queue is full ({len(queue)} requests waiting); retry later")
            queue.append(job)
            leader = len(queue) == 1
        if leader:
            time.sleep(self.timeout)
            with self.lock:
                batch = self.queues.pop(key, [])
            with self.running:
                self._execute(servable, signature, batch)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _execute(self, servable: Servable, signature: str, batch: list[_Pending]) -> None:
        for start in range(0, len(batch), self.max_batch_size):
            chunk = batch[start : start + self.max_batch_size]
            try:
                out = servable.run(signature, join_batch([j.inputs for j in chunk]))
                for job, part in zip(chunk, split_batch(out, [j.size for j in chunk]), strict=True):
                    job.result = part
            except Exception as exc:
                for job in chunk:
                    job.error = exc
            for job in chunk:
                job.done.set()


@dataclass
class _Pending:
    inputs: dict[str, np.ndarray]
    size: int
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, np.ndarray] | None = None
    error: Exception | None = None
