"""Multi-model endpoint (SAGEMAKER_MULTI_MODEL=true) with several gunicorn workers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import requests
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from bench.stack import start_stack

pytestmark = pytest.mark.stack
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def mme(model_dir, tmp_path_factory):
    stack = start_stack(
        None,
        tmp_path_factory.mktemp("mme"),
        grpc=True,
        SAGEMAKER_MULTI_MODEL="true",
        SAGEMAKER_GUNICORN_WORKERS="3",
        SAGESTACK_MODEL_DIR=str(model_dir),
    )
    yield stack, model_dir
    assert stack.stop() == 0


def test_load_list_invoke_unload(mme):
    stack, model_dir = mme
    url = stack.url
    assert requests.get(url + "/ping", timeout=5).status_code == 200
    assert requests.get(url + "/models", timeout=5).json() == {"models": []}

    r = requests.post(
        url + "/models", json={"model_name": "m1", "url": str(model_dir / "half_plus_three")}, timeout=120
    )
    assert r.status_code == 200, r.text
    again = requests.post(
        url + "/models", json={"model_name": "m1", "url": str(model_dir / "half_plus_three")}, timeout=30
    )
    assert again.status_code == 409
    missing = requests.post(url + "/models", json={"model_name": "m2", "url": str(model_dir / "nothing")}, timeout=30)
    assert missing.status_code == 404
    assert "no version directory" in missing.json()["error"]
    assert requests.post(url + "/models", data="{oops", headers=JSON, timeout=5).status_code == 400

    listing = requests.get(url + "/models", timeout=5).json()
    assert listing == {"models": [{"modelName": "m1", "modelUrl": str(model_dir / "half_plus_three")}]}
    assert requests.get(url + "/models/m1", timeout=5).json()["versions"] == [1, 2]

    # Every worker sees the loaded model (requests spread over 3 workers).
    for _ in range(30):
        r = requests.post(url + "/models/m1/invoke", data="[1.0]", headers=JSON, timeout=10)
        assert r.json() == {"predictions": [3.5]}
    r = requests.post(
        url + "/invocations",
        data="[2.0]",
        headers={**JSON, "X-Amzn-SageMaker-Target-Model": "m1"},
        timeout=10,
    )
    assert r.json() == {"predictions": [4.0]}

    assert requests.delete(url + "/models/m1", timeout=30).status_code == 200
    assert requests.delete(url + "/models/m1", timeout=30).status_code == 404
    for _ in range(10):
        r = requests.post(url + "/models/m1/invoke", data="[1.0]", headers=JSON, timeout=10)
        assert r.status_code == 404


def test_paging(mme):
    stack, model_dir = mme
    for name in ("a", "b", "c"):
        body = {"model_name": name, "url": str(model_dir / "half_plus_three")}
        assert requests.post(stack.url + "/models", json=body, timeout=120).status_code == 200
    first = requests.get(stack.url + "/models?page_size=2", timeout=5).json()
    assert [m["modelName"] for m in first["models"]] == ["a", "b"]
    rest = requests.get(stack.url + f"/models?page_size=2&next_page_token={first['nextPageToken']}", timeout=5).json()
    assert [m["modelName"] for m in rest["models"]] == ["c"] and "nextPageToken" not in rest
    for name in ("a", "b", "c"):
        assert requests.delete(stack.url + f"/models/{name}", timeout=30).status_code == 200


def test_target_model_header_loads_from_model_dir(mme):
    """As on SageMaker, a target model that is not loaded yet is loaded on first use."""
    stack, _ = mme
    headers = {**JSON, "X-Amzn-SageMaker-Target-Model": "hpt_handled"}
    r = requests.post(stack.url + "/invocations", data=json.dumps([1.0]), headers=headers, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["doubled"] == [7.0]
    unknown = requests.post(
        stack.url + "/invocations",
        data="[1]",
        headers={**JSON, "X-Amzn-SageMaker-Target-Model": "zzz"},
        timeout=10,
    )
    assert unknown.status_code == 404
    sneaky = requests.post(
        stack.url + "/invocations",
        data="[1]",
        headers={**JSON, "X-Amzn-SageMaker-Target-Model": "../model"},
        timeout=10,
    )
    assert sneaky.status_code == 400 and "not a valid model name" in sneaky.json()["error"]
    assert requests.delete(stack.url + "/models/hpt_handled", timeout=30).status_code == 200


def test_tritons_repository_extension_loads_and_unloads_models_of_the_model_directory(mme):
    """tritonclient's repository calls over REST and gRPC: the index lists the model directory, load and unload
    map onto the multi-model endpoint, and every worker sees the result."""
    stack, _ = mme
    http = triton.InferenceServerClient(stack.url.removeprefix("http://"))
    rpc = triton_grpc.InferenceServerClient(stack.grpc)
    unloaded = {"name": "hpt_handler", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"}
    names = ("half_plus_three", "hpt_handled", "hpt_handler")
    assert http.get_model_repository_index() == [{**unloaded, "name": n} for n in names]
    listed = rpc.get_model_repository_index(as_json=False).models
    assert [(m.name, m.version, m.state, m.reason) for m in listed] == [
        (n, "", "UNAVAILABLE", "unloaded") for n in names
    ]
    http.load_model("hpt_handler")
    ready = [{"name": "hpt_handler", "version": v, "state": "READY", "reason": ""} for v in ("1", "2")]
    index = requests.post(stack.url + "/v2/repository/index", json={"ready": True}, timeout=10).json()
    assert index == ready
    assert [(m.name, m.version, m.state) for m in rpc.get_model_repository_index(as_json=False).models
            if m.state == "READY"] == [("hpt_handler", "1", "READY"), ("hpt_handler", "2", "READY")]  # fmt: skip
    x = triton.InferInput("x", [1], "FP32")
    x.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    for _ in range(6):  # over the 3 workers
        assert http.infer("hpt_handler", [x]).as_numpy("y").tolist() == [3.5]
    before = http.get_model_repository_index()
    http.load_model("hpt_handler")  # already loaded: left as it is
    assert http.get_model_repository_index() == before and http.is_model_ready("hpt_handler")
    with pytest.raises(InferenceServerException, match="not a valid model name"):
        rpc.unload_model("../up")
    rpc.unload_model("hpt_handler")
    assert unloaded in http.get_model_repository_index() and not http.is_model_ready("hpt_handler")
    rpc.load_model("hpt_handler")
    assert rpc.is_model_ready("hpt_handler")
    http.unload_model("hpt_handler")
    with pytest.raises(InferenceServerException, match="not loaded and not found"):
        http.load_model("zzz")
    with pytest.raises(InferenceServerException, match=r"NOT_FOUND.*'zzz' is not loaded"):
        rpc.unload_model("zzz")
    with pytest.raises(InferenceServerException, match="load parameters"):
        http.load_model("hpt_handler", config="{}")
    bad = requests.post(stack.url + "/v2/repository/index", json={"ready": "yes"}, timeout=10)
    assert bad.status_code == 400 and "'ready'" in bad.json()["error"]
    http.close()
    rpc.close()


def test_loads_only_from_the_model_root_or_the_allowed_prefixes(mme, tmp_path):
    stack, model_dir = mme
    outside = tmp_path / "elsewhere"
    shutil.copytree(model_dir / "half_plus_three", outside)
    for url in (str(outside), f"file://{outside}", str(model_dir / ".." / tmp_path.name / "elsewhere")):
        r = requests.post(stack.url + "/models", json={"model_name": "evil", "url": url}, timeout=30)
        assert r.status_code == 403 and "outside the model root" in r.json()["error"], (url, r.text)
    for name in ("../up", "a/b", "nul\x00", ".hidden"):
        r = requests.post(stack.url + "/models", json={"model_name": name, "url": str(model_dir / "half_plus_three")})
        assert r.status_code == 400 and "not a valid model name" in r.json()["error"], (name, r.text)
    r = requests.post(stack.url + "/models", json={"model_name": "remote", "url": "s3://bucket/model"}, timeout=30)
    assert r.status_code == 400 and "local path" in r.json()["error"]
    names = {m["modelName"] for m in requests.get(stack.url + "/models", timeout=5).json()["models"]}
    assert not names & {"evil", "remote"}


def _with_requirements(model_dir, tmp_path) -> tuple:
    """A model whose code/requirements.txt cannot be installed (offline, unknown package)."""
    root = tmp_path / "root"
    shutil.copytree(model_dir / "hpt_handled", root / "needs_pkg")
    (root / "needs_pkg" / "code" / "requirements.txt").write_text("--no-index\nno-such-package-sagestack==0\n")
    return root, {"model_name": "needs_pkg", "url": str(root / "needs_pkg")}


@pytest.mark.parametrize("allow", ["false", "true"])
def test_a_loaded_models_requirements_are_installed_only_when_allowed(model_dir, tmp_path, allow):
    root, body = _with_requirements(model_dir, tmp_path)
    stack = start_stack(None, tmp_path / "run", SAGEMAKER_MULTI_MODEL="true", SAGESTACK_MODEL_DIR=str(root),
                        SAGESTACK_ALLOW_REQUIREMENTS=allow)  # fmt: skip
    try:
        r = requests.post(stack.url + "/models", json=body, timeout=120)
        if allow == "true":
            assert r.status_code == 500 and "requirements.txt failed" in r.json()["error"], r.text
        else:
            assert r.status_code == 200, r.text  # not installed, so nothing failed
    finally:
        assert stack.stop() == 0
