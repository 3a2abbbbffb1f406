"""A declarative prep flow (Data Wrangler style): load, validate, fit, preview, run and export.

A flow file lists steps; each is one transform of flow_ops. Fitting walks the steps in order and
records what each learned (category lists, scaler statistics), so the same fitted flow applies
exactly the training-time transform to new rows. `export` writes a standalone prep.py holding the
transforms' own source plus the fitted state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.credit_risk import flow_ops
from models.credit_risk.flow_ops import FlowError

DEFAULT_FLOW = Path(__file__).with_name("flow.json")
SCALE_METHODS = ("standard", "robust", "min-max", "max-abs")
# Parameters each step type needs.
REQUIRED = {
    "parse_as_type": ("columns",),
    "split_flatten": ("column", "delimiter", "into"),
    "rename": ("mapping",),
    "ordinal_encode": ("column",),
    "custom_map": ("column", "mapping"),
    "one_hot": ("columns",),
    "scale": ("columns", "method"),
    "drop": ("columns",),
    "move_to_first": ("column",),
}


@dataclass
class Flow:
    name: str
    source: str
    label: str
    target: str
    steps: list[dict[str, Any]]

    @classmethod
    def load(cls, path: Path = DEFAULT_FLOW) -> Flow:
        spec = json.loads(Path(path).read_text())
        steps = []
        for i, raw in enumerate(spec.get("steps", []), 1):
            kind = raw.get("type")
            if kind not in REQUIRED:
                raise FlowError(f"step {i}: unknown step type {kind!r} (known: {', '.join(REQUIRED)})")
            missing = [p for p in REQUIRED[kind] if p not in raw]
            if missing:
                raise FlowError(f"step {i} ({kind}): missing parameter(s) {missing}")
            if kind == "scale" and raw["method"] not in SCALE_METHODS:
                raise FlowError(f"step {i} (scale): method {raw['method']!r} must be one of {SCALE_METHODS}")
            steps.append({**raw, "index": i})
        return cls(spec.get("name", Path(path).stem), spec.get("source", ""), spec["label"], spec["target"], steps)

    def fit(self, frame: pd.DataFrame, upto: int | None = None) -> FittedFlow:
        """Fit steps 1..upto on `frame` (each on the output of the ones before)."""
        fitted = []
        table = flow_ops.Table.of(frame)
        for step in self.steps[:upto]:
            state = fit_step(table, step)
            fitted.append({"step": step, "state": state})
            table = flow_ops.TRANSFORMS[step["type"]](table, step, state)
        return FittedFlow(self, fitted, pd.DataFrame(table.data))

    def source_frame(self) -> pd.DataFrame:
        if self.source != "german_credit":
            raise FlowError(f"unknown data source {self.source!r}")
        from models.credit_risk.data import load

        return load()


@dataclass
class FittedFlow:
    flow: Flow
    fitted: list[dict[str, Any]]
    output: pd.DataFrame  # the fitting data after every fitted step

    def transform(self, frame: pd.DataFrame, serving: bool = False) -> pd.DataFrame:
        return pd.DataFrame(flow_ops.apply_steps(frame, self.fitted, serving=serving).data)

    def input_columns(self) -> list[str]:
        """The raw columns serving needs: everything the flow reads except the label."""
        from models.credit_risk.data import COLUMNS

        return [c for c in COLUMNS if c != self.flow.label]

    def state_json(self) -> str:
        return json.dumps(
            {"flow": self.flow.name, "label": self.flow.label, "target": self.flow.target, "fitted": self.fitted},
            indent=1,
        )

    def export(self, path: Path) -> Path:
        """A standalone prep.py: the transforms' source, the fitted state and a command line."""
        source = Path(flow_ops.__file__).read_text()
        header = f'"""Standalone prep for flow {self.flow.name!r}, exported by `sagestack flow export`.\n\n'
        header += "Run: python prep.py raw.csv out.csv  (or import it and call prepare(columns)).\n"
        header += '"""\n'
        body = source.split('"""', 2)[2]  # drop flow_ops' own docstring
        path.write_text(
            header + body + _EXPORT_TAIL.format(state=repr(self.state_json()), columns=self.input_columns())
        )
        return path


_EXPORT_TAIL = '''

# ---- fitted state and entry points (generated) ----
import json as _json

STATE = _json.loads({state})
INPUT_COLUMNS = {columns}


def prepare(data, serving: bool = False) -> Table:
    """The fitted flow on raw rows (a Table, a DataFrame or a mapping of column -> values); with serving=True
    the label steps are skipped."""
    table = Table.of(data)
    if serving:
        missing = [c for c in INPUT_COLUMNS if c not in table.columns]
        if missing:
            raise FlowError(f"missing column(s) {{', '.join(repr(c) for c in missing)}}")
        table = table.select(INPUT_COLUMNS)
    return apply_steps(table, STATE["fitted"], serving=serving)


if __name__ == "__main__":
    import csv
    import sys

    with open(sys.argv[1], newline="") as f:
        header, *rows = list(csv.reader(f))
    out = prepare(Table({{name: as_column([r[i] for r in rows]) for i, name in enumerate(header)}}))
    with open(sys.argv[2], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(out.columns)
        writer.writerows(zip(*(out[c].tolist() for c in out.columns), strict=True))
'''


def fit_step(data: Any, step: dict[str, Any]) -> dict[str, Any]:
    """What `step` learns from the rows (a Table, or a DataFrame)."""
    kind = step["type"]
    table = flow_ops.Table.of(data)
    if kind == "ordinal_encode":
        flow_ops._require(table, [step["column"]], step)
        cats = step.get("categories") or _categories(table[step["column"]])
        return {"categories": list(cats)}
    if kind == "one_hot":
        flow_ops._require(table, step["columns"], step)
        return {"categories": {c: _categories(table[c]) for c in step["columns"]}}
    if kind == "scale":
        flow_ops._require(table, step["columns"], step)
        return _scale_state(table, step)
    return {}


def _categories(values: np.ndarray) -> list[str]:
    """The distinct values, as sorted strings, missing ones (None, NaN) left out."""
    return sorted({str(v) for v in values.tolist() if v is not None and v == v})


def _scale_state(table: flow_ops.Table, step: dict[str, Any]) -> dict[str, Any]:
    center, spread = {}, {}
    for column in step["columns"]:
        values = table[column].astype("float64")
        method = step["method"]
        if method == "standard":
            c, s = values.mean(), values.std()
        elif method == "robust":
            q1, q2, q3 = np.percentile(values, [25, 50, 75])
            c, s = q2, q3 - q1
        elif method == "min-max":
            c, s = values.min(), values.max() - values.min()
        else:  # max-abs
            c, s = 0.0, np.abs(values).max()
        center[column], spread[column] = float(c), float(s)
    return {"center": center, "spread": spread}


def preview(flow_path: Path, steps: int, rows: int = 10) -> pd.DataFrame:
    flow = Flow.load(flow_path)
    return flow.fit(flow.source_frame(), upto=steps).output.head(rows)


def run(flow_path: Path, out: Path) -> pd.DataFrame:
    flow = Flow.load(flow_path)
    frame = flow.fit(flow.source_frame()).output
    if out.suffix == ".parquet":
        frame.to_parquet(out, index=False)
    elif out.suffix == ".csv":
        frame.to_csv(out, index=False)
    else:
        raise FlowError(f"--out must end in .csv or .parquet, not {out.suffix!r}")
    return frame


def export(flow_path: Path, out: Path) -> Path:
    flow = Flow.load(flow_path)
    return flow.fit(flow.source_frame()).export(out)
