"""credit_risk end to end: build (data -> flow -> bias -> quick model -> train -> export), then serve."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import requests

from bench.stack import start_stack
from models.credit_risk.build import build
from models.credit_risk.data import load

pytestmark = pytest.mark.stack
ATTRS = {"X-Amzn-SageMaker-Custom-Attributes": "tfs-model-name=credit_risk"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("credit")
    report = build(root / "model" / "credit_risk", root / "reports")
    return root, report


@pytest.fixture(scope="module")
def credit_stack(built):
    root, _ = built
    stack = start_stack(root / "model", root / "run", SAGEMAKER_GUNICORN_WORKERS="2")
    yield stack
    assert stack.stop() == 0


@pytest.fixture(scope="module")
def applications():
    return load().drop(columns=["risk"]).head(3)


def expected_probabilities(root, frame) -> np.ndarray:
    """The model computed here, in-process: exported prep.py, then the SavedModel."""
    import tensorflow as tf

    code = root / "model" / "credit_risk" / "code"
    spec = importlib.util.spec_from_file_location("credit_prep", code / "lib" / "credit_risk" / "prep.py")
    prep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prep)
    features = prep.prepare(frame, serving=True).to_numpy(np.float32)
    fn = tf.saved_model.load(str(root / "model" / "credit_risk" / "1")).signatures["serving_default"]
    return fn(features=tf.constant(features))["probability_high_risk"].numpy()


def test_report_shape_and_quality(built):
    root, _ = built
    on_disk = json.loads((root / "reports" / "report.json").read_text())
    assert on_disk["bias"]["sex"].keys() >= {"CI", "DPL", "JS", "KL", "KS"}
    assert on_disk["bias"]["sex"]["CI"] == pytest.approx(0.38)  # 690 male, 310 female
    assert 0 < on_disk["quick_model"]["f1"] <= 1 and on_disk["quick_model"]["importance"]
    assert on_disk["model"]["roc_auc"] >= 0.78
    assert 0 < on_disk["model"]["f1"] <= 1
    for name in (
        "report.html",
        "target_histogram.png",
        "age_by_risk.png",
        "bias_sex.png",
        "quick_model_importance.png",
    ):
        assert (root / "reports" / name).stat().st_size > 1000


def _post(stack, body, ctype, accept="application/json"):
    headers = {**ATTRS, "Content-Type": ctype, "Accept": accept}
    return requests.post(stack.url + "/invocations", data=body, headers=headers, timeout=30)


def test_csv_with_and_without_header_and_json_agree(built, credit_stack, applications):
    root, _ = built
    expected = expected_probabilities(root, applications)
    with_header = _post(credit_stack, applications.to_csv(index=False), "text/csv")
    without = _post(credit_stack, applications.to_csv(index=False, header=False), "text/csv")
    as_json = _post(credit_stack, applications.to_json(orient="records"), "application/json")
    for r in (with_header, without, as_json):
        assert r.status_code == 200, r.text
        predictions = r.json()["predictions"]
        assert [p["probability_high_risk"] for p in predictions] == pytest.approx(expected.tolist(), abs=1e-5)
        assert all(p["label"] in ("low risk", "high risk") for p in predictions)


def test_csv_accept(credit_stack, applications):
    r = _post(credit_stack, applications.to_csv(index=False), "text/csv", accept="text/csv")
    assert r.status_code == 200
    lines = r.text.strip().splitlines()
    assert len(lines) == 3 and all(line.split(",")[1] in ("low risk", "high risk") for line in lines)


def test_bad_rows_name_row_and_column(credit_stack, applications):
    bad = applications.copy()
    bad.loc[1, "housing"] = "castle"
    r = _post(credit_stack, bad.to_csv(index=False), "text/csv")
    assert r.status_code == 400
    assert "row 2, column 'housing': unknown category 'castle'" in r.json()["error"]

    bad = applications.copy().astype(object)
    bad.loc[2, "creditamount"] = "lots"
    r = _post(credit_stack, bad.to_json(orient="records"), "application/json")
    assert r.status_code == 400
    assert "row 3, column 'creditamount': 'lots' is not a number" in r.json()["error"]

    r = _post(credit_stack, applications.drop(columns=["age"]).to_csv(index=False), "text/csv")
    assert r.status_code == 400
    assert "missing column(s) 'age'" in r.json()["error"]
    r = _post(credit_stack, applications.drop(columns=["age"]).to_csv(index=False, header=False), "text/csv")
    assert r.status_code == 400
    assert "row 1 has 19 fields" in r.json()["error"]
    r = _post(credit_stack, applications.drop(columns=["age"]).to_json(orient="records"), "application/json")
    assert r.status_code == 400
    assert "missing column(s) 'age'" in r.json()["error"]
    records = json.loads(applications.to_json(orient="records"))
    records[0]["housing"], records[1]["duration"] = ["own"], 10**400  # a list for a category, a number past float
    r = _post(credit_stack, json.dumps(records[:1]), "application/json")
    assert r.status_code == 400 and "row 1, column 'housing': unknown category ['own']" in r.json()["error"]
    r = _post(credit_stack, json.dumps(records[1:2]), "application/json")
    assert r.status_code == 400 and "column 'duration'" in r.json()["error"]


@pytest.mark.parametrize(
    ("body", "ctype", "status", "needle"),
    [
        ("", "text/csv", 400, "empty"),
        ("{oops", "application/json", 400, "malformed JSON"),
        ('"just text"', "application/json", 400, "JSON list of applications"),
        ("abc", "image/png", 415, "credit_risk takes text/csv or application/json"),
    ],
)
def test_bad_bodies(credit_stack, body, ctype, status, needle):
    r = _post(credit_stack, body, ctype)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]


def test_the_gateway_scores_records_without_pandas(credit_stack, applications):
    """The exported prep runs in numpy alone: after scoring, no gunicorn worker has pandas' libraries mapped."""
    psutil = pytest.importorskip("psutil")
    for body in (applications.to_csv(index=False), json.dumps(applications.to_dict(orient="records"))):
        for _ in range(4):  # both workers, most likely
            assert _post(credit_stack, body, "text/csv" if body[0] != "[" else "application/json").status_code == 200
    master = next(p for p in psutil.Process(credit_stack.proc.pid).children() if p.cmdline()[1:3] == ["-m", "gunicorn"])
    for worker in master.children():
        mapped = {m.path for m in worker.memory_maps()}
        assert not [p for p in mapped if "/pandas/" in p], worker.pid
        assert [p for p in mapped if "/numpy/" in p], worker.pid  # the check does see a worker's libraries


