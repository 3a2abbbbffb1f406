"""Runs a batch transform job against a running stack, as SageMaker's transform agent drives the container.

Each input object becomes `<output>/<key>.out`, written whole when the object is done, so a rerun skips what
is finished (resume). At most MaxConcurrentTransforms requests are in flight, across objects and within one
(pipelined, and written back in order). A request the model refuses (a 4xx or a handler's 500) is re-sent
record by record, so one bad record loses only itself: it goes to `<output>/<key>.failed` (JSON lines: the
line number, the status and the model's error) and the rest of the object is written, in order, without it
(SageMaker would fail the whole job instead). Transient failures (502-504, a dropped connection) are
retried InvocationsMaxRetries times; then, or on an answer that says the job itself is wrong (401, 403,
404: no such model), the job stops, and a rerun resumes it.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from server.storage import Location, StoredObject
from transform import records
from transform.job import TransformJob
from transform.records import Record, RecordError, Rejected

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
RETRY_STATUSES = (502, 503, 504)  # the stack busy or restarting: worth another try, never a record's fault
JOB_STATUSES = (401, 403, 404)  # no token, or no such model: every record would fail the same way


class EndpointError(RuntimeError):
    """The stack did not answer, after the job's retries."""


@dataclass
class Answer:
    status: int
    content_type: str | None
    body: bytes

    @property
    def error(self) -> str:
        try:
            return str(json.loads(self.body).get("error", ""))[:500] or self.body[:500].decode("utf-8", "replace")
        except (ValueError, AttributeError):
            return self.body[:500].decode("utf-8", "replace")


class Endpoint:
    """The stack's /invocations for one model, with the job's timeout and retries (urllib3: it ships with boto3)."""

    def __init__(self, url: str, model: str, timeout_s: float, retries: int, connections: int,
                 token: str | None = None) -> None:  # fmt: skip
        import urllib3

        self.url, self.model, self.retries = url.rstrip("/"), model, retries
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.slots = threading.BoundedSemaphore(connections)  # requests in flight, across every object
        self.http = urllib3.PoolManager(maxsize=connections, block=True, retries=False,
                                        timeout=urllib3.Timeout(connect=10, read=timeout_s))  # fmt: skip

    def execution_parameters(self) -> dict[str, Any]:
        """GET /execution-parameters (an empty dict from a container that does not serve it)."""
        answer = self._call("GET", "/execution-parameters", None, {})
        if answer.status == 404:
            return {}
        if answer.status != 200:
            raise EndpointError(f"{self.url}/execution-parameters: {answer.status} {answer.error}")
        try:
            params = json.loads(answer.body)
        except ValueError:
            params = None
        if not isinstance(params, dict):
            raise EndpointError(f"{self.url}/execution-parameters: not a JSON object: {answer.body[:200]!r}")
        return params

    def invoke(self, body: bytes, content_type: str | None, accept: str | None) -> Answer:
        headers = {CUSTOM_ATTRIBUTES: f"tfs-model-name={self.model}"}
        if content_type:
            headers["Content-Type"] = content_type
        if accept:
            headers["Accept"] = accept
        return self._call("POST", "/invocations", body, headers)

    def _call(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        import urllib3

        for attempt in range(self.retries + 1):
            try:
                with self.slots:
                    r = self.http.request(method, self.url + path, body=body, headers={**self.auth, **headers})
            except urllib3.exceptions.HTTPError as exc:
                last = str(exc)
            else:
                answer = Answer(r.status, r.headers.get("Content-Type"), r.data)
                if answer.status in JOB_STATUSES:
                    raise EndpointError(f"{self.url}{path}: {answer.status} {answer.error}")
                if answer.status not in RETRY_STATUSES:
                    return answer
                last = f"{answer.status} {answer.error}"
            if attempt < self.retries:
                time.sleep(min(0.5 * 2**attempt, 5.0))
        raise EndpointError(f"{self.url}{path}: {last}, after {self.retries} retries")


@dataclass
class Summary:
    objects: int = 0
    skipped: int = 0  # already done by an earlier run
    records: int = 0
    failed: int = 0
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, Any]:
        rate = self.records / self.seconds if self.seconds else 0.0
        return {"objects": self.objects, "skipped": self.skipped, "records": self.records, "failed": self.failed,
                "seconds": round(self.seconds, 2), "records_per_s": round(rate, 1)}  # fmt: skip


