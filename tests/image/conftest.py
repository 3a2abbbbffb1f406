"""The image as SageMaker runs it (`docker run IMAGE serve`), with the full build/model that `make models` writes.

Run by `make image-test` (not by `make test`): it needs the images `make image` builds. SAGESTACK_IMAGES names
them, space-separated (default sagestack:latest); each gets the whole module of tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from image_helpers import ENDPOINT_CONFIG, MODEL_DIR, MODELS, PROBE, Container, probe_model

from bench.stack import free_port, free_port_outside, free_port_range
from containers.podman import podman, wait_for_ping


@pytest.fixture(scope="module", params=os.environ.get("SAGESTACK_IMAGES", "sagestack:latest").split())
def container(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    missing = [m for m in MODELS if not (MODEL_DIR / m / "1").is_dir()]
    if missing:
        pytest.fail(f"build/model lacks {missing}: run `make models` first")
    probe = probe_model(tmp_path_factory.mktemp("probe"))
    endpoint = tmp_path_factory.mktemp("endpoint") / "endpoint.json"
    endpoint.write_text(json.dumps(ENDPOINT_CONFIG))
    endpoint.chmod(0o644)
    port, safe = free_port(), free_port_range(40)
    grpc_port = free_port_outside(safe, port)
    name = f"sagestack-image-test-{os.getpid()}-{port}"
    mounts = [f"--volume={MODEL_DIR / m}:/opt/ml/model/{m}:ro" for m in MODELS]
    mounts.append(f"--volume={probe}:/opt/ml/model/{PROBE}:ro")
    mounts.append(f"--volume={endpoint}:/opt/ml/endpoint.json:ro")
    podman(
        "run", "-d", "--name", name, "--network", "host", *mounts,
        "-e", f"SAGEMAKER_BIND_TO_PORT={port}", "-e", "SAGESTACK_BIND_ADDRESS=127.0.0.1",
        "-e", f"SAGEMAKER_SAFE_PORT_RANGE={safe}", "-e", f"SAGESTACK_GRPC_PORT={grpc_port}",
        "-e", "SAGEMAKER_TFS_DEFAULT_MODEL_NAME=half_plus_three",
        "-e", "SAGESTACK_ASYNC_OUTPUT_PATH=file:///tmp/async/out", "-e", "SAGESTACK_ASYNC_INPUT_PREFIXES=/tmp/async/in",
        "-e", "SAGESTACK_ENDPOINT_CONFIG=/opt/ml/endpoint.json",
        "-e", "SAGESTACK_CONSOLE=true",
        request.param, "serve",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_ping(url, lambda: podman("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true")
    except Exception:
        print(podman("logs", name, check=False).stderr[-6000:])
        podman("rm", "-f", name, check=False)
        raise
    user = podman("image", "inspect", "-f", "{{.Config.User}}", request.param).stdout.strip() or "root"
    yield Container(name, request.param, url, user, f"127.0.0.1:{grpc_port}")
    podman("rm", "-f", name, check=False)
