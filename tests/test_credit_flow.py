"""The German credit data, the prep flow's steps on small frames, and the exported prep.py."""

from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest

from models.credit_risk import data, flow_ops
from models.credit_risk.flow import DEFAULT_FLOW, Flow, fit_step
from models.credit_risk.flow_ops import FlowError


def run_step(frame: pd.DataFrame, **step) -> flow_ops.Table:
    step = {"index": 1, **step}
    return flow_ops.TRANSFORMS[step["type"]](flow_ops.Table.of(frame), step, fit_step(frame, step))


def test_raw_data_and_readable_table():
    raw = data.load_raw()
    assert raw.shape == (1000, 21)
    table = data.readable(raw)
    assert list(table.columns) == data.COLUMNS
    assert table["risk"].value_counts().to_dict() == {"low risk": 700, "high risk": 300}
    assert set(table["savings"]) == {"little", "moderate", "high", "very high", "unknown"}
    assert table.loc[0, "status_sex"] == "male:single" and table.loc[0, "age"] == 67


def test_split_flatten_and_rename():
    frame = pd.DataFrame({"status_sex": ["male:single", "female:married"]})
    out = run_step(frame, type="split_flatten", column="status_sex", delimiter=":", into=["sex", "marital"])
    assert out["sex"].tolist() == ["male", "female"] and out["marital"].tolist() == ["single", "married"]
    with pytest.raises(FlowError, match="row 2, column 'status_sex'"):
        run_step(pd.DataFrame({"status_sex": ["a:b", "nocolon"]}), type="split_flatten", column="status_sex",
                 delimiter=":", into=["x", "y"])  # fmt: skip
    assert list(run_step(out, type="rename", mapping={"sex": "gender"}).columns) == [
        "status_sex",
        "gender",
        "marital",
    ]


def test_ordinal_and_custom_map():
    frame = pd.DataFrame({"risk": ["low risk", "high risk", "low risk"], "s": ["little", "unknown", "high"]})
    out = run_step(frame, type="ordinal_encode", column="risk", output="target", categories=["low risk", "high risk"])
    assert out["target"].tolist() == [0, 1, 0]
    out = run_step(frame, type="custom_map", column="s", mapping={"unknown": 0, "little": 1, "high": 3})
    assert out["s"].tolist() == [1, 0, 3]
    with pytest.raises(FlowError, match="row 3, column 's': unknown category 'high'"):
        run_step(frame, type="custom_map", column="s", mapping={"unknown": 0, "little": 1})


def test_one_hot_keeps_position_and_rejects_unknown():
    frame = pd.DataFrame({"a": [1, 2, 3], "housing": ["own", "rent", "own"], "z": [0, 0, 0]})
    step = {"index": 4, "type": "one_hot", "columns": ["housing"]}
    state = fit_step(frame, step)
    out = flow_ops.one_hot(flow_ops.Table.of(frame), step, state)
    assert list(out.columns) == ["a", "housing_own", "housing_rent", "z"]
    assert out["housing_own"].tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(FlowError, match="step 4 \\(one_hot\\): row 2, column 'housing': unknown category 'castle'"):
        flow_ops.one_hot(flow_ops.Table.of({"a": [1, 2], "housing": ["own", "castle"], "z": [0, 0]}), step, state)


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("standard", [-1.224745, 0.0, 1.224745]),
        ("min-max", [0.0, 0.5, 1.0]),
        ("max-abs", [1 / 3, 2 / 3, 1.0]),
        ("robust", [-1.0, 0.0, 1.0]),
    ],
)
def test_scale_methods(method, expected):
    out = run_step(pd.DataFrame({"x": [1.0, 2.0, 3.0]}), type="scale", method=method, columns=["x"])
    assert out["x"].round(6).tolist() == pytest.approx(expected, abs=1e-6)


def test_parse_drop_move():
    frame = pd.DataFrame({"amount": ["10", "2.5"], "b": [1, 2], "t": [0, 1]})
    assert run_step(frame, type="parse_as_type", columns=["amount"])["amount"].tolist() == [10.0, 2.5]
    with pytest.raises(FlowError, match="row 2, column 'amount': 'lots' is not a number"):
        run_step(pd.DataFrame({"amount": ["1", "lots"]}), type="parse_as_type", columns=["amount"])
    assert list(run_step(frame, type="drop", columns=["b"]).columns) == ["amount", "t"]
    assert list(run_step(frame, type="move_to_first", column="t").columns) == ["t", "amount", "b"]
    with pytest.raises(FlowError, match="step 1 \\(drop\\): missing column\\(s\\) 'nope'"):
        run_step(frame, type="drop", columns=["nope"])


def test_flow_file_errors_name_the_step(tmp_path):
    bad = tmp_path / "flow.json"
    bad.write_text(
        json.dumps({"label": "risk", "target": "t", "steps": [{"type": "drop", "columns": []}, {"type": "x"}]})
    )
    with pytest.raises(FlowError, match="step 2: unknown step type 'x'"):
        Flow.load(bad)
    bad.write_text(json.dumps({"label": "risk", "target": "t", "steps": [{"type": "one_hot"}]}))
    with pytest.raises(FlowError, match="step 1 \\(one_hot\\): missing parameter"):
        Flow.load(bad)


def test_rename_is_undone_in_error_messages():
    flow = Flow.load(DEFAULT_FLOW)
    fitted = flow.fit(flow.source_frame())
    rows = flow.source_frame().drop(columns=["risk"]).head(2).copy()
    rows.loc[1, "existingchecking"] = "a lot"
    with pytest.raises(FlowError, match="row 2, column 'existingchecking': unknown category 'a lot'"):
        fitted.transform(rows, serving=True)


def test_exported_prep_reproduces_the_flow_exactly(tmp_path):
    flow = Flow.load(DEFAULT_FLOW)
    frame = flow.source_frame()
    fitted = flow.fit(frame)
    path = fitted.export(tmp_path / "prep.py")
    spec = importlib.util.spec_from_file_location("exported_prep", path)
    prep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prep)
    pd.testing.assert_frame_equal(pd.DataFrame(prep.prepare(frame).data), fitted.output)
    serving = prep.prepare(frame.drop(columns=["risk"]), serving=True)
    pd.testing.assert_frame_equal(pd.DataFrame(serving.data), fitted.output.drop(columns=["target"]))
    with pytest.raises(prep.FlowError, match="missing column\\(s\\) 'housing'"):
        prep.prepare(frame.drop(columns=["risk", "housing"]), serving=True)
