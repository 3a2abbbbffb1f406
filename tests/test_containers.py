"""Dockerfiles: hadolint-clean and on the SageMaker contract; the `serve` script starts the stack as the image does."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import requests

from bench.stack import ROOT, free_port, free_port_range

DOCKERFILES = sorted((ROOT / "containers").glob("Dockerfile.*"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    hadolint = shutil.which("hadolint", path=str(ROOT / ".venv" / "bin")) or "hadolint"
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every ignored rule says why, on the lines just above it.
    text = dockerfile.read_text().splitlines()
    for i, line in enumerate(text):
        if "hadolint ignore" in line:
            assert text[i - 1].startswith("#") and len(text[i - 1]) > 20, f"no reason for {line}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_sagemaker_contract(dockerfile):
    text = dockerfile.read_text()
    assert re.search(r"^ARG BASE_IMAGE=", text, re.M) and re.search(r"^FROM \$\{BASE_IMAGE\}", text, re.M)
    assert 'ENTRYPOINT ["serve"]' in text  # exec form
    assert "EXPOSE 8080" in text and "/opt/ml/model" in text
    assert "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true" in text
    assert "com.amazonaws.sagemaker.capabilities.multi-models=true" in text
    # Dependencies are installed before the code is copied (layer caching), in the final stage, from the
    # wheels the builder stage made for source-only pins; the compiler stays in the builder.
    final = text[text.rindex("\nFROM ") :]
    assert re.search(r"pip install -q -r /tmp/serving.txt .*--find-links /built", final)
    assert final.index("/tmp/serving.txt") < final.index("COPY server")
    assert "FROM system AS wheels" in text and "gcc" in text[: text.rindex("\nFROM ")] and "gcc" not in final
    # Every served path is in the image; tooling is not.
    assert "COPY compiler" in final and "COPY models" in final and "COPY bench" not in text
    assert "ARG RUN_AS" in text and "USER ${RUN_AS}" in text


def test_serve_script_runs_the_stack_like_docker_run_image_serve(hpt_base, tmp_path):
    """`serve serve` is what `docker run image serve` executes inside the container."""
    port = free_port()
    env = {
        "PATH": f"{ROOT / '.venv' / 'bin'}:/usr/sbin:/usr/bin:/bin",
        "SAGESTACK_MODEL_DIR": str(hpt_base),
        "SAGESTACK_RUN_DIR": str(tmp_path),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGESTACK_BIND_ADDRESS": "127.0.0.1",
        "SAGEMAKER_SAFE_PORT_RANGE": free_port_range(),
    }
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "serve"), "serve"], env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if requests.get(url + "/ping", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"serve exited with {proc.returncode}")
            time.sleep(0.2)
        r = requests.post(url + "/invocations", data=json.dumps([1.0]), headers={"Content-Type": "application/json"})
        assert r.json() == {"predictions": [3.5]}  # the directory itself is the model (version 2 is latest)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0


def test_image_requirements_split_serving_from_tooling():
    """The image installs what the served paths import: torch's CPU build, never tooling."""
    cpu = subprocess.run(
        [sys.executable, "containers/requirements.py", "serving", "--cpu"], capture_output=True, text=True, cwd=ROOT
    ).stdout.split()
    names = {line.split("==")[0].split("[")[0] for line in cpu}
    assert "torch==2.13.0+cpu" in cpu and {"tensorflow-cpu", "onnxruntime", "openvino", "apache-tvm"} <= names
    assert not names & {"locust", "music21", "pyarrow", "scikit-learn", "pytest", "onnx", "xgboost-cpu"}
    gpu = subprocess.run(
        [sys.executable, "containers/requirements.py", "serving", "--gpu"], capture_output=True, text=True, cwd=ROOT
    ).stdout.split()
    assert "torch==2.13.0" in gpu and "tensorflow[and-cuda]==2.21.0" in gpu
    source = [sys.executable, "containers/requirements.py", "pip-source"]
    empty = subprocess.run([*source, "/nonexistent", "https://idx"], capture_output=True, text=True, cwd=ROOT)
    assert empty.stdout.split() == ["--extra-index-url", "https://idx"]
    local = subprocess.run([*source, str(ROOT / "containers"), "x"], capture_output=True, text=True, cwd=ROOT)
    assert local.stdout.split() == ["--no-index", "--find-links", str(ROOT / "containers")]