def shard(objects: list[StoredObject], index: int, count: int) -> list[StoredObject]:
    """The objects completion `index` of `count` takes (a Kubernetes Indexed Job): every count-th by sorted name,
    so the shards are disjoint, cover everything, and differ in size by at most one object."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is not in 0..{count - 1}")
    return sorted(objects, key=lambda o: o.name)[index::count]


def run(job: TransformJob, endpoint: Endpoint, shard_index: int = 0, shard_count: int = 1,
        on_progress: Callable[[str, int], None] | None = None) -> Summary:  # fmt: skip
    """Transform every input object (of this shard) not yet done; `on_progress(kind, n)` hears how many objects
    there are ("objects"), then of each finished object ("object") and record ("records")."""
    source, target = Location.parse(job.input), Location.parse(job.output)
    objects = shard(source.objects(), shard_index, shard_count)
    summary = Summary(objects=len(objects))
    started = time.monotonic()
    report = on_progress or (lambda kind, n: None)
    report("objects", len(objects))
    stop = threading.Event()

    def one(obj: StoredObject) -> None:
        if stop.is_set():
            return
        if target.exists(f"{obj.name}.out"):
            with summary.lock:
                summary.skipped += 1
            report("object", 1)
            return
        with source.open(obj) as stream:
            done, failures = transform_object(job, endpoint, stream, target, obj.name, lambda n: report("records", n))
        with summary.lock:
            summary.records += done
            summary.failed += len(failures)
        report("object", 1)

    pool = ThreadPoolExecutor(job.max_concurrent_transforms or 1)
    try:
        for future in [pool.submit(one, obj) for obj in objects]:
            future.result()  # an EndpointError or StorageError stops the job; a rerun resumes it
    finally:
        stop.set()  # the objects not started yet are not started
        pool.shutdown(wait=True, cancel_futures=True)
    summary.seconds = time.monotonic() - started
    return summary


def transform_object(job: TransformJob, endpoint: Endpoint, stream: IO[bytes], target: Location, name: str,
                     on_records: Callable[[int], None]) -> tuple[int, list[dict[str, Any]]]:  # fmt: skip
    """One object's records through the model into `<name>.out` (and `<name>.failed`); (records done, failures)."""
    kind = records.fmt(job.content_type)
    failures: list[dict[str, Any]] = []
    good = _diverting(records.filtered(records.read(stream, job.split_type), job.input_filter, kind), failures)
    max_bytes = int((job.max_payload_mb or 6) * 1024 * 1024)
    done = 0
    window = job.max_concurrent_transforms or 1
    pending: deque[Future] = deque()
    pool = ThreadPoolExecutor(window)  # this object's requests pipelined, written back in order

    def write(future: Future) -> None:
        nonlocal done
        answers = future.result()
        for record, piece, error in answers:
            if error is not None:
                failures.append({"line": record.line, **error})
                continue
            out.write(piece)
            done += 1
        on_records(len(answers))

    with tempfile.NamedTemporaryFile(prefix="sagestack-transform-", suffix=".out") as out:
        try:
            for batch in records.batches(good, max_bytes, job.batch_strategy == "MultiRecord"):
                pending.append(pool.submit(lambda b=batch: list(_answers(job, endpoint, b, kind))))
                if len(pending) >= window:
                    write(pending.popleft())
            while pending:
                write(pending.popleft())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        out.flush()
        if failures:  # before the .out, whose presence tells a rerun the object is done
            target.write_bytes(f"{name}.failed", b"".join(json.dumps(f).encode() + b"\n" for f in failures))
        target.write_file(f"{name}.out", Path(out.name), job.accept)
    return done, failures


def _diverting(items: Iterable[Record | Rejected], failures: list[dict[str, Any]]) -> Iterator[Record]:
    """The records, with the rejected ones noted in `failures` (as a client error: the record is at fault)."""
    for item in items:
        if isinstance(item, Rejected):
            failures.append({"line": item.line, "status": 400, "error": item.error})
        else:
            yield item


def _answers(job: TransformJob, endpoint: Endpoint, batch: list[Record],
             kind: str) -> Iterator[tuple[Record, bytes, dict[str, Any] | None]]:  # fmt: skip
    """(record, what to write for it, error) for each record of the request; a refused request of several
    records (a 4xx, a handler's 500, or an answer that does not split back per record) is sent again record by
    record. The stack busy or down past the retries is an EndpointError from `Endpoint`, which stops the job."""
    answer = endpoint.invoke(records.payload(batch), job.content_type, job.accept)
    if answer.status == 200:
        try:
            yield from _pieces(job, batch, answer, kind)
            return
        except (RecordError, ValueError) as exc:
            if len(batch) == 1:
                yield batch[0], b"", {"status": 200, "error": str(exc)}
                return
    if len(batch) > 1:
        for record in batch:
            yield from _answers(job, endpoint, [record], kind)
        return
    yield batch[0], b"", {"status": answer.status, "error": answer.error}


def _pieces(job: TransformJob, batch: list[Record], answer: Answer,
            kind: str) -> list[tuple[Record, bytes, None]]:  # fmt: skip
    # Pieces split from one answer keep a line each, as the answer had them, whatever the assembly.
    line_end = b"\n" if job.assemble_with == "Line" or len(batch) > 1 else b""
    per_record = job.join_source == "Input" or job.output_filter is not None or job.assemble_with == "Line"
    if not per_record:
        return [(batch[0], answer.body, None)] + [(r, b"", None) for r in batch[1:]]
    pieces = []
    for record, part in zip(batch, records.split_answer(answer.body, answer.content_type, len(batch)), strict=True):
        data, data_kind = part, records.fmt(answer.content_type)
        if job.join_source == "Input":
            data, data_kind = records.joined(record, part, kind, answer.content_type)
        pieces.append((record, records.output_filtered(data, data_kind, job.output_filter) + line_end, None))
    return pieces
