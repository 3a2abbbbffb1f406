"""The Open Inference Protocol (KServe v2) over REST on the front, through tritonclient's own HTTP client."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from server import v2_protocol


@pytest.fixture
def client(stack):
    c = triton.InferenceServerClient(stack.url.removeprefix("http://"))
    yield c
    c.close()


def test_health_server_and_model_metadata_come_from_the_stack(client, stack):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("half_plus_three") and client.is_model_ready("half_plus_three", "1")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("half_plus_three")
    assert meta["name"] == "half_plus_three" and meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1]}]
    assert requests.get(f"{stack.url}/v2/health/live", timeout=5).json() == {"live": True}


@pytest.mark.parametrize("binary", [False, True])
def test_infer_as_json_and_as_binary_tensors_gives_what_invocations_gives(client, stack, binary):
    x = np.array([1.0, 2.0, 5.0], dtype=np.float32)
    given = triton.InferInput("x", list(x.shape), "FP32")
    given.set_data_from_numpy(x, binary_data=binary)
    wanted = [triton.InferRequestedOutput("y", binary_data=binary)]
    result = client.infer("half_plus_three", [given], outputs=wanted, request_id="r-1")
    plain = requests.post(f"{stack.url}/invocations", json={"instances": x.tolist()}, timeout=10).json()
    assert result.as_numpy("y").tolist() == plain["predictions"] == [3.5, 4.0, 5.5]
    assert result.get_response()["model_version"] == "2" and result.get_response()["id"] == "r-1"
    older = client.infer("half_plus_three", [given], model_version="1", outputs=wanted)
    assert older.as_numpy("y").tolist() == [2.5, 3.0, 4.5]  # version 1 is 0.5x + 2


def test_v2_mistakes_are_400s_that_name_them(client, stack):
    x = triton.InferInput("nope", [1], "FP32")
    x.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    with pytest.raises(InferenceServerException, match="no input 'nope'"):
        client.infer("half_plus_three", [x])
    cases = [
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0]}]}, "1 values for shape [2]"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "BF16", "data": [1.0]}]}, "BF16"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}, "not FP32"),
        ({"inputs": []}, '"inputs"'),
    ]
    for body, needle in cases:
        r = requests.post(f"{stack.url}/v2/models/half_plus_three/infer", data=json.dumps(body), timeout=10)
        assert r.status_code == 400 and needle in r.json()["error"], (body, r.text)
    r = requests.post(f"{stack.url}/v2/models/nope/infer", json=cases[0][0], timeout=10)
    assert r.status_code == 404 and "error" in r.json()
    r = requests.get(f"{stack.url}/v2/models/half_plus_three/versions/7", timeout=10)
    assert r.status_code == 404 and "version" in r.json()["error"]


def test_bytes_tensors_are_length_prefixed_as_triton_sends_them():
    body = json.dumps({"inputs": [{"name": "s", "shape": [2], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": 4 + 2 + 4 + 3}}]}).encode()  # fmt: skip
    raw = b"\x02\x00\x00\x00hi\x03\x00\x00\x00you"
    request = v2_protocol.parse(body + raw, str(len(body)))
    assert request.inputs["s"].tolist() == [b"hi", b"you"]
    out, header = v2_protocol.answer("m", "1", request, {"s": request.inputs["s"]})
    assert header is None and json.loads(out)["outputs"][0]["data"] == ["hi", "you"]


# ---- TF Serving's REST API on the front ----------------------------------------------------------------------
def test_tf_serving_rest_predicts_classifies_and_reports_status_as_tf_serving_does(stack):
    v1 = f"{stack.url}/v1/models/half_plus_three"
    r = requests.post(f"{v1}:predict", json={"instances": [1.0, 2.0, 5.0]}, timeout=10)
    plain = requests.post(f"{stack.url}/invocations", json={"instances": [1.0, 2.0, 5.0]}, timeout=10)
    assert r.status_code == 200 and r.json() == plain.json() == {"predictions": [3.5, 4.0, 5.5]}
    assert r.headers["x-Amzn-Invoked-Production-Variant"] == "AllTraffic"
    older = requests.post(f"{v1}/versions/1:predict", json={"instances": [1.0]}, timeout=10)
    assert older.json() == {"predictions": [2.5]}
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert requests.post(f"{v1}:classify", json=body, timeout=10).json() == {"results": [[["0", 4.0]]]}
    status = requests.get(v1, timeout=10).json()["model_version_status"]
    assert [s["version"] for s in status] == ["2", "1"] and {s["state"] for s in status} == {"AVAILABLE"}
    assert requests.get(f"{v1}/versions/1", timeout=10).json()["model_version_status"][0]["version"] == "1"
    for url, data, needle in ((f"{v1}:explain", b"{}", "not a TF Serving method"), (f"{v1}:predict", b"[1]", "object"),
                              (f"{v1}:predict", b"{", "JSON")):  # fmt: skip
        bad = requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=10)
        assert bad.status_code == 400 and needle in bad.json()["error"], bad.text
    assert requests.get(f"{stack.url}/v1/models/nope", timeout=10).status_code == 404
