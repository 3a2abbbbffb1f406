"""Fixtures: the half_plus_three model (two versions) and the real stack started as users start it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.stack import Stack, start_stack
from containers.k8s_local import start_moto

FIXTURES = Path(__file__).resolve().parent / "fixtures"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def hpt_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """half_plus_three with version 1 = 0.5x+2 and version 2 = 0.5x+3 (the default, latest)."""
    from models.half_plus_three.build import build

    return build(tmp_path_factory.mktemp("hpt") / "half_plus_three", {1: 2.0, 2: 3.0})


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, hpt_base: Path) -> Path:
    """Three models over the same SavedModel: plain, with input/output handlers, with handler()."""
    root = tmp_path_factory.mktemp("model")
    for name, code in (
        ("half_plus_three", None),
        ("hpt_handled", "handled_code"),
        ("hpt_handler", "handler_code"),
    ):
        shutil.copytree(hpt_base, root / name)
        if code:
            shutil.copytree(FIXTURES / code, root / name / "code")
    return root


@pytest.fixture(scope="session", params=["gevent", "gevent_h1c"])
def stack(request: pytest.FixtureRequest, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """nginx + gunicorn (2 workers of each gevent class) + 2 runtime instances per model, on loopback; OIP v2 over
    gRPC on a port of its own."""
    s = start_stack(
        model_dir,
        tmp_path_factory.mktemp("run"),
        grpc=True,
        SAGEMAKER_GUNICORN_WORKERS="2",
        SAGEMAKER_GUNICORN_WORKER_CLASS=request.param,
        SAGEMAKER_TFS_INSTANCE_COUNT="2",
        SAGEMAKER_TFS_DEFAULT_MODEL_NAME="half_plus_three",
        SAGEMAKER_MAX_PAYLOAD_IN_MB="1",
    )
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="session")
def moto_url():
    """A real moto server (S3, ECR, SageMaker, ...) on loopback, for real boto3 calls."""
    proc, url = start_moto()
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def aws(moto_url, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return moto_url
