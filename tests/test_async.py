"""Async inference: boto3's invoke_endpoint_async against the real stack, inputs and outputs on a real moto S3
or on disk, a queue that survives a killed dispatcher and a restarted stack, inputs streamed past the payload limit."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import time
from pathlib import Path

import boto3
import psutil
import pytest
import requests
from botocore.config import Config

from bench.stack import start_stack
from server.async_queue import AsyncQueue, AsyncRequest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
BUCKET = "sagestack-async"


def request(inference_id: str, ttl: int = 600) -> AsyncRequest:
    return AsyncRequest(inference_id, "file:///in", f"file:///out/{inference_id}.out",
                        f"file:///fail/{inference_id}-error.out", None, None, None, 900, ttl)  # fmt: skip


# ---- the queue alone ---------------------------------------------------------------------------------------
def test_the_queue_hands_out_requests_oldest_first_once_each(tmp_path):
    queue = AsyncQueue(tmp_path / "q.sqlite3")
    for n, name in enumerate("abc"):
        assert queue.submit(request(name), now=100.0 + n)
    assert not queue.submit(request("a"))  # queued already: not taken twice
    first = queue.claim(now=200.0)
    assert first is not None and (first.request.inference_id, first.attempt) == ("a", 1)
    assert first.expires == 100.0 + 600
    assert queue.stats(now=200.0).backlog == 3 and queue.stats(now=200.0).oldest_age == 100.0
    queue.finish("a", True)
    assert [queue.claim().request.inference_id for _ in range(2)] == ["b", "c"]
    assert queue.claim() is None
    queue.finish("b", False, "400: bad input")
    stats = queue.stats()
    assert (stats.backlog, stats.running, stats.successes, stats.failures) == (1, 1, 1, 1)
    assert queue.submit(request("a"))  # finished: the same InferenceId may come again
    assert queue.purge(now=time.time() + 2 * 24 * 3600) == 1  # "b", finished long ago; "a" and "c" are not
    assert queue.state("b") is None and queue.stats().failures == 1  # the counts outlive the rows


def test_recovery_requeues_what_a_stopped_stack_left_running_unless_its_output_is_there(tmp_path):
    queue = AsyncQueue(tmp_path / "q.sqlite3")
    for name in ("ran", "cut", "tired"):
        queue.submit(request(name))
        queue.claim()
    for _ in range(2):  # "tired" was cut off twice more
        queue.retry("tired")
        queue.claim()
    requeued, given_up = AsyncQueue(tmp_path / "q.sqlite3").recover(
        lambda r, started: r.inference_id == "ran" and started > 0
    )
    assert requeued == ["cut"] and given_up == ["tired"]
    assert (queue.state("ran"), queue.state("cut"), queue.state("tired")) == ("done", "queued", "failed")
    again = queue.claim()
    assert again.request.inference_id == "cut" and again.attempt == 2


def test_a_retry_that_never_reached_the_gateway_does_not_count(tmp_path):
    queue = AsyncQueue(tmp_path / "q.sqlite3")
    queue.submit(request("a"))
    for _ in range(5):
        queue.claim()
        queue.retry("a", counted=False)
    assert queue.claim().attempt == 1


def test_the_dispatcher_sends_exactly_the_size_it_announced():
    from io import BytesIO

    from server.async_dispatcher import Exactly
    from server.storage import StorageError

    body = Exactly(BytesIO(b"0123456789"), 8, "file:///in")  # the file grew: the extra bytes are not sent
    assert body.read(5) + body.read() + body.read() == b"01234567"
    short = Exactly(BytesIO(b"0123"), 8, "file:///in")  # it shrank: an error, not a request left hanging
    assert short.read(3) == b"012"
    with pytest.raises(StorageError, match="short"):
        short.read(3) and short.read(3)


# ---- the real stack ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def async_models(tmp_path_factory, hpt_base):
    root = tmp_path_factory.mktemp("async-models")
    shutil.copytree(hpt_base, root / "half_plus_three")
    shutil.copytree(hpt_base, root / "hpt_async")
    shutil.copytree(FIXTURES / "async_code", root / "hpt_async" / "code")
    return root


def wait_for(path: Path, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file():
            return path.read_bytes()
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written within {timeout} s")


def runtime_client(url: str):
    return boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(retries={"max_attempts": 1}))  # fmt: skip


def metric(url: str, name: str) -> float:
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not in /metrics")


def test_boto3_invoke_endpoint_async_reads_and_writes_s3(async_models, aws, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="in/ok.json", Body=b'{"instances": [1.0, 2.0]}')
    s3.put_object(Bucket=BUCKET, Key="in/bad.json", Body=b'{"instances": ["x"')
    stack = start_stack(async_models, tmp_path / "run", SAGESTACK_ASYNC_OUTPUT_PATH=f"s3://{BUCKET}/out",
                        SAGESTACK_ASYNC_FAILURE_PATH=f"s3://{BUCKET}/fail",
                        SAGEMAKER_TFS_DEFAULT_MODEL_NAME="half_plus_three")  # fmt: skip
    try:
        client = runtime_client(stack.url)
        ok = client.invoke_endpoint_async(EndpointName="hpt", InputLocation=f"s3://{BUCKET}/in/ok.json",
                                          ContentType="application/json", InferenceId="first-one")  # fmt: skip
        assert ok["ResponseMetadata"]["HTTPStatusCode"] == 202
        assert ok["InferenceId"] == "first-one"
        assert ok["OutputLocation"] == f"s3://{BUCKET}/out/first-one.out"
        assert ok["FailureLocation"] == f"s3://{BUCKET}/fail/first-one-error.out"
        bad = client.invoke_endpoint_async(EndpointName="hpt", InputLocation=f"s3://{BUCKET}/in/bad.json",
                                           ContentType="application/json", S3OutputPathExtension="day1")  # fmt: skip
        assert bad["OutputLocation"].startswith(f"s3://{BUCKET}/out/day1/")  # a fresh UUID names it
        deadline = time.monotonic() + 60
        while metric(stack.url, "sagestack_async_backlog_size") > 0:
            assert time.monotonic() < deadline, "the backlog did not drain within 60 s"
            time.sleep(0.1)
        answer = s3.get_object(Bucket=BUCKET, Key="out/first-one.out")
        assert json.loads(answer["Body"].read()) == {"predictions": [3.5, 4.0]}
        assert answer["ContentType"] == "application/json"
        failure = json.loads(
            s3.get_object(Bucket=BUCKET, Key=f"fail/day1/{bad['InferenceId']}-error.out")["Body"].read()
        )
        assert failure["status"] == 400 and "JSON" in failure["error"] and failure["InferenceId"] == bad["InferenceId"]
        assert metric(stack.url, 'sagestack_async_invocations_total{outcome="success"}') == 1
        assert metric(stack.url, 'sagestack_async_invocations_total{outcome="failure"}') == 1
        assert metric(stack.url, "sagestack_async_oldest_request_age_seconds") == 0

        def refused(**kwargs) -> tuple[int, str]:
            headers = {"X-Amzn-SageMaker-InputLocation": f"s3://{BUCKET}/in/ok.json", **kwargs}
            r = requests.post(stack.url + "/endpoints/hpt/async-invocations", headers=headers, timeout=10)
            return r.status_code, r.json()["error"]

        code, why = refused(**{"X-Amzn-SageMaker-InputLocation": f"s3://{BUCKET}/in/missing.json"})
        assert code == 400 and "missing.json" in why
        code, why = refused(**{"X-Amzn-SageMaker-RequestTTLSeconds": "5"})
        assert code == 400 and "RequestTTLSeconds" in why
        code, why = refused(**{"X-Amzn-SageMaker-Custom-Attributes": "tfs-model-name=nope"})
        assert code == 404 and "nope" in why
        code, why = refused(**{"X-Amzn-SageMaker-InputLocation": "file:///etc/passwd"})
        assert code == 403 and "SAGESTACK_ASYNC_INPUT_PREFIXES" in why
        for bad_id in ("../escape", "a/../../x", "a?b", "a#b"):
            code, why = refused(**{"X-Amzn-SageMaker-Inference-Id": bad_id})
            assert code == 400 and "Inference-Id" in why, bad_id
        code, why = refused(**{"X-Amzn-SageMaker-Filename": "."})
        assert code == 400 and "Filename" in why
    finally:
        assert stack.stop() == 0


def test_without_an_output_path_async_is_refused_with_the_setting_named(stack):
    r = requests.post(stack.url + "/endpoints/x/async-invocations",
                      headers={"X-Amzn-SageMaker-InputLocation": "s3://b/k"}, timeout=10)  # fmt: skip
    assert r.status_code == 400 and "SAGESTACK_ASYNC_OUTPUT_PATH" in r.json()["error"]


def dispatcher_of(stack) -> psutil.Process:
    children = psutil.Process(stack.proc.pid).children()
    return next(p for p in children if "server.async_dispatcher" in p.cmdline())


def test_a_large_input_streams_through_and_the_queue_survives_a_killed_dispatcher_and_a_restart(async_models, tmp_path):
    inputs, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "ran.log"
    inputs.mkdir()
    big = inputs / "big.bin"
    with big.open("wb") as f:  # 300 MB: 50x SAGEMAKER_MAX_PAYLOAD_IN_MB
        for n in range(300):
            f.write(hashlib.sha256(str(n).encode()).digest() * (1 << 15))
    for n in range(6):
        (inputs / f"slow{n}.json").write_text(json.dumps({"x": [float(n)], "sleep": 1.5, "log": str(log)}))
    env = dict(SAGESTACK_ASYNC_OUTPUT_PATH=f"file://{out}", SAGESTACK_ASYNC_INPUT_PREFIXES=str(inputs),
               SAGESTACK_ASYNC_MAX_CONCURRENT_INVOCATIONS="2", SAGEMAKER_TFS_DEFAULT_MODEL_NAME="hpt_async",
               SAGESTACK_ASYNC_QUEUE_PATH=str(tmp_path / "queue" / "async.sqlite3"))  # fmt: skip
    stack = start_stack(async_models, tmp_path / "run1", **env)
    try:
        client = runtime_client(stack.url)
        client.invoke_endpoint_async(EndpointName="e", InputLocation=f"file://{big}", InferenceId="big",
                                     ContentType="application/octet-stream")  # fmt: skip
        answer = json.loads(wait_for(out / "big.out", timeout=120))
        digest = hashlib.sha256()
        with big.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        assert answer == {"bytes": big.stat().st_size, "sha256": digest.hexdigest()}
        workers = [
            p for p in psutil.Process(stack.proc.pid).children(recursive=True) if "gunicorn" in " ".join(p.cmdline())
        ]
        peaks = [int(Path(f"/proc/{p.pid}/status").read_text().split("VmHWM:")[1].split()[0]) // 1024 for p in workers]
        assert max(peaks) < 250, f"a gunicorn process peaked at {max(peaks)} MB for a 300 MB input"

        for n in range(6):
            client.invoke_endpoint_async(EndpointName="e", InputLocation=f"file://{inputs}/slow{n}.json",
                                         ContentType="application/json", InferenceId=f"slow{n}")  # fmt: skip
        deadline = time.monotonic() + 30
        while (not log.exists() or len(log.read_text().split()) < 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        dispatcher_of(stack).send_signal(signal.SIGKILL)  # two requests are running, four wait
        wait_for(out / "slow0.out", timeout=60)
        assert stack.stop() == 0  # drains: what runs finishes, what waits stays queued on disk
        done = {p.name for p in out.glob("slow*.out")}
        assert len(done) < 6, f"the restart test needs requests still queued when the stack stops: {done}"

        stack = start_stack(async_models, tmp_path / "run2", **env)  # a new run directory: only the queue carries over
        for n in range(6):
            assert json.loads(wait_for(out / f"slow{n}.out")) == {"y": [0.5 * n + 3.0]}
        runs = log.read_text().split()
        assert sorted(set(runs)) == [f"slow{n}" for n in range(6)], runs
        assert len(runs) <= 6 + 2, runs  # only the two the kill cut off ran again
        assert metric(stack.url, "sagestack_async_backlog_size") == 0
        assert metric(stack.url, 'sagestack_async_invocations_total{outcome="success"}') == 7
    finally:
        stack.stop()


def test_an_input_past_the_payload_limit_streams_through_the_h1c_worker_with_auth_on(async_models, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    data = hashlib.sha256(b"h1c").digest() * (20 << 15)  # 20 MB, past the 6 MB payload limit
    (inputs / "blob.bin").write_bytes(data)
    stack = start_stack(async_models, tmp_path / "run", SAGEMAKER_GUNICORN_WORKER_CLASS="gevent_h1c",
                        SAGESTACK_ASYNC_OUTPUT_PATH=f"file://{out}", SAGESTACK_ASYNC_INPUT_PREFIXES=str(inputs),
                        SAGEMAKER_TFS_DEFAULT_MODEL_NAME="hpt_async", SAGESTACK_AUTH_TOKEN="s3cret")  # fmt: skip
    auth = {"Authorization": "Bearer s3cret"}
    try:
        submit = {
            **auth,
            "X-Amzn-SageMaker-InputLocation": f"file://{inputs}/blob.bin",
            "X-Amzn-SageMaker-Inference-Id": "blob",
            "X-Amzn-SageMaker-Content-Type": "application/octet-stream",
        }
        r = requests.post(stack.url + "/endpoints/e/async-invocations", timeout=10, headers=submit)
        assert r.status_code == 202 and r.headers["X-Amzn-SageMaker-OutputLocation"] == f"file://{out}/blob.out"
        answer = json.loads(wait_for(out / "blob.out"))
        assert answer == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        workers = [p for p in psutil.Process(stack.proc.pid).children(recursive=True)
                   if "gunicorn" in " ".join(p.cmdline()) and p.parent().pid != stack.proc.pid]  # fmt: skip
        peak = max(
            int(Path(f"/proc/{p.pid}/status").read_text().split("VmHWM:")[1].split()[0]) // 1024 for p in workers
        )
        assert peak < 200, f"the h1c worker peaked at {peak} MB for a 20 MB input"
        too_big = requests.post(stack.url + "/invocations", data=data, timeout=30,
                                headers={**auth, "X-Sagestack-Async-Id": "blob"})  # fmt: skip
        assert too_big.status_code == 413  # the dispatcher's header from outside: nginx drops it
        r = requests.post(stack.url + "/invocations", json={"x": [1.0]}, headers=auth, timeout=10)
        assert r.status_code == 200 and r.json() == {"y": [3.5]}  # the worker still serves
    finally:
        assert stack.stop() == 0
