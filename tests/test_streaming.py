"""Response streaming through nginx and both gevent worker classes: chunked /invocations, boto3's
invoke_endpoint_with_response_stream over the event stream route, mid-stream failures, and a client that
goes away (the handler's generator is closed, the worker stays healthy)."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import EventStreamError

from bench.stack import start_stack
from server import eventstream

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_the_event_stream_encoding_is_what_botocore_decodes():
    parts = [eventstream.payload_part(b"hello "), eventstream.payload_part(b""), eventstream.model_stream_error("boom")]
    buffer = EventStreamBuffer()
    buffer.add_data(b"".join(parts))
    first, empty, error = list(buffer)
    assert first.payload == b"hello " and first.headers[":event-type"] == "PayloadPart"
    assert empty.payload == b""
    assert error.headers[":exception-type"] == "ModelStreamError"
    assert json.loads(error.payload) == {"Message": "boom", "ErrorCode": "ModelError"}


@pytest.fixture(scope="module", params=["gevent", "gevent_h1c"])
def streaming(request, tmp_path_factory, hpt_base):
    root = tmp_path_factory.mktemp("stream-models")
    shutil.copytree(hpt_base, root / "half_plus_three")
    shutil.copytree(hpt_base, root / "hpt_stream")
    shutil.copytree(FIXTURES / "stream_code", root / "hpt_stream" / "code")
    stack = start_stack(root, tmp_path_factory.mktemp("stream-run"), SAGEMAKER_GUNICORN_WORKER_CLASS=request.param,
                        SAGEMAKER_TFS_DEFAULT_MODEL_NAME="hpt_stream")  # fmt: skip
    yield stack
    assert stack.stop() == 0


def expected(n: int) -> list[dict]:
    return [{"i": i, "y": [0.5 * i + 3.0]} for i in range(n)]


def test_chunks_reach_the_client_as_the_handler_makes_them(streaming, tmp_path):
    gate = tmp_path / "gate"
    body = {"n": 3, "gate": str(gate)}
    with requests.post(streaming.url + "/invocations", json=body, stream=True, timeout=30) as r:
        assert r.status_code == 200 and r.headers["Transfer-Encoding"] == "chunked"
        assert r.headers["Content-Type"] == "application/jsonlines"
        lines = r.iter_lines()
        assert json.loads(next(lines)) == expected(1)[0]  # before the handler may make the second
        assert in_flight(streaming.url) == 1  # a stream is in flight until its last chunk
        gate.touch()
        assert [json.loads(line) for line in lines] == expected(3)[1:]
    deadline = time.monotonic() + 10
    while in_flight(streaming.url) != 0:
        assert time.monotonic() < deadline, "the stream's end was not counted"
        time.sleep(0.05)


def in_flight(url: str) -> float:
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith('sagestack_in_flight_requests{model="hpt_stream"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def runtime(url: str):
    return boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}))  # fmt: skip


def test_boto3_iterates_the_payload_parts(streaming):
    response = runtime(streaming.url).invoke_endpoint_with_response_stream(
        EndpointName="hpt", Body=json.dumps({"n": 4}), ContentType="application/json"
    )
    assert response["ContentType"] == "application/jsonlines"
    parts = [event["PayloadPart"]["Bytes"] for event in response["Body"]]
    assert len(parts) == 4
    assert [json.loads(line) for line in b"".join(parts).splitlines()] == expected(4)


def test_a_whole_answer_is_one_payload_part(streaming):
    body = json.dumps({"instances": [1.0]})
    response = runtime(streaming.url).invoke_endpoint_with_response_stream(
        EndpointName="hpt", Body=body, ContentType="application/json",
        CustomAttributes="tfs-model-name=half_plus_three", Accept="application/json",
    )  # fmt: skip
    assert response["ContentType"] == "application/json"
    parts = [event["PayloadPart"]["Bytes"] for event in response["Body"]]
    assert len(parts) == 1 and json.loads(parts[0]) == {"predictions": [3.5]}


def test_a_failure_mid_stream_is_a_model_stream_error_and_a_cut_chunked_body(streaming):
    response = runtime(streaming.url).invoke_endpoint_with_response_stream(
        EndpointName="hpt", Body=json.dumps({"n": 4, "fail_at": 2}), ContentType="application/json"
    )
    got = []
    with pytest.raises(EventStreamError) as caught:
        for event in response["Body"]:
            got.append(event["PayloadPart"]["Bytes"])
    assert len(got) == 2
    assert caught.value.response["Error"]["Code"] == "ModelStreamError"
    assert "failed at chunk 2" in caught.value.response["Error"]["Message"]
    with requests.post(streaming.url + "/invocations", json={"n": 4, "fail_at": 2}, stream=True, timeout=30) as r:
        assert r.status_code == 200
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            list(r.iter_lines())


@pytest.mark.parametrize("fail_at", [-1, 0])
def test_a_failure_before_any_output_is_a_plain_error_status(streaming, fail_at):
    for path in ("/invocations", "/endpoints/e/invocations-response-stream"):
        r = requests.post(streaming.url + path, json={"n": 2, "fail_at": fail_at}, timeout=30)
        assert r.status_code == 500 and "hpt_stream" in r.json()["error"]


def test_a_client_that_goes_away_stops_the_generation(streaming, tmp_path):
    marker = tmp_path / "made"
    body = json.dumps({"n": 400, "every": 0.05, "marker": str(marker)}).encode()
    url = urlparse(streaming.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%b" % (len(body), body))  # fmt: skip
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200")  # the head (and the first chunk or so); then the client is gone
    deadline = time.monotonic() + 15
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the handler's generator was not closed when the client went away"
    assert int(marker.read_text()) < 100  # 400 chunks would take 20 s
    assert requests.get(streaming.url + "/ping", timeout=5).status_code == 200
    after = requests.post(streaming.url + "/invocations", json={"n": 2}, timeout=30)
    assert [json.loads(line) for line in after.text.splitlines()] == expected(2)
