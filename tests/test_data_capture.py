"""DataCaptureConfig: SageMaker's capture records from the real stack to a real moto S3, read back with
`sagestack capture read` and scored again; the writer's buffer drops (counted) instead of blocking."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import time

import boto3
import numpy as np
import pytest
import requests
from botocore.config import Config

from bench.stack import start_stack
from server import data_capture
from server.data_capture import CaptureWriter, Event, read_records
from server.endpoint_config import parse

BUCKET = "sagestack-capture"


def config(destination: str, percentage: int = 100, mode: str = "InputAndOutput") -> dict:
    return {
        "EndpointConfigName": "hpt-captured",
        "ProductionVariants": [{"VariantName": "main", "ModelName": "half_plus_three"}],
        "DataCaptureConfig": {
            "EnableCapture": True, "InitialSamplingPercentage": percentage, "DestinationS3Uri": destination,
            "CaptureOptions": [{"CaptureMode": mode}],
            "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"], "JsonContentTypes": ["application/json"]},
        },
    }  # fmt: skip


def test_records_are_sagemakers_format_in_hourly_folders_and_a_full_buffer_drops(tmp_path):
    capture = parse(config(str(tmp_path / "capture")), ["half_plus_three"]).capture
    writer = CaptureWriter(capture, buffer_records=2, buffer_bytes=1 << 20)
    at = time.time()
    for n in range(5):  # the writer flushes once a second: the buffer holds 2, three are dropped
        event = Event("hpt-captured", "main", f"id-{n}", at, b"1\n2\n", "text/csv", b'{"y":1}', "application/json")
        writer.offer(event)
    writer.flush()
    files = list((tmp_path / "capture" / "hpt-captured" / "main").rglob("*.jsonl"))
    assert files  # one, or two if the writer's own flush ran between the offers and ours
    hour = tuple(time.strftime("%Y %m %d %H", time.gmtime(at)).split())
    assert {f.parent.relative_to(tmp_path / "capture" / "hpt-captured" / "main").parts for f in files} == {hour}
    lines = [line for f in files for line in f.read_text().splitlines()]
    records = sorted(map(json.loads, lines), key=lambda r: r["eventMetadata"]["inferenceId"])
    assert [r["eventMetadata"]["inferenceId"] for r in records] == ["id-0", "id-1"]
    first = records[0]
    assert first["captureData"]["endpointInput"] == {"observedContentType": "text/csv", "mode": "INPUT",
                                                     "data": "1\n2\n", "encoding": "CSV"}  # fmt: skip
    assert first["captureData"]["endpointOutput"]["encoding"] == "JSON"
    assert first["eventMetadata"]["inferenceTime"].endswith("Z") and first["eventVersion"] == "0"
    assert len(first["eventMetadata"]["eventId"]) == 36
    assert data_capture.dataset(read_records(str(tmp_path / "capture")), "input") == ("CSV", [b"1", b"2", b"1", b"2"])


@pytest.fixture
def captured(aws, hpt_base, tmp_path):
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    shutil.copytree(hpt_base, tmp_path / "model" / "half_plus_three")
    (tmp_path / "endpoint.json").write_text(json.dumps(config(f"s3://{BUCKET}/capture")))
    stack = start_stack(tmp_path / "model", tmp_path / "run", SAGESTACK_ENDPOINT_CONFIG=str(tmp_path / "endpoint.json"))
    yield stack
    assert stack.stop() == 0


def test_the_stack_captures_csv_json_and_binary_to_s3_and_capture_read_gives_a_data_set_to_score(captured, tmp_path):
    runtime = boto3.client("sagemaker-runtime", endpoint_url=captured.url, config=Config(retries={"max_attempts": 0}))
    call = dict(EndpointName="hpt-captured")
    runtime.invoke_endpoint(**call, Body=b"1.0\n2.0\n", ContentType="text/csv", Accept="text/csv", InferenceId="csv-1")
    runtime.invoke_endpoint(**call, Body=json.dumps({"instances": [4.0]}), ContentType="application/json",
                            InferenceId="json-1")  # fmt: skip
    npy = io.BytesIO()
    np.save(npy, np.array([6.0], dtype=np.float32))
    runtime.invoke_endpoint(**call, Body=npy.getvalue(), ContentType="application/x-npy", InferenceId="npy-1")
    s3 = boto3.client("s3")
    deadline = time.monotonic() + 30
    while len(keys := [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]) < 1:
        assert time.monotonic() < deadline, "nothing was captured"
        time.sleep(0.3)
    time.sleep(data_capture.FLUSH_SECONDS * 2)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert all(k.startswith("capture/hpt-captured/main/") and k.endswith(".jsonl") for k in keys)
    records = {r["eventMetadata"]["inferenceId"]: r["captureData"] for r in read_records(f"s3://{BUCKET}/capture")}
    assert set(records) == {"csv-1", "json-1", "npy-1"}
    assert records["csv-1"]["endpointInput"]["data"] == "1.0\n2.0\n"
    assert records["csv-1"]["endpointOutput"] == {"observedContentType": "text/csv", "mode": "OUTPUT",
                                                  "data": "3.5\n4.0\n", "encoding": "CSV"}  # fmt: skip
    assert json.loads(records["json-1"]["endpointOutput"]["data"]) == {"predictions": [5.0]}
    assert records["npy-1"]["endpointInput"]["encoding"] == "BASE64"
    assert np.load(io.BytesIO(base64.b64decode(records["npy-1"]["endpointInput"]["data"]))).tolist() == [6.0]
    # only the CSV requests, read back and scored again
    csv_only = tmp_path / "csv-records"
    for key in keys:
        lines = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode().splitlines()
        keep = [line for line in lines if '"encoding":"CSV"' in line.split('"endpointOutput"')[0]]
        if keep:
            (csv_only / key).parent.mkdir(parents=True, exist_ok=True)
            (csv_only / key).write_text("\n".join(keep) + "\n")
    out = tmp_path / "again.csv"
    done = subprocess.run([sys.executable, "-m", "server.cli", "capture", "read", str(csv_only), "--out", str(out)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    again = requests.post(f"{captured.url}/invocations", data=out.read_bytes(),
                          headers={"Content-Type": "text/csv", "Accept": "text/csv"}, timeout=30)  # fmt: skip
    assert again.text == "3.5\n4.0\n"
    mixed = subprocess.run([sys.executable, "-m", "server.cli", "capture", "read", f"s3://{BUCKET}/capture"],
                           capture_output=True, text=True)  # fmt: skip
    assert mixed.returncode != 0 and "mix encodings" in mixed.stderr
    written = 'sagestack_capture_records_total{endpoint="hpt-captured",outcome="written",variant="main"} 4.0'
    deadline = time.monotonic() + 30
    while written not in (metrics := requests.get(f"{captured.url}/metrics", timeout=10).text):
        assert time.monotonic() < deadline, metrics[-2000:]  # the scoring again is captured too, within a flush
        time.sleep(0.3)
