"""YOLOv4's uncompiled path end to end: traced TorchScript in model.tar.gz, served by the TorchScript runtime."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from bench.payloads import image_bomb
from bench.stack import start_stack
from models.yolov4.boxes import detections, letterbox
from models.yolov4.build import export
from models.yolov4.coco import CLASSES
from models.yolov4.network import build

pytestmark = pytest.mark.stack
PHOTO = Path(importlib.util.find_spec("sklearn").origin).parent / "datasets" / "images" / "china.jpg"
SIZE = 160


@pytest.fixture(scope="module")
def yolo(tmp_path_factory):
    root = tmp_path_factory.mktemp("yolo")
    model = build(width=0.125, size=SIZE, seed=4)
    export(root / "model" / "yolov4", model, SIZE)
    stack = start_stack(root / "model", root / "run")
    yield model, stack
    assert stack.stop() == 0


def post(stack, body: bytes, ctype: str = "image/jpeg", attrs: str = "") -> requests.Response:
    headers = {"Content-Type": ctype, "X-Amzn-SageMaker-Custom-Attributes": f"tfs-model-name=yolov4,{attrs}"}
    return requests.post(stack.url + "/invocations", data=body, headers=headers, timeout=60)


def test_artifact_is_packed_like_the_seed(tmp_path):
    import tarfile

    version = export(tmp_path / "yolov4", build(width=0.125, size=SIZE), SIZE)
    with tarfile.open(version / "model.tar.gz") as tar:
        assert tar.getnames() == ["model.pth"]
    meta = json.loads((version / "compiled" / "metadata.json").read_text())
    assert meta["runtime"] == "torchscript" and meta["inputs"] == {"input0": [1, 3, SIZE, SIZE]}


def test_served_detections_match_the_model_in_process(yolo):
    model, stack = yolo
    r = post(stack, PHOTO.read_bytes(), attrs="conf_threshold=0.2,iou_threshold=0.5")
    assert r.status_code == 200, r.text
    served = r.json()
    tensor, frame = letterbox(Image.open(PHOTO), SIZE)
    with torch.no_grad():
        out = model(torch.from_numpy(tensor[None])).numpy()[0]
    classes = out[:, 5:].argmax(1)
    scores = out[:, 4] * out[:, 5:][np.arange(len(out)), classes]
    expected = detections(out[:, :4], scores, classes, frame, CLASSES, 0.2, 0.5, max_detections=100)
    assert len(served) == len(expected) > 0  # the random model proposes ~1000; 100 is the default cap
    for got, want in zip(served, expected, strict=True):
        assert got["class_id"] == want["class_id"] and got["class"] == CLASSES[got["class_id"]]
        assert got["score"] == pytest.approx(want["score"], abs=1e-3)
        assert got["box"] == pytest.approx(want["box"], abs=0.05)
        x1, y1, x2, y2 = got["box"]
        assert 0 <= x1 <= x2 <= 640 and 0 <= y1 <= y2 <= 427  # china.jpg is 640x427


def test_thresholds_and_errors(yolo):
    _, stack = yolo
    assert post(stack, PHOTO.read_bytes(), attrs="conf_threshold=1.0").json() == []
    assert len(post(stack, PHOTO.read_bytes(), attrs="conf_threshold=0.2,max_detections=5").json()) == 5
    r = post(stack, PHOTO.read_bytes(), attrs="max_detections=0")
    assert r.status_code == 400 and "max_detections must be between 1 and 10647" in r.json()["error"]
    r = post(stack, PHOTO.read_bytes(), attrs="conf_threshold=high")
    assert r.status_code == 400 and "conf_threshold must be a number" in r.json()["error"]
    r = post(stack, b"\xff\xd8\xff\xe0 not really a jpeg")
    assert r.status_code == 400 and "not a readable image" in r.json()["error"]
    r = post(stack, b"hello", ctype="text/csv")
    assert r.status_code == 415
    r = post(stack, image_bomb(30000, 30000), ctype="image/png")  # a decompression bomb: refused unread
    assert r.status_code == 413 and "at most 40,000,000 pixels" in r.json()["error"], r.text
    r = post(stack, image_bomb(8000, 6000), ctype="image/png")  # under Pillow's own limit, over ours
    assert r.status_code == 413 and "8000x6000 pixels" in r.json()["error"], r.text
    assert post(stack, PHOTO.read_bytes()).status_code == 200


def test_a_shadows_detections_are_matched_to_productions_by_iou_and_class(yolo):
    """The handler's `agreement`, what the shadow variant is judged by: F1 of IoU >= 0.5 matches of one class."""
    from server import handlers

    _, stack = yolo
    code = handlers.load("yolov4-agreement", Path(stack.routes()["models"]["yolov4"]["code_dir"]))
    found = [{"box": [10, 10, 50, 50], "score": 0.9, "class_id": 1, "class": "bicycle"},
             {"box": [100, 100, 150, 160], "score": 0.8, "class_id": 2, "class": "car"}]  # fmt: skip
    shifted = [{"box": [12, 10, 52, 50], "score": 0.7, "class_id": 1, "class": "bicycle"}]  # one kept, one missed
    other_class = [{**found[0], "class_id": 3}]

    def agree(production: list[dict], shadow: list[dict]) -> float:
        return code.agreement(json.dumps(production).encode(), json.dumps(shadow).encode(), "application/json")

    assert agree(found, found) == 1.0
    assert agree(found, shifted) == pytest.approx(2 / 3)
    assert agree(found[:1], other_class) == 0.0
