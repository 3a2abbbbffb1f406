"""A model that cannot start: start-up fails naming it and its backend (SageMaker's policy), or with
SAGESTACK_FAIL_ON_MODEL_ERROR=false the others serve and it is reported unavailable."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import requests

from bench.stack import ROOT, free_port, free_port_range, start_stack
from server.runtimes import missing_packages


@pytest.fixture(scope="module")
def broken_dir(tmp_path_factory, hpt_base):
    """half_plus_three, and 'broken': a TorchScript version whose artifact is missing."""
    root = tmp_path_factory.mktemp("broken")
    shutil.copytree(hpt_base, root / "half_plus_three")
    meta = root / "broken" / "1" / "compiled" / "metadata.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"runtime": "torchscript", "artifact": "missing.tar.gz", "inputs": {"x": [1, 3]}}))
    return root


@pytest.mark.stack
def test_a_failed_model_fails_start_up_naming_model_and_backend(broken_dir, tmp_path):
    env = {
        "SAGESTACK_MODEL_DIR": str(broken_dir),
        "SAGESTACK_RUN_DIR": str(tmp_path),
        "SAGEMAKER_BIND_TO_PORT": str(free_port()),
        "SAGEMAKER_SAFE_PORT_RANGE": free_port_range(),
        "PATH": f"{ROOT / '.venv' / 'bin'}:/usr/sbin:/usr/bin:/bin",
    }
    result = subprocess.run([sys.executable, "-m", "server.cli", "serve"], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=180)  # fmt: skip
    assert result.returncode == 1
    assert "model 'broken' (backend torchscript" in result.stderr
    assert "SAGESTACK_FAIL_ON_MODEL_ERROR=false" in result.stderr


@pytest.mark.stack
def test_fail_on_model_error_false_serves_the_others(broken_dir, tmp_path):
    stack = start_stack(broken_dir, tmp_path, SAGESTACK_FAIL_ON_MODEL_ERROR="false",
                        SAGEMAKER_TFS_DEFAULT_MODEL_NAME="half_plus_three")  # fmt: skip
    try:
        ping = requests.get(stack.url + "/ping", timeout=5).json()
        assert "unavailable: broken (backend torchscript" in ping["detail"]
        ok = requests.post(stack.url + "/invocations", json={"instances": [1.0]}, timeout=10)
        assert ok.json() == {"predictions": [3.5]}
        headers = {"X-Amzn-SageMaker-Custom-Attributes": "tfs-model-name=broken"}
        r = requests.post(stack.url + "/invocations", json={"instances": [1.0]}, headers=headers, timeout=10)
        assert r.status_code == 503 and "model 'broken' is unavailable: backend torchscript" in r.json()["error"]
        metrics = requests.get(stack.url + "/metrics", timeout=5).text
        assert 'sagestack_model_ready{model="broken"} 0.0' in metrics
        assert 'sagestack_model_failed{model="broken"' in metrics
    finally:
        assert stack.stop() == 0


def test_missing_packages_are_named_without_importing_them(monkeypatch):
    from server import runtimes

    assert missing_packages("tensorflow") == [] and missing_packages("torchscript") == []  # the dev venv has both
    fancy = runtimes.Runtime("no_such_family.runtime:make_backend", ("torch", "no_such_pkg"), "fancy")
    monkeypatch.setitem(runtimes.RUNTIMES, "fancy", fancy)
    assert missing_packages("fancy") == ["no_such_family", "no_such_pkg"]
