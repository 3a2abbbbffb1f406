"""The whole stack on loopback: nginx -> gunicorn (gevent, 2 workers) -> 2 runtime instances per model."""

from __future__ import annotations

import io
import json

import boto3
import numpy as np
import pytest
import requests
from botocore.config import Config

pytestmark = pytest.mark.stack

JSON = {"Content-Type": "application/json"}


def attrs(**kv: str) -> dict[str, str]:
    value = ",".join(f"{k.replace('_', '-')}={v}" for k, v in kv.items())
    return {"X-Amzn-SageMaker-Custom-Attributes": value}


def post(stack, body, headers=None, path="/invocations"):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return requests.post(stack.url + path, data=data, headers={**JSON, **(headers or {})}, timeout=30)


def test_ping_is_ready(stack):
    r = requests.get(stack.url + "/ping", timeout=5)
    assert r.status_code == 200
    assert r.json()["status"] == "ready"


def test_json_instances(stack):
    r = post(stack, {"instances": [1.0, 2.0, 5.0]})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {"predictions": [3.5, 4.0, 5.5]}


def test_json_plain_list_and_columnar(stack):
    assert post(stack, [1.0, 2.0]).json() == {"predictions": [3.5, 4.0]}
    assert post(stack, {"inputs": {"x": [4.0]}}).json() == {"outputs": [5.0]}


