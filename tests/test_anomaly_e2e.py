"""anomaly end to end: a tiny data set, fast training with a region of interest, served by the stack."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw

from bench.stack import start_stack
from models.anomaly import model, preprocess
from models.anomaly.generate import make_dataset, render
from models.anomaly.train import train

pytestmark = pytest.mark.stack
ROI = [16, 16, 224, 224]
ATTRS = {"X-Amzn-SageMaker-Custom-Attributes": "tfs-model-name=anomaly"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("anomaly")
    make_dataset(root / "data", 20, 10, seed=3)
    metrics = train(root / "data", root / "model" / "anomaly", root / "reports", ROI, geometry=model.Geometry.fast())
    return root, metrics


@pytest.fixture(scope="module")
def anomaly_stack(trained):
    root, _ = trained
    stack = start_stack(root / "model", root / "run")
    yield stack
    assert stack.stop() == 0


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def detect(stack, body: bytes, ctype: str = "image/png") -> requests.Response:
    return requests.post(stack.url + "/invocations", data=body, headers={**ATTRS, "Content-Type": ctype}, timeout=60)


def test_metrics_file_and_gallery(trained):
    root, _ = trained
    on_disk = json.loads((root / "reports" / "metrics.json").read_text())
    assert on_disk.keys() >= {"precision", "recall", "f1", "auroc", "per_kind", "n_train", "n_test"}
    assert on_disk["n_train"] == {"normal": 16, "anomaly": 8} and on_disk["n_test"] == {"normal": 4, "anomaly": 2}
    assert on_disk["roi"] == ROI
    assert (root / "reports" / "gallery.png").stat().st_size > 10_000
    code = root / "model" / "anomaly" / "code"
    shipped = (code / "lib" / "anomaly" / "preprocess.py").read_text()
    assert shipped == Path(preprocess.__file__).read_text()  # serving crops the ROI with the training code
    assert json.loads((code / "config.json").read_text())["versions"]["1"]["roi"] == ROI


def test_normal_images_score_below_threshold(anomaly_stack):
    rng = np.random.default_rng(1234)
    for _ in range(3):
        img, _ = render(rng, None)
        r = detect(anomaly_stack, png(img))
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["IsAnomalous"] is False and out["AnomalyScore"] < out["Threshold"]
        assert 0.5 <= out["Confidence"] <= 1.0 and out["BoundingBox"] is None


def test_obvious_defects_score_above_threshold(anomaly_stack):
    img, _ = render(np.random.default_rng(99), None)
    ImageDraw.Draw(img).line([(60, 200), (140, 190)], fill=(240, 240, 240), width=4)  # inside the ROI
    r = detect(anomaly_stack, png(img))
    out = r.json()
    assert out["IsAnomalous"] is True and out["AnomalyScore"] > out["Threshold"]
    box = out["BoundingBox"]
    assert (
        box["Left"] < 140 and box["Left"] + box["Width"] > 60 and box["Top"] < 200 and box["Top"] + box["Height"] > 190
    )
    mask = Image.open(io.BytesIO(base64.b64decode(out["AnomalyMask"])))
    assert np.asarray(mask).max() == 255


def test_defect_outside_the_roi_is_ignored(anomaly_stack):
    img, _ = render(np.random.default_rng(7), None)
    ImageDraw.Draw(img).line([(2, 40), (10, 220)], fill=(250, 250, 250), width=5)  # in the 16 px margin only
    out = detect(anomaly_stack, png(img)).json()
    assert out["IsAnomalous"] is False


def test_jpeg_and_x_image_are_accepted(anomaly_stack):
    img, _ = render(np.random.default_rng(5), None)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    for ctype in ("image/jpeg", "application/x-image"):
        assert detect(anomaly_stack, buf.getvalue(), ctype).status_code == 200


@pytest.mark.parametrize(
    ("body", "ctype", "status", "needle"),
    [
        (b"", "image/png", 400, "empty"),
        (b"\x89PNG\r\n\x1a\nthis is not really a png", "image/png", 400, "not a readable"),
        (None, "image/png", 400, "takes 256x256"),
        (b"[1]", "application/json", 415, "anomaly takes image/png"),
    ],
)
def test_bad_images_get_clear_errors(anomaly_stack, body, ctype, status, needle):
    if body is None:
        body = png(Image.new("RGB", (100, 80), (0, 90, 40)))
    r = detect(anomaly_stack, body, ctype)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]


def test_a_tensor_of_another_size_is_a_400_and_the_model_server_lives_on(anomaly_stack):
    """The graph only takes the size it learnt: a 1x1 image once made a TF kernel divide by zero (SIGFPE)."""
    url = f"{anomaly_stack.url}/v1/models/anomaly:predict"
    r = requests.post(url, json={"instances": [[[[0.0, 0.0, 0.0]]]]}, timeout=60)
    assert r.status_code == 400 and "256" in r.json()["error"], r.text
    v2 = {"inputs": [{"name": "images", "shape": [1, 1, 1, 3], "datatype": "FP32", "data": [0.0, 0.0, 0.0]}]}
    r = requests.post(f"{anomaly_stack.url}/v2/models/anomaly/infer", json=v2, timeout=60)
    assert r.status_code == 400 and "256" in r.json()["error"], r.text
    normal = png(render(np.random.default_rng(5), None)[0])
    assert detect(anomaly_stack, normal).status_code == 200
