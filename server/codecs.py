"""Request bodies to TF Serving requests, and results to the client's Accept type.

Content types follow the SageMaker TFS container: application/json (`instances`, `inputs` or
`examples` pass through; a plain list becomes `instances`), application/jsonlines (one instance
a line) and text/csv (one instance a line). application/x-npy carries one binary tensor. Other
types reach a model only through its own handler.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np

from server.handler_kit import (
    CSV,
    JSON,
    BadRequest,
    NotAcceptable,
    UnsupportedType,
    csv_rows,
    json_body,
    media_type,
)
from server.handler_kit import negotiate as negotiate_among

JSONLINES = "application/jsonlines"
NPY = "application/x-npy"
DECODABLE = (JSON, JSONLINES, CSV, NPY)
ENCODABLE = (JSON, JSONLINES, CSV)
__all__ = ["DecodeError", "NotAcceptable", "UnsupportedType", "decode", "encode", "media_type", "negotiate"]
# Types our model families accept through their handlers.
HANDLER_TYPES = (
    "application/x-image",
    "image/jpeg",
    "image/png",
    "audio/midi",
    "audio/x-midi",
    "application/octet-stream",
)


class DecodeError(BadRequest):
    """The body cannot be read as its content type says (HTTP 400)."""


def decode(body: bytes, content_type: str) -> dict[str, Any]:
    """Body -> a TF Serving REST request dict (`instances`, `inputs` or `examples`)."""
    if not body.strip():
        raise DecodeError("the request body is empty")
    if content_type == JSON:
        data = _json(body, "JSON")
        if isinstance(data, list):
            return {"instances": data}
        if isinstance(data, dict) and any(k in data for k in ("instances", "inputs", "examples")):
            return data
        raise DecodeError("a JSON body must be a list or an object with 'instances', 'inputs' or 'examples'")
    if content_type == JSONLINES:
        lines = [line for line in body.splitlines() if line.strip()]
        return {"instances": [_json(line, f"JSON on line {n}") for n, line in enumerate(lines, 1)]}
    if content_type == CSV:
        return {"instances": _csv_rows(body)}
    if content_type == NPY:
        try:
            return {"inputs": np.load(io.BytesIO(body), allow_pickle=False)}
        except (ValueError, OSError, EOFError) as exc:
            raise DecodeError(f"the body is not a valid .npy array: {exc}") from None
    raise UnsupportedType(f"unsupported content type '{content_type}'; use one of {', '.join(DECODABLE)}")


def _json(data: bytes, what: str) -> Any:
    try:
        return json_body(data, what)
    except BadRequest as exc:
        raise DecodeError(str(exc)) from None


def _csv_rows(body: bytes) -> list[Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("the CSV body is not UTF-8 text") from None
    try:
        parsed = csv_rows(text)
    except BadRequest as exc:
        raise DecodeError(str(exc)) from None
    rows = []
    for n, row in enumerate(parsed, 1):
        try:
            values = [_number(cell) for cell in row]
        except ValueError:
            raise DecodeError(f"CSV line {n} has a non-numeric value: {row}") from None
        rows.append(values[0] if len(values) == 1 else values)
    return rows


def _number(cell: str) -> float | int:
    cell = cell.strip()
    try:
        return int(cell)
    except ValueError:
        return float(cell)


def negotiate(accept: str | None) -> str:
    """The first type in Accept that we can produce (JSON for none or a wildcard)."""
    return negotiate_among(accept, ENCODABLE, JSON)


def encode(result: dict[str, Any], accept: str) -> tuple[bytes, str]:
    """A TF Serving result dict ({"predictions": [...]}, {"outputs": ...} or {"results": [...]})."""
    if accept == JSON:
        return json.dumps(result, separators=(",", ":")).encode(), JSON
    rows = next(iter(result.values()))
    if not isinstance(rows, list):
        rows = [rows]
    if accept == JSONLINES:
        return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode(), JSONLINES
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow(_flatten(row))
    return out.getvalue().encode(), CSV


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flatten(v)]
    if isinstance(value, list):
        return [x for v in value for x in _flatten(v)]
    return [value]
