"""SAGESTACK_RUNTIME_SHARING: one runtime process per framework serving all its models, or one per model."""

from __future__ import annotations

import os
import shutil
import signal
import time

import psutil
import pytest
import requests

from bench.stack import start_stack
from server.runtimes import RUNTIMES, process_group

JSON = {"Content-Type": "application/json"}
MODELS = ("half_plus_three", "hpt_handled", "hpt_handler")
BODIES = {"hpt_handler": '{"x": [1.0]}'}  # its handler() takes its own JSON


def _invoke(url: str, model: str) -> requests.Response:
    headers = {**JSON, "X-Amzn-SageMaker-Custom-Attributes": f"tfs-model-name={model}"}
    return requests.post(url + "/invocations", data=BODIES.get(model, "[1.0]"), headers=headers, timeout=30)


def _all_answer(stack) -> None:
    for model in MODELS:
        assert _invoke(stack.url, model).status_code == 200, model


def _pids(stack) -> dict[str, list[int]]:
    return {name: [i["pid"] for i in m["instances"]] for name, m in stack.routes()["models"].items()}


def test_kinds_of_one_framework_share_a_process_group():
    assert process_group("a", "torchscript", "framework") == process_group("b", "music_transformer", "framework")
    assert process_group("a", "tensorflow", "framework") == "tensorflow"
    assert process_group("a", "openvino", "framework") != process_group("a", "onnxruntime", "framework")
    assert {process_group(k, k, "model") for k in RUNTIMES} == set(RUNTIMES)  # sharing=model: the model's own
    with pytest.raises(ValueError, match="no runtime for model kind 'nope'"):
        process_group("a", "nope", "framework")


@pytest.mark.stack
@pytest.mark.parametrize("sharing", ["framework", "model"])
def test_models_share_one_process_per_instance_only_under_framework(model_dir, tmp_path, sharing):
    stack = start_stack(model_dir, tmp_path, SAGEMAKER_TFS_INSTANCE_COUNT="2", SAGESTACK_RUNTIME_SHARING=sharing,
                        SAGEMAKER_TFS_DEFAULT_MODEL_NAME="half_plus_three")  # fmt: skip
    try:
        pids = _pids(stack)
        assert set(pids) == set(MODELS) and all(len(p) == 2 and len(set(p)) == 2 for p in pids.values())
        processes = {pid for p in pids.values() for pid in p}
        assert len(processes) == (2 if sharing == "framework" else 6)
        ids = {i["id"] for m in stack.routes()["models"].values() for i in m["instances"]}
        per_model = {f"{m}-{i}" for m in MODELS for i in (0, 1)}
        assert ids == ({"tensorflow-0", "tensorflow-1"} if sharing == "framework" else per_model)
        _all_answer(stack)
    finally:
        assert stack.stop() == 0


@pytest.mark.stack
def test_a_killed_shared_process_comes_back_with_all_its_models(model_dir, tmp_path):
    stack = start_stack(model_dir, tmp_path, SAGEMAKER_TFS_DEFAULT_MODEL_NAME="half_plus_three")
    try:
        (victim,) = {p for pids in _pids(stack).values() for p in pids}
        os.kill(victim, signal.SIGKILL)
        r = _invoke(stack.url, "hpt_handler")  # waits out the restart (SAGESTACK_RESTART_WAIT_SECONDS)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [i["state"] for m in stack.routes()["models"].values() for i in m["instances"]]
            if states == ["ready"] * 3:
                break
            time.sleep(0.2)
        pids = _pids(stack)
        assert len({p for ps in pids.values() for p in ps} | {victim}) == 2, pids  # one new process for all three
        _all_answer(stack)
    finally:
        assert stack.stop() == 0


@pytest.mark.stack
def test_a_model_that_fails_in_a_shared_process_leaves_the_others_serving(model_dir, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(model_dir / "half_plus_three", root / "half_plus_three")
    (root / "garbled" / "1").mkdir(parents=True)
    (root / "garbled" / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    stack = start_stack(root, tmp_path / "run", SAGESTACK_FAIL_ON_MODEL_ERROR="false",
                        SAGEMAKER_TFS_DEFAULT_MODEL_NAME="half_plus_three")  # fmt: skip
    try:
        ping = requests.get(stack.url + "/ping", timeout=5).json()
        assert "unavailable: garbled (backend tensorflow" in ping["detail"], ping
        assert _invoke(stack.url, "half_plus_three").json() == {"predictions": [3.5]}
        assert _invoke(stack.url, "garbled").status_code == 503
    finally:
        assert stack.stop() == 0


@pytest.mark.stack
def test_models_loaded_at_run_time_join_and_leave_the_shared_process(model_dir, tmp_path):
    stack = start_stack(None, tmp_path, SAGEMAKER_MULTI_MODEL="true", SAGESTACK_MODEL_DIR=str(model_dir))
    try:
        for name in ("a", "b"):
            body = {"model_name": name, "url": str(model_dir / "half_plus_three")}
            assert requests.post(stack.url + "/models", json=body, timeout=120).status_code == 200
        pids = _pids(stack)
        assert pids["a"] == pids["b"] and len(pids["a"]) == 1
        (shared,) = pids["a"]
        assert requests.delete(stack.url + "/models/a", timeout=30).status_code == 200
        invoke = lambda name: requests.post(f"{stack.url}/models/{name}/invoke", data="[1.0]", headers=JSON)  # noqa: E731
        assert invoke("b").json() == {"predictions": [3.5]} and invoke("a").status_code == 404
        assert psutil.pid_exists(shared)  # b is still served by it
        assert requests.delete(stack.url + "/models/b", timeout=30).status_code == 200
        assert not psutil.pid_exists(shared)  # its last model left: stopped (and reaped) before the 200
    finally:
        assert stack.stop() == 0
