"""DataCaptureConfig: a share of requests and answers written as SageMaker's capture records (JSON Lines).

Each record is `{"captureData": {"endpointInput": {...}, "endpointOutput": {...}}, "eventMetadata": {"eventId",
"inferenceId", "inferenceTime"}, "eventVersion": "0"}`, where input and output carry `observedContentType`, `mode`
(INPUT, OUTPUT), `data` and `encoding`: CSV or JSON for the config's CsvContentTypes and JsonContentTypes (as
text), BASE64 for everything else. Files land under `<DestinationS3Uri>/<endpoint>/<variant>/yyyy/mm/dd/hh/`
(an s3:// prefix, file:// or a folder: server.storage), named `<mm>-<ss>-<ms>-<uuid>.jsonl` as SageMaker names them.

A request only puts its bytes on a bounded buffer; one writer thread per gateway worker batches them into files.
Capture never blocks or fails a request: a full buffer drops the record, a failed write drops the batch, and both
are counted in `/metrics` (sagestack_capture_records_total).
"""

from __future__ import annotations

import atexit
import base64
import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from server import metrics
from server.endpoint_config import Capture
from server.storage import Location, StorageError

log = logging.getLogger("sagestack.capture")
BATCH_RECORDS = 500  # at most this many records a file
FLUSH_SECONDS = 1.0  # a record waits at most about this long to be written


@dataclass(frozen=True)
class Event:
    endpoint: str
    variant: str
    inference_id: str | None
    at: float  # time.time()
    input: bytes | None
    input_type: str
    output: bytes | None
    output_type: str


def encoding(content_type: str, capture: Capture) -> str:
    media = content_type.split(";")[0].strip().lower()
    if media in capture.csv_types:
        return "CSV"
    if media in capture.json_types:
        return "JSON"
    return "BASE64"


def _part(data: bytes, content_type: str, mode: str, capture: Capture) -> dict[str, str]:
    kind = encoding(content_type, capture)
    text = base64.b64encode(data).decode() if kind == "BASE64" else data.decode("utf-8", errors="replace")
    return {"observedContentType": content_type, "mode": mode, "data": text, "encoding": kind}


def record(event: Event, capture: Capture) -> dict:
    """One capture record in SageMaker's format."""
    data: dict[str, dict[str, str]] = {}
    if event.input is not None:
        data["endpointInput"] = _part(event.input, event.input_type, "INPUT", capture)
    if event.output is not None:
        data["endpointOutput"] = _part(event.output, event.output_type, "OUTPUT", capture)
    metadata = {"eventId": str(uuid.uuid4()), "inferenceTime": _iso(event.at)}
    if event.inference_id:
        metadata["inferenceId"] = event.inference_id
    return {"captureData": data, "eventMetadata": metadata, "eventVersion": "0"}


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # SageMaker writes whole seconds


def object_key(endpoint: str, variant: str, at: float) -> str:
    """`<endpoint>/<variant>/yyyy/mm/dd/hh/<mm>-<ss>-<ms>-<uuid>.jsonl`, below the destination."""
    when = datetime.fromtimestamp(at, UTC)
    return (f"{endpoint}/{variant}/{when:%Y/%m/%d/%H}/{when:%M-%S}-{when.microsecond // 1000:03d}-"
            f"{uuid.uuid4()}.jsonl")  # fmt: skip


class CaptureWriter:
    def __init__(self, capture: Capture, buffer_records: int, buffer_bytes: int) -> None:
        self.capture = capture
        self.destination = Location.parse(capture.destination)
        self.events: queue.Queue[Event] = queue.Queue(maxsize=buffer_records)
        self.buffer_bytes = buffer_bytes  # payload bytes held at most: large images fill it before the count does
        self.held = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def offer(self, event: Event) -> None:
        """Buffer the event, or drop it (counted) when the buffer is full. Never blocks."""
        self._start()
        size = len(event.input or b"") + len(event.output or b"")
        try:
            if self.held + size > self.buffer_bytes:
                raise queue.Full
            self.events.put_nowait(event)
            self.held += size
        except queue.Full:
            metrics.observe_capture(event.endpoint, event.variant, "dropped")

    def _start(self) -> None:
        """The writer starts in the gunicorn worker that first captures (after the fork); at exit it flushes."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
                self._thread.start()
                atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except Exception:  # the writer outlives any one bad batch
                log.exception("data capture: a flush failed")

    def flush(self) -> None:
        """Write what is buffered: one file per endpoint, variant and hour, BATCH_RECORDS at most each."""
        batches: dict[tuple[str, str, str], list[str]] = {}
        firsts: dict[tuple[str, str, str], float] = {}
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            self.held -= len(event.input or b"") + len(event.output or b"")
            hour = datetime.fromtimestamp(event.at, UTC).strftime("%Y%m%d%H")
            key = (event.endpoint, event.variant, hour)
            firsts.setdefault(key, event.at)
            batches.setdefault(key, []).append(json.dumps(record(event, self.capture), separators=(",", ":")))
        for key, lines in batches.items():
            for at in range(0, len(lines), BATCH_RECORDS):
                self._write(key[0], key[1], firsts[key], lines[at : at + BATCH_RECORDS])

    def _write(self, endpoint: str, variant: str, at: float, lines: list[str]) -> None:
        try:
            self.destination.write_bytes(object_key(endpoint, variant, at), ("\n".join(lines) + "\n").encode(),
                                         "application/jsonlines")  # fmt: skip
        except (OSError, StorageError) as exc:
            log.warning("data capture: %d records to %s lost: %s", len(lines), self.capture.destination, exc)
            metrics.observe_capture(endpoint, variant, "failed", len(lines))
            return
        metrics.observe_capture(endpoint, variant, "written", len(lines))


def read_records(where: str) -> list[dict]:
    """Every capture record under a location (a folder, file://, s3:// prefix), oldest first."""
    location = Location.parse(where)
    records = []
    for obj in location.objects():
        if not obj.name.endswith(".jsonl"):
            continue
        with location.open(obj) as stream:
            for n, line in enumerate(stream.read().splitlines(), 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except ValueError:
                        raise StorageError(f"{obj.key}: line {n} is not a capture record") from None
    return sorted(records, key=lambda r: r.get("eventMetadata", {}).get("inferenceTime", ""))


def dataset(records: list[dict], what: str) -> tuple[str, list[bytes]]:
    """The captured inputs (or outputs) again, ready to be scored: ("CSV", lines), ("JSON", JSON lines) or
    ("BASE64", one payload each). One encoding only: a capture of several types is read per type."""
    key = "endpointInput" if what == "input" else "endpointOutput"
    parts = [r["captureData"][key] for r in records if key in r.get("captureData", {})]
    kinds = sorted({p["encoding"] for p in parts})
    if len(kinds) > 1:
        raise ValueError(f"the captured {what}s mix encodings ({', '.join(kinds)}); read one content type's folder")
    if not parts:
        raise ValueError(f"no captured {what} in these records (CaptureOptions without {what.title()}?)")
    kind = kinds[0]
    if kind == "BASE64":
        return kind, [base64.b64decode(p["data"]) for p in parts]
    if kind == "JSON":
        return kind, [json.dumps(json.loads(p["data"]), separators=(",", ":")).encode() for p in parts]
    return kind, [line.encode() for p in parts for line in p["data"].splitlines() if line.strip()]
