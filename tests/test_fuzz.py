"""Property-based fuzzing of every route and every model's content types: nothing is ever a 5xx.

One stack serves a tiny build of every family. Each case is a real HTTP request through nginx; every answer
must be below 500, and every 4xx a JSON {"error": ...}. The stack must still answer a good request after.
"""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import requests
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bench.payloads import image_bomb
from bench.stack import start_stack
from models.anomaly import model as anomaly_model
from models.anomaly.generate import make_dataset
from models.anomaly.train import train
from models.credit_risk.build import build as build_credit
from models.music_transformer.build import export as export_music
from models.music_transformer.melodies import melody
from models.music_transformer.model import Config, MusicTransformer, save
from models.music_transformer.tokens import write_midi
from models.yolov4.build import export as export_yolo
from models.yolov4.network import build as build_yolo

pytestmark = pytest.mark.stack
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ATTRS = "X-Amzn-SageMaker-Custom-Attributes"


@pytest.fixture(scope="module")
def zoo(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    models = root / "model"
    shutil.copytree(model_dir, models)
    export_yolo(models / "yolov4", build_yolo(width=0.125, size=96, seed=1), 96)
    build_credit(models / "credit_risk", root / "reports" / "credit")
    torch.manual_seed(0)
    save(MusicTransformer(Config.tiny()), root / "tiny.pt")
    export_music(root / "tiny.pt", models / "music_transformer")
    make_dataset(root / "anomaly_data", 20, 10, seed=2)  # the smallest data set training takes
    train(root / "anomaly_data", models / "anomaly", root / "reports" / "anomaly", None,
          geometry=anomaly_model.Geometry.fast())  # fmt: skip
    stack = start_stack(models, root / "run", SAGEMAKER_TFS_DEFAULT_MODEL_NAME="half_plus_three")
    yield stack
    assert stack.stop() == 0


def check(r: requests.Response) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        assert isinstance(r.json()["error"], str), r.text[:500]


def send(stack, body: bytes, ctype: str, model: str = "", attrs: str = "", path: str = "/invocations", **headers):
    head = {"Content-Type": ctype, **headers}
    custom = ",".join(x for x in (f"tfs-model-name={model}" if model else "", attrs) if x)
    if custom:
        head[ATTRS] = custom
    r = requests.post(stack.url + path, data=body, headers=head, timeout=120)
    check(r)
    return r


def png(width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
json_bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps({"instances": v}).encode()),
    json_values.map(lambda v: json.dumps({"inputs": v, "signature_name": "serving_default"}).encode()),
    json_values.map(lambda v: json.dumps({"examples": v}).encode()),
    st.integers(min_value=0, max_value=3000).map(lambda d: b"[" * d + b"1" + b"]" * d),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
csv_cells = st.one_of(st.text(max_size=12), st.floats(allow_nan=True).map(str), st.just('"'), st.just('a,"b'))
csv_bodies = st.lists(st.lists(csv_cells, max_size=6), max_size=8).map(
    lambda rows: "\n".join(",".join(row) for row in rows).encode("utf-8", "surrogatepass")
)
npy_bodies = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=64).map(lambda b: b"\x93NUMPY\x01\x00" + b),
    st.integers(1, 200).map(lambda n: _npy(np.ones(4, np.float32))[:n]),
)
bombs = st.tuples(st.integers(1, 60000), st.integers(1, 60000)).map(lambda wh: image_bomb(*wh))
image_bodies = st.one_of(
    st.binary(max_size=300),
    bombs,
    st.tuples(st.integers(1, 64), st.integers(1, 64), st.integers(0, 9)).map(lambda t: png(*t)),
    st.integers(8, 400).map(lambda n: png(40, 30, 1)[:n]),
)
midi = write_midi(melody("twinkle_twinkle"))
midi_bodies = st.one_of(st.binary(max_size=200), st.integers(0, len(midi)).map(lambda n: midi[:n]),
                        st.binary(max_size=40).map(lambda b: b"MThd\x00\x00\x00\x06" + b))  # fmt: skip
attr_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=1500)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@FUZZ
@given(body=json_bodies, ctype=st.sampled_from(["application/json", "application/jsonlines", "text/json"]))
def test_json_bodies(zoo, body, ctype):
    send(zoo, body, ctype)


@FUZZ
@given(body=csv_bodies, model=st.sampled_from(["half_plus_three", "credit_risk"]))
def test_csv_bodies(zoo, body, model):
    send(zoo, body, "text/csv", model)


@FUZZ
@given(body=npy_bodies)
def test_npy_bodies(zoo, body):
    send(zoo, body, "application/x-npy")


@FUZZ
@given(body=image_bodies, model=st.sampled_from(["yolov4", "anomaly"]),
       ctype=st.sampled_from(["image/png", "image/jpeg", "application/x-image"]))  # fmt: skip
def test_image_bodies(zoo, body, model, ctype):
    send(zoo, body, ctype, model)


@FUZZ
@given(body=midi_bodies, attrs=attr_text)
def test_midi_bodies_and_parameters(zoo, body, attrs):
    send(zoo, body, "audio/midi", "music_transformer", attrs.replace(",", ";"))


@FUZZ
@given(body=json_bodies, model=st.sampled_from(["credit_risk", "yolov4", "music_transformer", "anomaly"]))
def test_json_to_every_handler(zoo, body, model):
    """Our families' handlers (a test fixture's handler that assumes a shape may fail: that is a 500, as it should)."""
    send(zoo, body, "application/json", model)


@FUZZ
@given(
    attrs=attr_text,
    version=st.one_of(st.integers(-5, 10**12).map(str), st.text(alphabet=st.characters(max_codepoint=255), max_size=6)),
    method=st.one_of(
        st.sampled_from(["predict", "classify", "regress"]),
        st.text(alphabet=st.characters(max_codepoint=255), max_size=8),
    ),
)
def test_custom_attributes_versions_and_methods(zoo, attrs, version, method):
    custom = f"tfs-model-version={version},tfs-method={method},{attrs}".replace("\r", "").replace("\n", "")
    send(zoo, b'{"instances": [1.0], "examples": [{"x": 1.0}]}', "application/json", attrs=custom)


names = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
    st.sampled_from(["../half_plus_three", "a/b", "..", "half_plus_three/../x", "%2e%2e", "x%00y", "/etc/passwd"]),
)


@FUZZ
@given(name=names, ctype=st.sampled_from(["application/json", "text/csv", "image/png", "application/octet-stream"]))
def test_target_models_routes_and_types(zoo, name, ctype):
    send(zoo, b"[1.0]", ctype, **{"X-Amzn-SageMaker-Target-Model": name})
    safe = requests.utils.quote(name, safe="")
    check(requests.post(f"{zoo.url}/models/{safe}/invoke", data=b"[1.0]", headers={"Content-Type": ctype}))
    check(requests.post(f"{zoo.url}/endpoints/{safe}/invocations", data=b"[1.0]", headers={"Content-Type": ctype}))
    check(requests.get(f"{zoo.url}/models/{safe}"))
    check(requests.delete(f"{zoo.url}/models/{safe}"))
    check(requests.post(f"{zoo.url}/models", json={"model_name": name, "url": f"/tmp/{name}"}))


def test_the_stack_is_healthy_after_the_fuzzing(zoo):
    assert requests.get(zoo.url + "/ping", timeout=10).status_code == 200
    r = requests.post(zoo.url + "/invocations", data="[1.0]", headers={"Content-Type": "application/json"})
    assert r.json() == {"predictions": [3.5]}
