"""The Lookout-style project API (/projects) against a real stack: a data set of uploads cropped to the ROI, a
training job in the background, and the trained version started as the next version of the served anomaly model,
then stopped, without a restart. Every client mistake is a 4xx naming the problem."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import requests
from PIL import Image

from bench.stack import start_stack
from models.anomaly import model
from models.anomaly.generate import make_dataset
from models.anomaly.train import auroc, train

pytestmark = pytest.mark.stack
ROI = [16, 16, 224, 224]
PNG = {"Content-Type": "image/png"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("projects")
    make_dataset(root / "served_data", 20, 10, seed=3)
    train(root / "served_data", root / "model" / "anomaly", root / "reports", ROI, geometry=model.Geometry.fast())
    make_dataset(root / "uploads", 20, 10, seed=11)
    return root


@pytest.fixture(scope="module")
def stack(root):
    stack = start_stack(root / "model", root / "run", SAGESTACK_PROJECTS_DIR=str(root / "projects"))
    yield stack
    assert stack.stop() == 0


def post(stack, path: str, **kwargs) -> requests.Response:
    return requests.post(stack.url + path, timeout=60, **kwargs)


def uploads(root, label: str) -> list[tuple[bytes, str | None]]:
    kinds = json.loads((root / "uploads" / "manifest.json").read_text())["images"]
    return [(f.read_bytes(), kinds.get(f"{label}/{f.name}", {}).get("kind"))
            for f in sorted((root / "uploads" / label).iterdir())]  # fmt: skip


def detect(stack, body: bytes, attrs: str) -> requests.Response:
    headers = {**PNG, "X-Amzn-SageMaker-Custom-Attributes": attrs}
    return post(stack, "/invocations", data=body, headers=headers)


def wait_trained(stack, project: str, version: str, timeout: float = 300) -> dict:
    deadline, seen = time.monotonic() + timeout, set()
    while time.monotonic() < deadline:
        described = requests.get(f"{stack.url}/projects/{project}/models/{version}", timeout=10).json()
        described = described["ModelDescription"]
        if described["Status"] != "TRAINING":
            return described | {"phases": seen}
        seen.add(described["Progress"]["Phase"])
        time.sleep(0.5)
    pytest.fail(f"{project} version {version} still training after {timeout:.0f} s")


def test_a_project_trains_in_the_background_and_serves_as_a_new_version_without_a_restart(stack, root):
    assert post(stack, "/projects", json={"ProjectName": "boards"}).status_code == 201
    assert requests.put(stack.url + "/projects/boards/roi", json={"Roi": ROI}, timeout=10).json()["Roi"] == ROI
    for label in ("normal", "anomaly"):
        for body, kind in uploads(root, label):
            r = post(stack, f"/projects/boards/images/{label}", data=body, headers=PNG, params={"kind": kind})
            assert r.status_code == 201, r.text
    described = requests.get(stack.url + "/projects/boards", timeout=10).json()
    assert described["Dataset"]["Counts"] == {"normal": 20, "anomaly": 10} and described["Dataset"]["ReadyToTrain"]
    assert described["ImageSize"] == [256, 256] and sum(described["Dataset"]["Kinds"].values()) == 10
    last = described["Dataset"]["Last"]
    saved = requests.get(f"{stack.url}/projects/boards/images/{last['Label']}/{last['File']}", timeout=10)
    assert Image.open(io.BytesIO(saved.content)).size == (224, 224)  # cropped to the ROI as it was added

    started = post(stack, "/projects/boards/models", json={"Fast": True})
    assert started.status_code == 202 and started.json()["ModelMetadata"]["Status"] == "TRAINING"
    again = post(stack, "/projects/boards/models", json={"Fast": True})
    assert again.status_code == 409 and "already training version 1" in again.json()["error"]
    trained = wait_trained(stack, "boards", "1")
    assert trained["Status"] == "TRAINED", trained
    assert trained["Evaluation"]["n_test"] == {"normal": 4, "anomaly": 2}  # the auto-split: a fifth of each label
    assert trained["Performance"]["F1Score"] >= 0.5 and trained["Evaluation"]["per_kind"]
    assert requests.get(stack.url + "/projects/boards/models/1/gallery.png", timeout=10).content[:4] == b"\x89PNG"

    # A version that cannot load is not served, and leaves the model as it was.
    saved = root / "projects" / "boards" / "models" / "1" / "model" / "1" / "saved_model.pb"
    good = saved.read_bytes()
    saved.write_bytes(b"not a SavedModel")
    broken = post(stack, "/projects/boards/models/1/start")
    assert broken.status_code == 500 and "version 2" in broken.json()["error"], broken.text
    assert requests.get(stack.url + "/v2/models/anomaly", timeout=10).json()["versions"] == ["1"]
    assert not (root / "model" / "anomaly" / "2").exists()
    assert requests.get(stack.url + "/projects/boards/models/1", timeout=10).json()["ModelDescription"]["Status"] == (
        "TRAINED"
    )
    saved.write_bytes(good)

    served = post(stack, "/projects/boards/models/1/start").json()["ModelDescription"]
    assert served["Status"] == "HOSTED" and served["Hosting"]["Model"] == "anomaly"
    assert served["Hosting"]["Version"] == 3  # after version 1 and the failed 2: numbers are never reused
    assert requests.get(stack.url + "/v2/models/anomaly", timeout=10).json()["versions"] == ["1", "3"]
    frame = (root / "uploads" / "anomaly").iterdir().__next__().read_bytes()
    ours = detect(stack, frame, served["Hosting"]["CustomAttributes"])
    theirs = detect(stack, frame, "tfs-model-name=anomaly,tfs-model-version=1")
    assert ours.status_code == theirs.status_code == 200, ours.text
    assert ours.headers["X-Sagestack-Model"] == "anomaly" and ours.json()["Threshold"] == round(
        trained["Evaluation"]["threshold"], 4
    )
    assert ours.json()["Threshold"] != theirs.json()["Threshold"]  # each version brings its own calibration

    stopped = post(stack, "/projects/boards/models/1/stop").json()["ModelDescription"]
    assert stopped["Status"] == "TRAINED" and "Hosting" not in stopped
    gone = detect(stack, frame, served["Hosting"]["CustomAttributes"])
    assert gone.status_code == 404 and "no version '3'" in gone.json()["error"]
    assert detect(stack, frame, "tfs-model-name=anomaly").status_code == 200
    assert not (root / "model" / "anomaly" / "3").exists()
    assert "3" not in json.loads((root / "model" / "anomaly" / "code" / "config.json").read_text())["versions"]
    assert requests.delete(stack.url + "/projects/boards", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "words"),
    [
        ("post", "/projects", {"json": {"ProjectName": "-bad name"}}, 400, "ProjectName"),
        ("post", "/projects", {"json": ["not", "an", "object"]}, 400, "JSON object"),
        ("get", "/projects/nowhere", {}, 404, "no project 'nowhere'"),
        ("post", "/projects/small/images/defective", {"data": b"x", "headers": PNG}, 404, "'normal' or 'anomaly'"),
        ("post", "/projects/small/images/normal", {"data": b"x", "headers": {"Content-Type": "text/plain"}}, 415,
         "image/png"),
        ("post", "/projects/small/images/normal", {"data": b"not an image", "headers": PNG}, 400,
         "not a readable image"),
        ("post", "/projects/small/images/normal", {"data": b"x", "headers": PNG, "params": {"kind": "scratch"}}, 400,
         "an anomaly's defect kind"),
        ("post", "/projects/small/models", {"json": {}}, 400, "has 1 normal and 0 anomalous"),
        ("post", "/projects/small/models", {"json": {"Fast": "yes"}}, 400, "Fast must be true or false"),
        ("put", "/projects/small/roi", {"json": {"Roi": [0, 0, 16]}}, 400, "[x, y, width, height]"),
        ("put", "/projects/small/roi", {"json": {"Roi": [0, 0, 32, 32]}}, 409, "while its data set is empty"),
        ("get", "/projects/small/models/7", {}, 404, "no model version 7"),
        ("get", "/projects/small/models/%C2%B2", {}, 404, "is not a number"),
        ("delete", "/projects/nowhere", {}, 404, "no project 'nowhere'"),
        ("post", "/projects/small/models/7/stop", {}, 404, "no model version 7"),
        ("post", "/projects/small/models/7/start", {}, 404, "no model version 7"),
    ],
)  # fmt: skip
def test_client_mistakes_are_4xx_naming_the_problem(stack, root, method, path, kwargs, status, words):
    if requests.get(stack.url + "/projects/small", timeout=10).status_code == 404:
        assert post(stack, "/projects", json={"ProjectName": "small"}).status_code == 201
        body, _ = uploads(root, "normal")[0]
        assert post(stack, "/projects/small/images/normal", data=body, headers=PNG).status_code == 201
    r = getattr(requests, method)(stack.url + path, timeout=30, **kwargs)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_a_frame_of_another_size_and_a_second_project_of_the_same_name_are_refused(stack, root):
    assert post(stack, "/projects", json={"ProjectName": "sizes"}).status_code == 201
    assert post(stack, "/projects", json={"ProjectName": "sizes"}).status_code == 409
    body, _ = uploads(root, "normal")[0]
    assert post(stack, "/projects/sizes/images/normal", data=body, headers=PNG).status_code == 201
    other = io.BytesIO()
    Image.new("RGB", (300, 200)).save(other, format="PNG")
    r = post(stack, "/projects/sizes/images/normal", data=other.getvalue(), headers=PNG)
    assert r.status_code == 400 and "takes 256x256 images" in r.json()["error"]


def test_a_training_job_that_dies_is_failed_and_the_project_can_train_again(stack, root):
    import psutil

    assert post(stack, "/projects", json={"ProjectName": "killed"}).status_code == 201
    for label in ("normal", "anomaly"):
        for body, _ in uploads(root, label):
            assert post(stack, f"/projects/killed/images/{label}", data=body, headers=PNG).status_code == 201
    assert post(stack, "/projects/killed/models", json={"Fast": True}).status_code == 202
    dataset = str(root / "projects" / "killed" / "dataset")
    jobs = [p for p in psutil.process_iter(["cmdline"]) if dataset in (p.info["cmdline"] or [])]
    assert len(jobs) == 1
    jobs[0].kill()  # as the OOM killer would: no chance to write its status
    jobs[0].wait(10)
    described = wait_trained(stack, "killed", "1", timeout=30)
    assert described["Status"] == "TRAINING_FAILED" and "training.log" in described["StatusMessage"]
    again = post(stack, "/projects/killed/models", json={"Fast": True})
    assert again.status_code == 202 and again.json()["ModelMetadata"]["ModelVersion"] == "2"
    assert wait_trained(stack, "killed", "2")["Status"] == "TRAINED"


def test_auroc_is_the_rank_statistic():
    truth = np.array([False, False, True, True, False])
    assert auroc(truth, np.array([0.1, 0.4, 0.35, 0.8, 0.2])) == pytest.approx(5 / 6)
    assert auroc(truth, np.array([1.0, 1.0, 1.0, 1.0, 1.0])) == 0.5
