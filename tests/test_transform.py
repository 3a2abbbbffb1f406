"""`sagestack transform`: SageMaker batch transform against the real stack (credit_risk and anomaly), on local
folders and on a moto S3, through the real CLI."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
import requests
from botocore.validate import validate_parameters

from bench.stack import ROOT, start_stack
from models.anomaly import model as anomaly_model
from models.anomaly.generate import make_dataset, render
from models.anomaly.train import train
from models.credit_risk.build import build as build_credit
from models.credit_risk.data import load
from server.storage import Location, StoredObject
from transform.job import JobError, TransformJob, from_request
from transform.jsonpath import JsonPathError, select
from transform.records import RecordError, split_answer
from transform.run import shard

ATTRS = {"X-Amzn-SageMaker-Custom-Attributes": "tfs-model-name=credit_risk"}


def test_jsonpath_subset():
    row = ["id-7", "a", "b", "c"]
    assert select("$[1:]", row) == ["a", "b", "c"] and select("$[0,-1]", row) == ["id-7", "c"]
    assert select("$[-1]", row) == "c" and select("$", row) == row and select("$[::2]", row) == ["id-7", "b"]
    doc = {"features": [1, 2], "id": 7, "x": {"y": 3}}
    assert select("$.features[1]", doc) == 2 and select("$['id']", doc) == 7 and select("$.x.y", doc) == 3
    assert select('$["id","features"]', doc) == [7, [1, 2]] and select("$.*", doc) == [[1, 2], 7, {"y": 3}]
    with pytest.raises(JsonPathError, match="must start with"):
        select("features", doc)
    with pytest.raises(JsonPathError, match="matches nothing"):
        select("$.nope", doc)
    with pytest.raises(JsonPathError, match=r"\[a-b\] is not an index"):
        select("$[a-b]", row)


def test_shards_are_disjoint_cover_everything_and_balance():
    objects = [StoredObject(f"part-{i:03d}.csv", f"in/part-{i:03d}.csv", 10) for i in range(11)]
    shards = [shard(objects, i, 4) for i in range(4)]
    names = [o.name for s in shards for o in s]
    assert sorted(names) == sorted(o.name for o in objects) and len(set(names)) == 11
    assert {len(s) for s in shards} == {2, 3}
    assert shard(objects[::-1], 1, 4) == shards[1]  # by sorted key, whatever order the listing came in
    with pytest.raises(ValueError, match="shard index 4"):
        shard(objects, 4, 4)


def create_transform_job_request(input_uri: str, output_uri: str) -> dict:
    return {
        "TransformJobName": "credit-nightly",
        "ModelName": "credit_risk",
        "MaxConcurrentTransforms": 2,
        "MaxPayloadInMB": 1,
        "BatchStrategy": "MultiRecord",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
                           "ContentType": "text/csv", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": output_uri, "Accept": "text/csv", "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        "DataProcessing": {"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-2,-1]"},
    }  # fmt: skip


def test_the_job_json_is_what_boto3_sends():
    request = create_transform_job_request("s3://in/apps", "s3://out/scores")
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    validate_parameters(request, sagemaker.meta.service_model.operation_model("CreateTransformJob").input_shape)
    job = from_request(request, max_concurrent_transforms=5)
    assert (job.model, job.input, job.output, job.split_type, job.batch_strategy) == (
        "credit_risk", "s3://in/apps", "s3://out/scores", "Line", "MultiRecord")  # fmt: skip
    assert (job.input_filter, job.join_source, job.output_filter, job.max_payload_mb) == (
        "$[1:]",
        "Input",
        "$[0,-2,-1]",
        1,
    )
    assert job.max_concurrent_transforms == 5  # a flag beside --job-json wins
    assert job.container_env()["SAGEMAKER_BATCH_STRATEGY"] == "MULTI_RECORD"
    with pytest.raises(JobError, match="lacks 'TransformOutput'"):
        from_request({k: v for k, v in request.items() if k != "TransformOutput"})
    with pytest.raises(JobError, match="MultiRecord needs --split-type Line"):
        TransformJob("m", "in", "out", split_type="None", batch_strategy="MultiRecord")
    with pytest.raises(JobError, match="--split-type 'RecordIO'"):
        TransformJob("m", "in", "out", split_type="RecordIO")


def test_an_answer_is_split_back_per_record():
    assert split_answer(b"0.1,low risk\n0.9,high risk\n", "text/csv", 2) == [b"0.1,low risk", b"0.9,high risk"]
    preds = json.dumps({"predictions": [{"p": 0.1}, {"p": 0.9}]}).encode()
    assert split_answer(preds, "application/json", 2) == [b'{"p":0.1}', b'{"p":0.9}']
    assert split_answer(preds, "application/json", 1) == [preds]  # one record's answer is the whole body
    with pytest.raises(RecordError, match="holds 2 records for the 3 sent"):
        split_answer(b"a\nb\n", "text/csv", 3)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("transform")
    build_credit(root / "model" / "credit_risk", root / "reports" / "credit")
    make_dataset(root / "data", 20, 10, seed=3)
    train(root / "data", root / "model" / "anomaly", root / "reports" / "anomaly", [16, 16, 224, 224],
          geometry=anomaly_model.Geometry.fast())  # fmt: skip
    return root


@pytest.fixture(scope="module")
def batch_stack(models):
    stack = start_stack(
        models / "model", models / "run", SAGEMAKER_BATCH="true", SAGEMAKER_MAX_CONCURRENT_TRANSFORMS="3"
    )
    yield stack
    assert stack.stop() == 0


def transform(stack, *args: str, timeout: float = 300) -> dict:
    out = subprocess.run([sys.executable, "-m", "server.cli", "transform", "--url", stack.url, *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def csv_text(frame, **kw) -> str:
    return frame.to_csv(index=False, header=False, **kw)


def direct_scores(stack, rows: str) -> list[list[str]]:
    r = requests.post(stack.url + "/invocations", data=rows, timeout=60,
                      headers={**ATTRS, "Content-Type": "text/csv", "Accept": "text/csv"})  # fmt: skip
    assert r.status_code == 200, r.text
    return list(csv.reader(io.StringIO(r.text)))


def test_the_container_reports_its_execution_parameters(batch_stack):
    r = requests.get(batch_stack.url + "/execution-parameters", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"MaxConcurrentTransforms": 3, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}


def test_ten_thousand_credit_rows_multi_record_joined_to_the_input(batch_stack, tmp_path):
    """One bad row (an unknown category) costs only itself: its line lands in the .failed file."""
    import pandas as pd

    apps = load().drop(columns=["risk"])
    rows = pd.concat([apps] * 10, ignore_index=True)
    rows.loc[4999, "housing"] = "castle"  # line 5000
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "apps.csv").write_text(csv_text(rows))
    summary = transform(batch_stack, "--model", "credit_risk", "--input", str(tmp_path / "in"), "--output",
                        str(tmp_path / "out"), "--content-type", "text/csv", "--split-type", "Line",
                        "--batch-strategy", "MultiRecord", "--max-payload-mb", "1", "--accept", "text/csv",
                        "--assemble-with", "Line", "--join-source", "Input")  # fmt: skip
    assert summary["objects"] == 1 and summary["records"] == 9999 and summary["failed"] == 1
    out = list(csv.reader(io.StringIO((tmp_path / "out" / "apps.csv.out").read_text())))
    assert len(out) == 9999 and all(len(r) == len(apps.columns) + 2 for r in out)
    expected = direct_scores(batch_stack, csv_text(rows.head(5)))
    assert [r[-2:] for r in out[:5]] == expected  # the joined scores are the model's own
    assert out[4999][:-2] == [str(v) for v in rows.iloc[5000]]  # the bad line left out, the rest in order
    failed = [json.loads(x) for x in (tmp_path / "out" / "apps.csv.failed").read_text().splitlines()]
    assert len(failed) == 1 and failed[0]["line"] == 5000 and failed[0]["status"] == 400
    assert "housing" in failed[0]["error"] and "castle" in failed[0]["error"]


def test_a_rerun_skips_finished_objects_and_resumes_an_interrupted_one(batch_stack, tmp_path):
    apps = load().drop(columns=["risk"])
    (tmp_path / "in").mkdir()
    for i in range(12):
        (tmp_path / "in" / f"part-{i:02d}.csv").write_text(csv_text(apps.iloc[i * 50 : (i + 1) * 50]))
    args = ["--model", "credit_risk", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
            "--content-type", "text/csv", "--split-type", "Line", "--batch-strategy", "SingleRecord",
            "--accept", "text/csv", "--assemble-with", "Line", "--max-concurrent-transforms", "1"]  # fmt: skip
    argv = [sys.executable, "-m", "server.cli", "transform", "--url", batch_stack.url, *args]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((tmp_path / "out").glob("*.out"))) < 2:
        time.sleep(0.05)
    proc.kill()  # interrupted mid-way: some objects done, one in flight
    proc.wait(10)
    finished = {p.name for p in (tmp_path / "out").glob("*.out")}
    assert 2 <= len(finished) < 12
    summary = transform(batch_stack, *args)
    assert summary["skipped"] == len(finished) and summary["records"] == 50 * (12 - len(finished))
    for i in range(12):
        assert len((tmp_path / "out" / f"part-{i:02d}.csv.out").read_text().splitlines()) == 50
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".partial")]


def test_a_folder_of_pngs_to_anomaly(batch_stack, tmp_path):
    rng = np.random.default_rng(9)
    (tmp_path / "boards" / "line-2").mkdir(parents=True)
    for i in range(3):
        image, _ = render(rng, None if i else "scratch")
        image.save(tmp_path / "boards" / ("line-2" if i == 2 else "") / f"board-{i}.png")
    summary = transform(batch_stack, "--model", "anomaly", "--input", f"file://{tmp_path / 'boards'}", "--output",
                        str(tmp_path / "out"), "--content-type", "image/png")  # fmt: skip
    assert summary["records"] == 3 and summary["failed"] == 0
    outs = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.out"))
    assert outs == ["board-0.png.out", "board-1.png.out", "line-2/board-2.png.out"]  # the input's layout
    for path in (tmp_path / "out").rglob("*.out"):
        answer = json.loads(path.read_bytes())
        assert answer.keys() >= {"IsAnomalous", "Confidence", "AnomalyScore"}


def test_input_and_output_on_a_moto_s3_from_the_job_json(batch_stack, tmp_path, aws):
    """CreateTransformJob's request JSON, filters and a join: an id column rides along, unseen by the model."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="batch")
    apps = load().drop(columns=["risk"]).head(120)
    for i in range(3):
        part = apps.iloc[i * 40 : (i + 1) * 40].copy()
        part.insert(0, "id", [f"app-{i}-{n}" for n in range(40)])
        s3.put_object(Bucket="batch", Key=f"in/day-1/part-{i}.csv", Body=csv_text(part).encode())
    request = create_transform_job_request("s3://batch/in/day-1/", "s3://batch/out/day-1")
    (tmp_path / "job.json").write_text(json.dumps(request))
    summary = transform(batch_stack, "--job-json", str(tmp_path / "job.json"))
    assert summary["objects"] == 3 and summary["records"] == 120 and summary["failed"] == 0
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="batch", Prefix="out/")["Contents"])
    assert keys == [f"out/day-1/part-{i}.csv.out" for i in range(3)]
    body = s3.get_object(Bucket="batch", Key="out/day-1/part-1.csv.out")["Body"].read().decode()
    rows = list(csv.reader(io.StringIO(body)))
    assert [r[0] for r in rows] == [f"app-1-{n}" for n in range(40)]  # the filtered-out id, joined back
    assert [r[1:] for r in rows[:3]] == direct_scores(batch_stack, csv_text(apps.iloc[40:43]))
    # S3Prefix matches key text, not folders: "in/day" takes in/day-1/...; names are relative to its folder.
    listed = Location.parse("s3://batch/in/day").objects()
    assert [(o.name, o.key) for o in listed[:1]] == [("day-1/part-0.csv", "in/day-1/part-0.csv")] and len(listed) == 3


def test_jobs_that_cannot_work_fail_before_a_record_is_sent(batch_stack, tmp_path):
    """A bad filter, a join without fields to append, no such model: one clear error, no .out written."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text(csv_text(load().drop(columns=["risk"]).head(3)))
    base = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--content-type", "text/csv",
            "--split-type", "Line"]  # fmt: skip
    for extra, message in (
        (["--model", "credit_risk", "--output-filter", "$[0"], "--output-filter: JSONPath '\\$\\[0'"),
        (["--model", "credit_risk", "--join-source", "Input"], "needs --accept text/csv"),
        (["--model", "credit_risk", "--max-payload-mb", "0"], "from 1 to 100"),
        (["--model", "no_such_model"], "404"),
    ):
        out = subprocess.run([sys.executable, "-m", "server.cli", "transform", "--url", batch_stack.url, *base, *extra],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
        last = out.stderr.strip().splitlines()[-1]  # below the progress bar, on stderr
        assert out.returncode != 0 and last.startswith("sagestack transform: "), out.stderr[-500:]
        assert re.search(message, last), (message, out.stderr[-500:])
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