# ---- online explanations (ExplainerConfig) and the shadow's agreement ----------------------------------------------
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def explained_stack(built):
    root, _ = built
    stack = start_stack(root / "model", root / "run-explained",
                        SAGESTACK_ENDPOINT_CONFIG=str(EXAMPLES / "credit_risk_explained.json"))  # fmt: skip
    yield stack
    assert stack.stop() == 0


def test_explanations_are_clarifys_format_in_the_readable_columns_and_add_up_to_the_prediction(
    explained_stack, applications
):
    body = applications.to_csv(index=False, header=False).encode()
    headers = {"Content-Type": "text/csv", "Accept": "text/csv"}
    r = requests.post(f"{explained_stack.url}/invocations", data=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["version"] == "1.0" and answer["predictions"]["content_type"] == "text/csv"
    probabilities = [float(line.split(",")[0]) for line in answer["predictions"]["data"].splitlines()]
    records = answer["explanations"]["kernel_shap"]
    assert len(records) == len(probabilities) == 3
    for record, base, p in zip(records, answer["base_values"], probabilities, strict=True):
        assert [f["feature_header"] for f in record] == list(applications.columns)
        total = sum(f["attributions"][0]["attribution"][0] for f in record)
        assert base + total == pytest.approx(p, abs=1e-9)  # additivity: base value + attributions = prediction
    # the header's JMESPath, on each record's own answer ([probability, label]), picks which to explain
    pick = {**headers, "X-Amzn-SageMaker-Enable-Explanations": "[1]=='high risk'"}
    r = requests.post(f"{explained_stack.url}/invocations", data=body, headers=pick, timeout=60)
    labels = [line.split(",")[1] for line in r.json()["predictions"]["data"].splitlines()]
    explained = [rec is not None for rec in r.json()["explanations"].get("kernel_shap", [None] * 3)]
    assert explained == [label == "high risk" for label in labels]
    with_header = applications.to_csv(index=False).encode()  # a header row of the FeatureHeaders is not a record
    r = requests.post(f"{explained_stack.url}/invocations", data=with_header, headers=headers, timeout=60)
    assert r.status_code == 200 and len(r.json()["explanations"]["kernel_shap"]) == 3
    many = load().drop(columns=["risk"]).head(400).to_csv(index=False, header=False).encode()
    r = requests.post(f"{explained_stack.url}/invocations", data=many, headers=headers, timeout=60)
    assert r.status_code == 413 and "synthetic records" in r.json()["error"]
    off = requests.post(f"{explained_stack.url}/invocations", data=body,
                        headers={**headers, "X-Amzn-SageMaker-Enable-Explanations": "`false`"}, timeout=60)  # fmt: skip
    assert off.json()["explanations"] == {}


@pytest.mark.parametrize(
    ("headers", "status", "needle"),
    [
        ({"Content-Type": "application/json"}, 415, "text/csv"),
        ({"Content-Type": "text/csv", "X-Amzn-SageMaker-Enable-Explanations": "[0"}, 400, "JMESPath"),
        ({"Content-Type": "text/csv", "X-Amzn-SageMaker-Enable-Explanations": "[0]"}, 400, "true or false"),
        ({"Content-Type": "text/csv", "X-Amzn-SageMaker-Enable-Explanations": "abs(@) > `1`"}, 400, "failed on"),
    ],
)
def test_explanation_mistakes_are_named(explained_stack, applications, headers, status, needle):
    body = applications.head(1).to_csv(index=False, header=False).encode()
    r = requests.post(f"{explained_stack.url}/invocations", data=body, headers=headers, timeout=60)
    assert r.status_code == status and needle in r.json()["error"]


def test_a_shadow_of_the_same_model_agrees_on_every_decision(built):
    from server import handlers

    root, _ = built
    code = handlers.load("credit_risk", root / "model" / "credit_risk" / "code")
    csv_a, csv_b = b"0.1,low risk\n0.7,high risk\n", b"0.2,low risk\n0.4,low risk\n"
    assert code.agreement(csv_a, csv_a, "text/csv") == 1.0
    assert code.agreement(csv_a, csv_b, "text/csv") == 0.5
    one = json.dumps({"predictions": [{"probability_high_risk": 0.7, "label": "high risk"}]}).encode()
    assert code.agreement(one, one, "application/json") == 1.0
