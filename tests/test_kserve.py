"""sagestack as a KServe runtime: k8s/kserve/ checked against the kserve package's models, and the kserve package's
own clients (v1 and v2 REST, v2 gRPC) against a stack started with the ClusterServingRuntime's environment on
KServe's /mnt/models layout. The kserve package pins protobuf<7, so it runs in a venv of its own (bench.peers'
kserve_client, made once under build/venvs/)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bench.stack import ROOT, start_stack
from server.settings import Settings

pytestmark = pytest.mark.stack
MANIFESTS = ROOT / "k8s" / "kserve"
RUNTIME = MANIFESTS / "cluster-serving-runtime.yaml"
SCRIPTS = Path(__file__).with_name("kserve")
ISVC = "half-plus-three"  # the InferenceService's name, which the runtime serves the model under


@pytest.fixture(scope="module")
def kserve_python() -> Path:
    from bench.peers import ensure_venv

    return ensure_venv("kserve_client")


def runtime_env(name: str) -> dict[str, str]:
    """The runtime container's env, with KServe's {{.Name}} filled in as KServe fills it."""
    container = yaml.safe_load(RUNTIME.read_text())["spec"]["containers"][0]
    return {e["name"]: e["value"].replace("{{.Name}}", name) for e in container["env"]}


def test_the_manifests_fit_kserves_own_models(kserve_python):
    manifests = sorted(str(p) for p in MANIFESTS.glob("*.yaml"))
    done = subprocess.run([str(kserve_python), str(SCRIPTS / "check_manifests.py"), *manifests],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ok"] and done.returncode == 0, report["errors"]
    assert sorted(report["kinds"]) == ["ClusterServingRuntime", "InferenceService", "InferenceService"]


def test_the_runtime_names_its_protocols_formats_image_and_a_valid_environment():
    doc = yaml.safe_load(RUNTIME.read_text())
    spec = doc["spec"]
    assert spec["protocolVersions"] == ["v1", "v2", "grpc-v2"]
    assert {f["name"] for f in spec["supportedModelFormats"]} == {"tensorflow", "pytorch", "onnx", "openvino"}
    container = spec["containers"][0]
    assert container["image"] == "sagestack:nonroot"  # what `make image` builds, uid 10001
    assert container["securityContext"]["runAsUser"] == 10001
    settings = Settings.from_env(runtime_env(ISVC))  # the settings the container starts with
    assert settings.model_dir == Path("/mnt/models") and settings.default_model_name == ISVC
    assert settings.bind_port == 8080 and settings.grpc_port == 9000
    isvc = yaml.safe_load((MANIFESTS / "inference-service.yaml").read_text())
    assert isvc["metadata"]["name"] == ISVC and isvc["spec"]["predictor"]["model"]["runtime"] == doc["metadata"]["name"]
    grpc_isvc = yaml.safe_load((MANIFESTS / "inference-service-grpc.yaml").read_text())["spec"]["predictor"]["model"]
    assert grpc_isvc["ports"] == [{"name": "h2c", "containerPort": settings.grpc_port, "protocol": "TCP"}]


def test_kserves_clients_get_the_models_answers_from_the_stack_as_kserve_runs_it(kserve_python, hpt_base, tmp_path):
    mnt = tmp_path / "mnt" / "models"
    shutil.copytree(hpt_base, mnt)  # the storage initializer's copy of the model: its version folders at the top
    ours = ("SAGEMAKER_BIND_TO_PORT", "SAGESTACK_GRPC_PORT", "SAGEMAKER_SAFE_PORT_RANGE", "SAGESTACK_RUN_DIR",
            "SAGESTACK_MODEL_DIR")  # ports and folders of this test's own  # fmt: skip
    env = {k: v for k, v in runtime_env(ISVC).items() if k not in ours}
    stack = start_stack(mnt, tmp_path / "run", grpc=True, **env)
    try:
        done = subprocess.run([str(kserve_python), str(SCRIPTS / "v2_clients.py"), "--rest", stack.url, "--grpc",
                               stack.grpc, "--model", ISVC], capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        got = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        assert stack.stop() == 0
    for side in ("rest", "grpc"):
        assert got[side]["live"] and got[side]["ready"] and got[side]["model_ready"], got
        assert all(out == [3.5, 4.0, 5.5] for out in got[side]["outputs"]) and set(got[side]["names"]) == {"y"}
        assert got[side]["id"] == "kserve-1"
    assert got["rest"]["v1"] == {"predictions": [3.5, 4.0, 5.5]}
