"""ExplainerConfig.ClarifyExplainerConfig: SageMaker Clarify's online explanations, kernel SHAP per record.

As Clarify does, the model is a black box spoken to in its own content type: for each record the explainer makes
the synthetic records (each coalition of features, the others taken from each ShapBaseline row), sends them to the
same model in batches of MaxRecordCount through the gateway, reads each answer's score (ProbabilityIndex of a CSV
row, ProbabilityAttribute of a JSON object, else its first number) and fits the attributions (server.kernel_shap).
EnableExplanations (the config's, or the X-Amzn-SageMaker-Enable-Explanations header) is a JMESPath expression
evaluated on each record's own answer (a CSV row as an array, a JSON object as itself): false leaves it unexplained.

The answer is Clarify's: `{"version": "1.0", "predictions": {"content_type", "data"}, "explanations":
{"kernel_shap": [per record: null or [per feature: {"feature_header", "attributions": [{"attribution": [φ]}]}]]}}`;
sagestack adds `base_values` (per record, the score of the baseline), so base value + Σφ = the record's score.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from server import codecs, handlers, kernel_shap
from server.endpoint_config import Explainer as ExplainerConfig
from server.errors import ApiError, bad_request
from server.gateway import Gateway, Target
from server.handler_kit import csv_rows
from server.request_log import RequestTimings

CSV, JSON_LINES = "text/csv", "application/jsonlines"
CHUNK_RECORDS = 4096  # synthetic records a call when MaxRecordCount is not set
MAX_SYNTHETIC = 200_000  # synthetic records one request may need (about 95 records at Clarify's default for 20)


@dataclass(frozen=True)
class Explained:
    body: bytes  # Clarify's answer
    content_type: str
    prediction: bytes  # the model's own answer to the request, and how long it took (what a shadow compares)
    prediction_seconds: float


def _number(value: Any) -> Any:
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


class Explainer:
    def __init__(self, config: ExplainerConfig) -> None:
        self.config = config
        self.baseline = csv_rows(config.baseline)

    def explain(self, gateway: Gateway, target: Target, body: handlers.Body, content_type: str | None,
                accept: str | None, timings: RequestTimings, expression: str | None) -> Explained:  # fmt: skip
        ctype = codecs.media_type(content_type)
        if ctype not in (CSV, JSON_LINES):
            raise ApiError(415, f"explanations take {CSV} or {JSON_LINES} records, not {ctype!r}")
        records = self._records(handlers.whole(body), ctype)
        deadline = time.monotonic() + target.timeout  # one deadline for the request and all its synthetic calls
        began = time.perf_counter()
        answer, answer_type = self._call(gateway, target, self._encode(records, ctype), content_type, accept, timings,
                                         deadline)  # fmt: skip
        seconds = time.perf_counter() - began
        outputs = self._outputs(answer, answer_type, len(records))
        wanted = self._wanted(expression or self.config.enable, outputs)
        explained = [i for i, want in enumerate(wanted) if want]
        shap: list[Any] = [None] * len(records)
        bases: list[float | None] = [None] * len(records)
        if explained:
            m = len(records[0])
            rng = np.random.default_rng(self.config.seed)
            samples = kernel_shap.sample_count(m, self.config.samples)
            needed = len(explained) * (samples + 1) * len(self.baseline)
            if needed > MAX_SYNTHETIC:
                raise ApiError(413, f"explaining {len(explained)} records needs {needed:,} synthetic records; at "
                                    f"most {MAX_SYNTHETIC:,} a request (send fewer records, or lower "
                                    "NumberOfSamples)")  # fmt: skip
            plans = [kernel_shap.coalitions(m, samples, rng) for _ in explained]
            rows = [self._synthetic(records[i], masks) for i, (masks, _) in zip(explained, plans, strict=True)]
            scores = self._scores(gateway, target, [r for part in rows for r in part], ctype, content_type, accept,
                                  timings, deadline)  # fmt: skip
            at = 0
            n_base = len(self.baseline)
            for i, (masks, weights) in zip(explained, plans, strict=True):
                mine = self._link(scores[at : at + (len(masks) + 1) * n_base])
                at += (len(masks) + 1) * n_base
                base = float(mine[:n_base].mean())
                coalition = mine[n_base:].reshape(len(masks), n_base).mean(axis=1)
                prediction = float(self._link(np.array([self._score(outputs[i])]))[0])
                phi = kernel_shap.attributions(masks, weights, coalition, prediction, base)
                shap[i] = [self._feature(j, value) for j, value in enumerate(phi)]
                bases[i] = base
        explanations = {"kernel_shap": shap} if explained else {}
        predictions = {"content_type": answer_type, "data": answer.decode("utf-8", "replace")}
        out = {"version": "1.0", "predictions": predictions, "explanations": explanations, "base_values": bases}
        return Explained(json.dumps(out).encode(), codecs.JSON, answer, seconds)

    # ---- records ------------------------------------------------------------------------------------------------
    def _records(self, data: bytes, ctype: str) -> list[list[Any]]:
        headers = self.config.feature_headers
        if ctype == CSV:
            rows = csv_rows(data.decode("utf-8", "replace"))
            if rows and headers and tuple(rows[0]) == headers:
                rows = rows[1:]
        else:
            rows = [self._json_features(n, line) for n, line in enumerate(data.splitlines(), 1) if line.strip()]
        if not rows:
            raise bad_request("no records to explain")
        m = len(self.baseline[0])
        for n, row in enumerate(rows, 1):
            if len(row) != m:
                raise bad_request(f"record {n} has {len(row)} features; the ShapBaseline has {m}")
        return rows

    def _json_features(self, n: int, line: bytes) -> list[Any]:
        try:
            record = json.loads(line)
        except ValueError:
            raise bad_request(f"line {n} is not JSON") from None
        attribute, headers = self.config.features_attribute, self.config.feature_headers
        if attribute and isinstance(record, dict) and isinstance(record.get(attribute), list):
            return record[attribute]
        if headers and isinstance(record, dict) and all(h in record for h in headers):
            return [record[h] for h in headers]
        raise bad_request(f"line {n}: give the features as {attribute or 'FeaturesAttribute'!r} (a list) or as an "
                          "object with every FeatureHeaders key")  # fmt: skip

    def _synthetic(self, record: list[Any], masks: np.ndarray) -> list[list[Any]]:
        """The baseline rows, then for each coalition one row per baseline row (record where the mask is on)."""
        out = [list(b) for b in self.baseline]
        for mask in masks:
            out += [[x if on else b for x, b, on in zip(record, base, mask, strict=True)] for base in self.baseline]
        return out

    def _encode(self, rows: list[list[Any]], ctype: str) -> bytes:
        if ctype == CSV:
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(rows)
            return buf.getvalue().encode()
        attribute, headers = self.config.features_attribute, self.config.feature_headers
        if attribute:
            return b"".join(json.dumps({attribute: row}).encode() + b"\n" for row in rows)
        assert headers is not None
        return b"".join(json.dumps(dict(zip(headers, row, strict=True))).encode() + b"\n" for row in rows)

    # ---- the model ----------------------------------------------------------------------------------------------
    def _call(self, gateway: Gateway, target: Target, data: bytes, content_type: str | None, accept: str | None,
              timings: RequestTimings, deadline: float) -> tuple[bytes, str]:  # fmt: skip
        left = deadline - time.monotonic()
        if left <= 0:
            raise ApiError(504, f"explanations: past the {target.timeout:g} s deadline (lower NumberOfSamples)")
        reply, answer_type = gateway.invoke(dataclasses.replace(target, timeout=left), data, content_type, accept,
                                            timings)  # fmt: skip
        if not isinstance(reply, bytes):
            reply = b"".join(reply)
        return reply, answer_type

    def _scores(self, gateway: Gateway, target: Target, rows: list[list[Any]], ctype: str, content_type: str | None,
                accept: str | None, timings: RequestTimings, deadline: float) -> np.ndarray:  # fmt: skip
        chunk = self.config.max_record_count or CHUNK_RECORDS
        scores: list[float] = []
        for at in range(0, len(rows), chunk):
            part = rows[at : at + chunk]
            answer, answer_type = self._call(gateway, target, self._encode(part, ctype), content_type, accept, timings,
                                             deadline)  # fmt: skip
            scores += [self._score(o) for o in self._outputs(answer, answer_type, len(part))]
        return np.array(scores, dtype=np.float64)

    def _outputs(self, answer: bytes, answer_type: str, expected: int) -> list[Any]:
        media = codecs.media_type(answer_type)
        if media == CSV:
            outputs: list[Any] = [[_number(v) for v in row] for row in csv_rows(answer.decode("utf-8", "replace"))]
        elif media == JSON_LINES:
            outputs = [json.loads(line) for line in answer.splitlines() if line.strip()]
        else:
            doc = json.loads(answer)
            outputs = doc.get("predictions", []) if isinstance(doc, dict) else doc
        if len(outputs) != expected:
            raise ApiError(500, f"explanations: the model answered {len(outputs)} records for {expected}")
        return outputs

    def _score(self, output: Any) -> float:
        index, attribute = self.config.probability_index, self.config.probability_attribute
        try:
            if isinstance(output, dict):
                value = output[attribute] if attribute else next(v for v in output.values() if _is_number(v))
            elif isinstance(output, list):
                value = output[index or 0]
            else:
                value = output
            return float(value)
        except (KeyError, IndexError, StopIteration, TypeError, ValueError):
            raise ApiError(500, f"explanations: no score in the model's answer {output!r} (set ProbabilityIndex or "
                                "ProbabilityAttribute)") from None  # fmt: skip

    def _link(self, scores: np.ndarray) -> np.ndarray:
        if not self.config.use_logit:
            return scores
        p = np.clip(scores, 1e-7, 1 - 1e-7)
        return np.log(p / (1 - p))

    def _wanted(self, expression: str | None, outputs: list[Any]) -> list[bool]:
        if expression is None:
            return [True] * len(outputs)
        import jmespath
        from jmespath.exceptions import JMESPathError

        try:
            compiled = jmespath.compile(expression)
        except JMESPathError as exc:
            raise bad_request(f"X-Amzn-SageMaker-Enable-Explanations {expression!r} is not JMESPath: {exc}") from None
        out = []
        for output in outputs:
            try:
                value = compiled.search(output)
            except JMESPathError as exc:
                raise bad_request(f"EnableExplanations {expression!r} failed on {output!r}: {exc}") from None
            if not isinstance(value, bool):
                raise bad_request(f"EnableExplanations {expression!r} gave {value!r} on {output!r}, not true or false")
            out.append(value)
        return out

    def _feature(self, j: int, value: float) -> dict[str, Any]:
        item: dict[str, Any] = {"attributions": [{"attribution": [float(value)]}]}
        if self.config.feature_headers:
            item = {"feature_header": self.config.feature_headers[j], **item}
        return item


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