def test_jsonlines_in_and_out(stack):
    r = post(stack, "1.0\n2.0\n5.0\n", {"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/jsonlines"
    assert r.text == "3.5\n4.0\n5.5\n"


def test_csv_in_and_out(stack):
    r = post(stack, "1\n2\n5\n", {"Content-Type": "text/csv", "Accept": "text/csv"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/csv"
    assert r.text == "3.5\n4.0\n5.5\n"
    # CSV in, JSON out
    assert post(stack, "1\n2\n", {"Content-Type": "text/csv"}).json() == {"predictions": [3.5, 4.0]}


def test_npy_binary_body(stack):
    buf = io.BytesIO()
    np.save(buf, np.array([1.0, 3.0], dtype=np.float32))
    r = post(stack, buf.getvalue(), {"Content-Type": "application/x-npy"})
    assert r.status_code == 200
    assert r.json() == {"outputs": [3.5, 4.5]}


def test_version_selection(stack):
    assert post(stack, [1.0], attrs(tfs_model_version="1")).json() == {"predictions": [2.5]}
    assert post(stack, [1.0], attrs(tfs_model_version="2")).json() == {"predictions": [3.5]}


def test_model_selection(stack):
    r = post(stack, [1.0], attrs(tfs_model_name="hpt_handled"))
    body = r.json()
    assert body.pop("request_id") == r.headers["X-Amzn-RequestId"]  # handlers see the request's id
    assert body == {"doubled": [7.0], "binary_outputs": True, "model": "hpt_handled"}


def test_classify_and_regress(stack):
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": 4.0}]}
    assert post(stack, body, attrs(tfs_method="regress")).json() == {"results": [3.5, 5.0]}
    assert post(stack, body, attrs(tfs_method="regress", tfs_model_version="1")).json() == {"results": [2.5, 4.0]}
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert post(stack, body, attrs(tfs_method="classify")).json() == {"results": [[["0", 4.0]]]}


@pytest.mark.parametrize(
    ("body", "headers", "status", "needle"),
    [
        ("{not json", {}, 400, "malformed JSON"),
        ('{"foo": 1}', {}, 400, "instances"),
        ("", {}, 400, "empty"),
        ('{"instances": [[1, 2]]}', {}, 400, "shape"),
        ('{"instances": ["a"]}', {}, 400, "DT_FLOAT"),
        ("1,x\n", {"Content-Type": "text/csv"}, 400, "CSV line 1"),
        ("[1]", {"Content-Type": "application/xml"}, 415, "application/xml"),
        ("[1]", {"Content-Type": "image/png"}, 415, "no handler"),
        ("[1]", {"Accept": "application/xml"}, 406, "Accept"),
        ("[1]", attrs(tfs_model_name="nope"), 404, "'nope'"),
        ("[1]", attrs(tfs_model_version="7"), 404, "version '7'"),
        ("[1]", attrs(tfs_method="explain"), 400, "tfs-method"),
        ('{"instances": [1], "signature_name": "zzz"}', {}, 400, "signature 'zzz'"),
        ('{"examples": [{"x": 1.0}]}', attrs(tfs_method="regress"), 400, "not tensorflow/serving/regress"),
    ],
)
def test_client_errors_are_json(stack, body, headers, status, needle):
    r = post(stack, body, headers)
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert needle in r.json()["error"]


def test_unknown_path_is_404_json(stack):
    for method, path in (("GET", "/nope"), ("POST", "/invocations/extra"), ("GET", "/v3/models/x")):
        r = requests.request(method, stack.url + path, timeout=5)
        assert r.status_code == 404
        assert "Not Found" in r.json()["error"]


def test_oversized_body_is_413(stack):
    big = json.dumps({"instances": [1.0] * 300_000})  # > 1 MB (SAGEMAKER_MAX_PAYLOAD_IN_MB=1)
    r = post(stack, big)
    assert r.status_code == 413
    assert "SAGEMAKER_MAX_PAYLOAD_IN_MB" in r.json()["error"]


def test_mme_routes_off_in_single_model_mode(stack):
    r = requests.get(stack.url + "/models", timeout=5)
    assert r.status_code == 404
    assert "SAGEMAKER_MULTI_MODEL" in r.json()["error"]


def test_input_output_handlers_and_lib(stack):
    r = post(stack, "1 2", {"Content-Type": "text/plain"} | attrs(tfs_model_name="hpt_handled"))
    assert r.status_code == 200
    assert r.json()["doubled"] == [7.0, 8.0]


def test_handler_client_error_is_4xx(stack):
    r = post(stack, "1 x", {"Content-Type": "text/plain"} | attrs(tfs_model_name="hpt_handled"))
    assert r.status_code == 400
    assert "not a number" in r.json()["error"]


def test_handler_with_rest_and_binary_paths(stack):
    h = attrs(tfs_model_name="hpt_handler")
    assert post(stack, {"x": [1.0], "via": "rest"}, h).json() == {"rest": [3.5]}
    assert post(stack, {"x": [1.0]}, h).json() == {"binary": [3.5], "version": "2"}
    assert post(stack, {"x": [1.0]}, attrs(tfs_model_name="hpt_handler", tfs_model_version="1")).json() == {
        "binary": [2.5],
        "version": "1",
    }


def test_handler_exception_is_500_naming_model_and_handler(stack):
    r = post(stack, {"x": [1.0], "explode": True}, attrs(tfs_model_name="hpt_handler"))
    assert r.status_code == 500
    error = r.json()["error"]
    assert "hpt_handler" in error and "handler failed" in error and "ZeroDivisionError" in error
    # the worker survived
    assert post(stack, [1.0]).status_code == 200


def test_boto3_invoke_endpoint(stack):
    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url=stack.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}),
    )
    response = client.invoke_endpoint(
        EndpointName="local",
        Body=json.dumps({"instances": [1.0, 2.0]}),
        ContentType="application/json",
        Accept="application/json",
        CustomAttributes="tfs-model-version=1",
    )
    assert json.loads(response["Body"].read()) == {"predictions": [2.5, 3.0]}
    assert response["ContentType"] == "application/json"


def test_metrics(stack):
    post(stack, [1.0])
    text = requests.get(stack.url + "/metrics", timeout=5).text
    assert 'sagestack_requests_total{code="200",model="half_plus_three",route="/invocations"}' in text
    assert 'sagestack_runtime_instances{model="half_plus_three",state="ready"} 2.0' in text
    assert "sagestack_request_duration_seconds_bucket" in text
    assert 'sagestack_in_flight_requests{model="half_plus_three"} 0.0' in text  # the HPA's custom metric


@pytest.mark.parametrize(
    ("body", "headers", "status", "names"),
    [
        ("[" * 100_000 + "]" * 100_000, {}, 400, "nested 100000 levels deep"),
        ('{"instances": ' + "[" * 65 + "1" + "]" * 65 + "}", {}, 400, "at most 64"),
        ("\n".join(["[1.0]"] * 3 + ["[" * 70 + "]" * 70]), {"Content-Type": "application/jsonlines"}, 400, "line 4"),
        ("[1.0]", {"X-Amzn-SageMaker-Custom-Attributes": "x=" + "a" * 1100}, 400, "at most 1,024"),
        ("[1.0]", {"X-Amzn-SageMaker-Custom-Attributes": "x=" + "a" * 60_000}, 431, "headers are too large"),
        (b"\xff\xfe[1.0]", {}, 400, "malformed JSON"),
        ("[NaN, Infinity]", {}, 200, ""),
    ],
)
def test_bad_input_is_a_json_4xx_and_the_stack_stays_healthy(stack, body, headers, status, names):
    r = post(stack, body, headers)
    assert r.status_code == status, r.text
    if status >= 400:
        assert names in r.json()["error"]
    assert post(stack, [1.0]).json() == {"predictions": [3.5]}
