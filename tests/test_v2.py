"""The Open Inference Protocol (KServe v2) over REST and gRPC, through tritonclient's own HTTP and gRPC clients, and
TF Serving's REST API on the front."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from server import v2_grpc, v2_protocol


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


# ---- OIP v2 over gRPC (SAGESTACK_GRPC_PORT) -----------------------------------------------------------------
@pytest.fixture
def grpc_client(stack):
    c = triton_grpc.InferenceServerClient(stack.grpc)
    yield c
    c.close()


def test_grpc_health_and_metadata_match_rest(grpc_client, client):
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    assert grpc_client.is_model_ready("half_plus_three") and grpc_client.is_model_ready("half_plus_three", "1")
    assert not grpc_client.is_model_ready("nope")
    assert grpc_client.get_server_metadata(as_json=True)["extensions"] == client.get_server_metadata()["extensions"]
    meta = grpc_client.get_model_metadata("half_plus_three", as_json=True)
    rest = client.get_model_metadata("half_plus_three")
    assert meta["versions"] == rest["versions"] == ["1", "2"] and meta["platform"] == rest["platform"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [("x", "FP32", ["-1"])]


def _variant_count(stack) -> float:
    """sagestack_variant_invocations_total of half_plus_three's AllTraffic, summed over its series."""
    text = requests.get(f"{stack.url}/metrics", timeout=10).text
    series = [line for line in text.splitlines() if line.startswith("sagestack_variant_invocations_total{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in series if 'variant="AllTraffic"' in line)


def test_grpc_infer_gives_what_invocations_gives_and_is_counted(grpc_client, stack):
    x = np.array([1.0, 2.0, 5.0], dtype=np.float32)
    given = triton_grpc.InferInput("x", list(x.shape), "FP32")
    given.set_data_from_numpy(x)
    before = _variant_count(stack)
    result = grpc_client.infer("half_plus_three", [given], request_id="g-1")
    assert _variant_count(stack) == before + 1  # the gRPC call counted for its variant, as REST's are
    plain = requests.post(f"{stack.url}/invocations", json={"instances": x.tolist()}, timeout=10).json()
    assert result.as_numpy("y").tolist() == plain["predictions"] == [3.5, 4.0, 5.5]
    assert result.get_response().model_version == "2" and result.get_response().id == "g-1"
    older = grpc_client.infer("half_plus_three", [given], model_version="1")
    assert older.as_numpy("y").tolist() == [2.5, 3.0, 4.5]
    text = requests.get(f"{stack.url}/metrics", timeout=10).text
    assert 'route="/inference.GRPCInferenceService/ModelInfer"' in text


def test_grpc_typed_contents_and_trailing_metadata(stack):
    """Typed `contents` (not raw bytes) as some clients send them; the request id and variant come back."""
    with grpc.insecure_channel(stack.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="half_plus_three")
        request.inputs.add(name="x", datatype="FP32", shape=[2]).contents.fp32_contents.extend([1.0, 3.0])
        reply, call = stub.ModelInfer.with_call(request, metadata=(("x-amzn-requestid", "given-id"),), timeout=10)
        assert np.frombuffer(reply.raw_output_contents[0], "<f4").tolist() == [3.5, 4.5]
        trailing = dict(call.trailing_metadata())
        assert trailing["x-amzn-requestid"] == "given-id"
        assert trailing["x-amzn-invoked-production-variant"] == "AllTraffic"


def test_grpc_mistakes_get_the_status_rest_gives_them(grpc_client, stack):
    bad = triton_grpc.InferInput("nope", [1], "FP32")
    bad.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    with pytest.raises(InferenceServerException, match="no input 'nope'") as caught:
        grpc_client.infer("half_plus_three", [bad])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    x = triton_grpc.InferInput("x", [1], "FP32")
    x.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    with pytest.raises(InferenceServerException, match="not served here") as caught:
        grpc_client.infer("nope", [x])
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException, match="no version") as caught:
        grpc_client.infer("half_plus_three", [x], model_version="7")
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    with grpc.insecure_channel(stack.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        cases = [
            (service_pb2.ModelInferRequest(model_name="half_plus_three"), "needs inputs"),
            (_request("x", "FP16", [1], fp32=[1.0]), "raw_input_contents"),
            (_request("x", "FP32", [3], fp32=[1.0]), "1 fp32_contents values for shape [3]"),
            (_request("x", "BF16", [1], fp32=[1.0]), "BF16"),
        ]
        raw = _request("x", "FP32", [2])
        raw.raw_input_contents.append(b"\0" * 4)
        cases.append((raw, "4 bytes for shape [2]"))
        for request, needle in cases:
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(request, timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in caught.value.details()


def _request(name: str, kind: str, shape: list[int], fp32: list[float] | None = None) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="half_plus_three")
    tensor = request.inputs.add(name=name, datatype=kind, shape=shape)
    if fp32:
        tensor.contents.fp32_contents.extend(fp32)
    return request


def test_grpc_status_codes_follow_the_http_statuses():
    assert v2_grpc.status_code(413) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert v2_grpc.status_code(503) == grpc.StatusCode.UNAVAILABLE
    assert v2_grpc.status_code(418) == grpc.StatusCode.INVALID_ARGUMENT
    assert v2_grpc.status_code(502) == grpc.StatusCode.INTERNAL


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


def test_the_repository_index_lists_the_served_models_and_load_needs_a_multi_model_endpoint(client):
    index = client.get_model_repository_index()
    assert {"name": "half_plus_three", "version": "2", "state": "READY", "reason": ""} in index
    assert {e["name"] for e in index} == {"half_plus_three", "hpt_handled", "hpt_handler"}
    for call in (client.load_model, client.unload_model):
        with pytest.raises(InferenceServerException, match="SAGEMAKER_MULTI_MODEL=true"):
            call("half_plus_three")
    assert client.is_model_ready("half_plus_three")
