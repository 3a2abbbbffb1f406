"""The records of a transform: split from an object, filtered, packed into requests, and the answers split back
per record, joined to their inputs and assembled, as SageMaker's batch transform does.

Formats follow the content types: text/csv records are lists of fields, application/json and
application/jsonlines records are JSON values; anything else (images, MIDI) is bytes, which the filters and
the join cannot look into. A model's answer for a request of N records is split back into N when it is
CSV or JSON lines (one per line), a JSON list, or TF Serving's {"predictions": [...]}; the answer to one
record is its whole body.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from server.storage import lines
from transform.jsonpath import select


class RecordError(ValueError):
    """One record (or one request's answer) the job cannot use; names what is wrong."""


@dataclass(frozen=True)
class Rejected:
    """A record the input filter could not take."""

    line: int
    error: str


@dataclass(frozen=True)
class Record:
    line: int  # 1-based line in its object (1 when the object is one record)
    source: bytes  # as read, for JoinSource Input
    data: bytes  # as sent, after the input filter


def fmt(content_type: str | None) -> str:
    base = (content_type or "").split(";")[0].strip().lower()
    if base == "text/csv":
        return "csv"
    if base in ("application/json", "application/jsonlines", "application/x-jsonlines"):
        return "json"
    return "raw"


def parse(data: bytes, kind: str) -> Any:
    try:
        if kind == "csv":
            return next(csv.reader([data.decode("utf-8")]), [])
        if kind == "json":
            return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise RecordError(f"not {kind.upper()}: {exc}") from None
    raise RecordError("a filter or a join needs text/csv or JSON records, not raw bytes")


def dump(value: Any, kind: str) -> bytes:
    if kind == "csv":
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(value if isinstance(value, list) else [value])
        return out.getvalue().encode()
    return json.dumps(value, separators=(",", ":")).encode()


def read(stream: IO[bytes], split_type: str) -> Iterator[tuple[int, bytes]]:
    """(line number, record) for each record of the object: each non-empty line, or the whole object."""
    if split_type == "None":
        yield 1, stream.read()
        return
    for n, line in enumerate(lines(stream), 1):
        if line.strip():
            yield n, line


def filtered(records: Iterable[tuple[int, bytes]], path: str | None, kind: str) -> Iterator[Record | Rejected]:
    """Records with the input filter applied; one the filter cannot take is Rejected, with its line."""
    for n, source in records:
        if path is None:
            yield Record(n, source, source)
            continue
        try:
            yield Record(n, source, dump(select(path, parse(source, kind)), kind))
        except ValueError as exc:
            yield Rejected(n, f"InputFilter {path}: {exc}")


def batches(records: Iterable[Record], max_bytes: int, multi: bool) -> Iterator[list[Record]]:
    """Requests: one record each, or (MultiRecord) as many lines as fit in max_bytes."""
    batch: list[Record] = []
    size = 0
    for record in records:
        if batch and (not multi or size + len(record.data) + 1 > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += len(record.data) + 1
    if batch:
        yield batch


def payload(batch: list[Record]) -> bytes:
    return b"\n".join(r.data for r in batch)


def split_answer(body: bytes, content_type: str | None, n: int) -> list[bytes]:
    """The answer to a request of n records, one part per record (in the answer's own format)."""
    kind = fmt(content_type)
    base = (content_type or "").split(";")[0].strip().lower()
    if n == 1:  # one record's answer is its whole body, however many lines it has, as SageMaker writes it
        return [body.rstrip(b"\r\n")] if kind != "raw" else [body]
    if kind == "csv" or base in ("application/jsonlines", "application/x-jsonlines"):
        parts = [line for line in lines(io.BytesIO(body)) if line.strip()]
    elif kind == "json":
        value = parse(body, "json")
        items = value.get("predictions") if isinstance(value, dict) else value
        parts = [dump(v, "json") for v in items] if isinstance(items, list) else [body]
    else:
        parts = [body]
    if len(parts) != n:
        raise RecordError(f"the answer holds {len(parts)} records for the {n} sent ({content_type})")
    return parts


def joined(record: Record, output: bytes, input_kind: str, output_type: str | None) -> tuple[bytes, str]:
    """JoinSource Input: the input record with its output (CSV: the output's fields appended; JSON: the input
    object with a "SageMakerOutput" member, or {"SageMakerInput", "SageMakerOutput"} for a non-object)."""
    out_kind = fmt(output_type)
    if input_kind == "csv":
        if out_kind != "csv":
            raise RecordError(
                f"JoinSource Input with CSV records needs a CSV answer (Accept text/csv), not {output_type}"
            )
        return dump(parse(record.source, "csv") + parse(output, "csv"), "csv"), "csv"
    source = parse(record.source, "json")
    answer = parse(output, out_kind) if out_kind != "raw" else output.decode("utf-8", "replace")
    if out_kind == "csv" and len(answer) == 1:
        answer = answer[0]
    value = {**source, "SageMakerOutput": answer} if isinstance(source, dict) else {
        "SageMakerInput": source, "SageMakerOutput": answer}  # fmt: skip
    return dump(value, "json"), "json"


def output_filtered(data: bytes, kind: str, path: str | None) -> bytes:
    return data if path is None else dump(select(path, parse(data, kind)), kind)
