"""Scores German-credit loan applications given in the readable schema (SageMaker TFS handlers).

Rows come as text/csv (header optional; without one, fields follow the UCI column order) or as
JSON records. `prep` (code/lib/credit_risk/prep.py) is the flow exported at build time with its fitted state,
so serving applies exactly the training-time transform, in numpy alone (no pandas in the gateway). Each
row gets the probability of high risk and a label; bad rows get a 400 naming the row and column.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from credit_risk import prep
from handler_kit import (
    CSV,
    JSON,
    BadRequest,
    UnsupportedType,
    csv_response,
    csv_rows,
    json_body,
    json_response,
    negotiate,
)

RESPONSE_TYPES = (JSON, CSV)
CONFIG = json.loads((Path(__file__).with_name("config.json")).read_text())


def _csv_table(text: str) -> prep.Table:
    rows = csv_rows(text)
    columns = prep.INPUT_COLUMNS
    if set(rows[0]) <= {*columns, CONFIG["label"]} and len(set(rows[0])) == len(rows[0]):
        header, rows = rows[0], rows[1:]
    else:
        header = columns
    for n, row in enumerate(rows, 1):
        if len(row) != len(header):
            raise BadRequest(f"row {n} has {len(row)} fields, expected {len(header)} ({', '.join(header)})")
    if not rows:
        raise BadRequest("the CSV body has a header but no rows")
    return prep.Table({name: prep.as_column([row[i] for row in rows]) for i, name in enumerate(header)})


def _json_table(body: bytes, lines: bool) -> prep.Table:
    records = [json_body(x, "JSON line") for x in body.splitlines() if x.strip()] if lines else json_body(body)
    if isinstance(records, dict):
        records = records.get("instances", records.get("applications", [records]))
    if not isinstance(records, list) or not records:
        raise BadRequest("send a JSON list of applications (objects keyed by column name)")
    for n, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise BadRequest(f"row {n} is not an object keyed by column name")
    names = dict.fromkeys(name for record in records for name in record)  # every record's keys, first seen first
    return prep.Table({name: prep.as_column([r.get(name) for r in records]) for name in names})


def input_handler(data, context):
    negotiate(context.accept_header, RESPONSE_TYPES)  # an unanswerable Accept is a 406 before the model runs
    body = data.read()
    if not body.strip():
        raise BadRequest("the request body is empty")
    ctype = context.request_content_type
    if ctype == CSV:
        table = _csv_table(body.decode("utf-8", errors="replace"))
    elif ctype in ("application/json", "application/jsonlines"):
        table = _json_table(body, lines=ctype == "application/jsonlines")
    else:
        raise UnsupportedType(f"credit_risk takes text/csv or application/json, not {ctype}")
    features = prep.prepare(table, serving=True)
    return {"inputs": {"features": features.to_numpy(np.float32)}}


def output_handler(response, context):
    threshold = CONFIG["threshold"]
    probabilities = response.outputs["probability_high_risk"].reshape(-1)
    rows = [
        {"probability_high_risk": round(float(p), 6), "label": "high risk" if p >= threshold else "low risk"}
        for p in probabilities
    ]
    if negotiate(context.accept_header, RESPONSE_TYPES) == CSV:
        return csv_response([[r["probability_high_risk"], r["label"]] for r in rows])
    return json_response({"predictions": rows})


def _labels(answer: bytes, content_type: str) -> list[str]:
    if content_type.startswith(CSV):
        return [row[-1] for row in csv_rows(answer.decode())]
    return [row["label"] for row in json_body(answer)["predictions"]]


def agreement(production: bytes, shadow: bytes, content_type: str) -> float:
    """A shadow variant's decisions against production's: the share of applications given the same label."""
    want, got = _labels(production, content_type), _labels(shadow, content_type)
    if len(want) != len(got) or not want:
        return 0.0
    return sum(a == b for a, b in zip(want, got, strict=True)) / len(want)
