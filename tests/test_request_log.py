"""Every request in nginx's JSON access log with its id, the gateway's time split under the same id."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import requests
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from bench.stack import start_stack

pytestmark = pytest.mark.stack
JSON = {"Content-Type": "application/json"}


def _lines(stack, rid: str, kind: str, timeout: float = 5.0) -> list[dict]:
    """The log lines of one kind for one request id (nginx writes its line after the response)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [x for x in stack.log_lines() if x.get("log") == kind and x.get("request_id") == rid]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_each_request_is_logged_once_with_its_id_and_time_split(model_dir, tmp_path):
    stack = start_stack(model_dir, tmp_path)
    try:
        r = requests.post(stack.url + "/invocations", data="[1.0, 2.0]", headers={**JSON, "X-Amzn-RequestId": "req-42"})
        assert r.status_code == 200 and r.headers["X-Amzn-RequestId"] == "req-42"
        (access,) = _lines(stack, "req-42", "access")  # nginx rounds both times to the millisecond on its own
        assert access["method"] == "POST" and access["path"] == "/invocations" and access["status"] == 200
        assert access["model"] == "half_plus_three" and access["variant"] == "default"
        assert (
            access["bytes_in"] > 0
            and access["bytes_out"] > 0
            and round(float(access["upstream_s"]) * 1e3)
            <= round(access["total_s"] * 1e3) + 1  # whole ms: float sums miss by 1e-18
        )
        (gateway,) = _lines(stack, "req-42", "gateway")
        assert gateway["model"] == "half_plus_three" and gateway["status"] == 200
        assert {"queue_ms", "input_ms", "runtime_ms", "output_ms"} <= gateway.keys()
        assert (
            gateway["runtime_ms"] > 0 and gateway["input_ms"] + gateway["runtime_ms"] <= gateway["total_ms"] + 0.002
        )  # each rounded to 1 µs

        fresh = requests.post(stack.url + "/invocations", data="[1.0]", headers=JSON)
        rid = fresh.headers["X-Amzn-RequestId"]
        assert re.fullmatch(r"[0-9a-f]{32}", rid)
        assert len(_lines(stack, rid, "access")) == 1
        bad = requests.post(stack.url + "/invocations", data="{oops", headers=JSON)
        assert bad.status_code == 400
        assert _lines(stack, bad.headers["X-Amzn-RequestId"], "access")[0]["status"] == 400
        missing = requests.get(stack.url + "/nowhere")  # answered by nginx itself
        assert missing.status_code == 404 and _lines(stack, missing.headers["X-Amzn-RequestId"], "access")

        metrics = requests.get(stack.url + "/metrics", timeout=10).text
        assert re.search(
            r'sagestack_request_phase_seconds_count\{model="half_plus_three",phase="runtime"\} [1-9]', metrics
        )
    finally:
        assert stack.stop() == 0


def test_handlers_see_the_request_id(model_dir, tmp_path):
    stack = start_stack(model_dir, tmp_path)
    try:
        headers = {**JSON, "X-Amzn-RequestId": "handler-7",
                   "X-Amzn-SageMaker-Custom-Attributes": "tfs-model-name=hpt_handled"}  # fmt: skip
        r = requests.post(stack.url + "/invocations", data='{"instances": [1.0]}', headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["request_id"] == "handler-7"
        (gateway,) = _lines(stack, "handler-7", "gateway")
        assert gateway["model"] == "hpt_handled"
    finally:
        assert stack.stop() == 0


def test_access_log_off(model_dir, tmp_path):
    stack = start_stack(model_dir, tmp_path, SAGESTACK_ACCESS_LOG="off")
    try:
        r = requests.post(stack.url + "/invocations", data="[1.0]", headers={**JSON, "X-Amzn-RequestId": "quiet"})
        assert r.status_code == 200 and r.headers["X-Amzn-RequestId"] == "quiet"
        time.sleep(1.5)  # past nginx's 1 s log flush
        assert [x for x in stack.log_lines() if x.get("request_id") == "quiet"] == []
    finally:
        assert stack.stop() == 0


def test_bearer_token_guards_everything_but_ping(model_dir, tmp_path):
    stack = start_stack(model_dir, tmp_path, grpc=True, SAGESTACK_AUTH_TOKEN="s3cret-token")
    try:
        assert requests.get(stack.url + "/ping", timeout=5).status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            r = requests.post(stack.url + "/invocations", data="[1.0]", headers={**JSON, **headers})
            assert r.status_code == 401 and "bearer token" in r.json()["error"], r.text
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert requests.get(stack.url + "/metrics", timeout=5).status_code == 401
        assert requests.get(stack.url + "/models", timeout=5).status_code == 401
        good = {**JSON, "Authorization": "Bearer s3cret-token"}
        assert requests.post(stack.url + "/invocations", data="[1.0]", headers=good).json() == {"predictions": [3.5]}
        assert requests.get(stack.url + "/metrics", headers=good, timeout=5).status_code == 200
        x = triton_grpc.InferInput("x", [1], "FP32")
        x.set_data_from_numpy(np.array([1.0], dtype=np.float32))
        client = triton_grpc.InferenceServerClient(stack.grpc)
        assert client.is_server_live() and client.is_server_ready()  # gRPC's health stays open, as /ping
        with pytest.raises(InferenceServerException, match="bearer token") as caught:
            client.infer("half_plus_three", [x], headers={"authorization": "Bearer wrong"})
        assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
        answer = client.infer("half_plus_three", [x], headers={"authorization": "Bearer s3cret-token"})
        assert answer.as_numpy("y").tolist() == [3.5]
        settings_file = tmp_path / "settings.json"
        assert settings_file.stat().st_mode & 0o077 == 0  # the token is on disk for the workers: owner only
    finally:
        assert stack.stop() == 0
