"""Helpers for the image tests: the probe model, one invocation."""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.stack import ROOT

MODEL_DIR = ROOT / "build" / "model"
MODELS = ("half_plus_three", "credit_risk", "anomaly", "yolov4", "yolov4_compiled", "music_transformer")
PROBE = "hpt_requirements"  # a model whose code/requirements.txt installs a package
# The container's SAGESTACK_ENDPOINT_CONFIG: half_plus_three (the default) shadowed by itself, everything captured.
ENDPOINT_CONFIG = {
    "EndpointConfigName": "image",
    "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "half_plus_three"}],
    "ShadowProductionVariants": [{"VariantName": "shadow", "ModelName": "half_plus_three", "InitialVariantWeight": 1}],
    "DataCaptureConfig": {"InitialSamplingPercentage": 100, "DestinationS3Uri": "file:///tmp/capture",
                          "CaptureOptions": [{"CaptureMode": "InputAndOutput"}],
                          "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]}},
}  # fmt: skip


@dataclass
class Container:
    name: str
    image: str
    url: str
    user: str  # the user the image runs as
    grpc: str  # host:port of OIP v2 over gRPC (SAGESTACK_GRPC_PORT)


def probe_model(root: Path) -> Path:
    """half_plus_three whose handler imports a package that only its code/requirements.txt installs."""
    base = root / PROBE
    shutil.copytree(MODEL_DIR / "half_plus_three", base, ignore=shutil.ignore_patterns("code"))
    wheels = base / "code" / "wheels"
    wheels.mkdir(parents=True)
    with zipfile.ZipFile(wheels / "sagestack_probe-1.0-py3-none-any.whl", "w") as whl:
        whl.writestr("sagestack_probe/__init__.py", "ANSWER = 42\n")
        info = "sagestack_probe-1.0.dist-info"
        whl.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: sagestack-probe\nVersion: 1.0\n")
        whl.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: sagestack\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        whl.writestr(f"{info}/RECORD", "")
    inside = f"/opt/ml/model/{PROBE}/code/wheels"
    (base / "code" / "requirements.txt").write_text(f"--no-index\n--find-links {inside}\nsagestack-probe==1.0\n")
    (base / "code" / "inference.py").write_text(
        "import json\n\nimport sagestack_probe\n\n\n"
        "def output_handler(response, context):\n"
        "    body = response.json()\n"
        '    body["probe"] = sagestack_probe.ANSWER\n'
        '    return json.dumps(body), "application/json"\n'
    )
    return base


def invoke(container: Container, model: str, body: bytes, content_type: str, accept: str = "application/json",
           attrs: str = "") -> requests.Response:  # fmt: skip
    headers = {
        "Content-Type": content_type,
        "Accept": accept,
        "X-Amzn-SageMaker-Custom-Attributes": f"tfs-model-name={model}" + (f",{attrs}" if attrs else ""),
    }
    return requests.post(container.url + "/invocations", data=body, headers=headers, timeout=120)


def as_json(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text[:500]
    return json.loads(response.content)
