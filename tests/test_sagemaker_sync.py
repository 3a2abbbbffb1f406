"""The SageMaker sync layer against a real local moto server, through boto3."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import boto3
import pytest

from bench.stack import ROOT
from containers.sagemaker_sync import PushRequest, SageMakerSync, SyncError, endpoint_models
from server.model_archive import ArchiveError, pack


@pytest.fixture(scope="module")
def models(hpt_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("push")
    shutil.copytree(hpt_base, root / "half_plus_three")
    return root


def request(models, endpoint, **kw) -> PushRequest:
    return PushRequest("half_plus_three", endpoint, "ml.c5.xlarge", models, push_image=False, **kw)


def actions(steps) -> dict[str, str]:
    return {s.what: s.action for s in steps}


def test_create_then_rerun_is_a_no_op(aws, models):
    first = SageMakerSync(boto3.Session(), log=lambda m: None).push(request(models, "hpt-a"))
    done = actions(first)
    assert done["Model"] == done["EndpointConfig"] == "created"
    assert done["model.tar.gz"] == "uploaded"
    assert [s.action for s in first if s.what == "Endpoint"] == ["created", "InService"]
    sm = boto3.client("sagemaker")
    endpoint = sm.describe_endpoint(EndpointName="hpt-a")
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_TFS_DEFAULT_MODEL_NAME"] == "half_plus_three"
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.c5.xlarge"
    assert boto3.client("ecr").describe_repositories()["repositories"][0]["repositoryName"] == "sagestack"

    second = SageMakerSync(boto3.Session(), log=lambda m: None).push(request(models, "hpt-a"))
    assert {s.action for s in second} == {"exists", "skipped"}


def test_changed_env_makes_a_new_config_and_a_blue_green_update(aws, models):
    SageMakerSync(boto3.Session(), log=lambda m: None).push(request(models, "hpt-b"))
    sm = boto3.client("sagemaker")
    old_config = sm.describe_endpoint(EndpointName="hpt-b")["EndpointConfigName"]
    session = boto3.Session()
    calls = []
    session.events.register("provide-client-params.sagemaker.UpdateEndpoint", lambda params, **_: calls.append(params))
    sync = SageMakerSync(session, log=lambda m: None)
    # moto does not implement UpdateEndpoint (HTTP 500): the push must say it failed, not pretend.
    with pytest.raises(SyncError, match="update_endpoint"):
        sync.push(request(models, "hpt-b", env={"SAGEMAKER_GUNICORN_WORKERS": "2"}))
    done = actions(sync.steps)
    assert done["Model"] == done["EndpointConfig"] == "created"
    new_config = next(s.detail for s in sync.steps if s.what == "EndpointConfig")
    assert new_config != old_config
    assert calls and calls[0] == {"EndpointName": "hpt-b", "EndpointConfigName": new_config}
    assert done["Endpoint"] == "failed"
    assert sm.describe_endpoint(EndpointName="hpt-b")["EndpointConfigName"] == old_config
    model = sm.describe_model(
        ModelName=sm.describe_endpoint_config(EndpointConfigName=new_config)["ProductionVariants"][0]["ModelName"]
    )
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_GUNICORN_WORKERS"] == "2"


def test_an_async_endpoint_gets_async_inference_config(aws, models):
    """`push --async-output-path` makes the EndpointConfig carry AsyncInferenceConfig, as boto3 sent it to moto."""
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "push", "--model", "half_plus_three", "--endpoint-name", "hpt-async",
         "--instance-type", "ml.m5.large", "--model-dir", str(models), "--no-image-push",
         "--async-output-path", "s3://async-out/results", "--async-failure-path", "s3://async-out/failures",
         "--async-max-concurrent-invocations", "3"],
        capture_output=True, text=True, cwd=ROOT, env=os.environ.copy(), timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    sm = boto3.client("sagemaker")
    config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName="hpt-async")["EndpointConfigName"]
    )
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {"S3OutputPath": "s3://async-out/results", "S3FailurePath": "s3://async-out/failures"},
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 3},
    }
    env = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] == "1024"  # SageMaker's queue sends up to 1 GB
    SageMakerSync(boto3.Session(), log=lambda m: None).push(request(models, "hpt-realtime"))
    plain = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName="hpt-realtime")["EndpointConfigName"]
    )
    assert "AsyncInferenceConfig" not in plain
    lone = subprocess.run([sys.executable, "-m", "server.cli", "push", "--model", "half_plus_three", "--endpoint-name",
                           "x", "--instance-type", "ml.m5.large", "--async-failure-path", "s3://a/b", "--dry-run"],
                          capture_output=True, text=True, cwd=ROOT, env=os.environ.copy(), timeout=120)  # fmt: skip
    assert lone.returncode != 0 and "--async-output-path" in lone.stderr


def test_dry_run_changes_nothing(aws, models):
    lines = []
    steps = SageMakerSync(boto3.Session(), log=lines.append).push(
        request(models, "hpt-dry", autoscale=(1, 3), dry_run=True)
    )
    assert {s.what: s.action for s in steps}["Endpoint"] == "planned"
    assert any("autoscaling" in line and "planned" in line for line in lines)
    with pytest.raises(Exception, match="Could not find"):
        boto3.client("sagemaker").describe_endpoint(EndpointName="hpt-dry")


def test_autoscaling_registered_once(aws, models):
    first = SageMakerSync(boto3.Session(), log=lambda m: None).push(request(models, "hpt-c", autoscale=(1, 4)))
    assert actions(first)["autoscaling"] == "registered"
    resource = "endpoint/hpt-c/variant/AllTraffic"
    aas = boto3.client("application-autoscaling")
    target = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource])["ScalableTargets"][0]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    policy = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource)["ScalingPolicies"][0]
    metric = policy["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"]
    assert metric["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    again = SageMakerSync(boto3.Session(), log=lambda m: None).push(request(models, "hpt-c", autoscale=(1, 4)))
    assert actions(again)["autoscaling"] == "exists"


def test_clear_errors(aws, models, monkeypatch, tmp_path):
    with pytest.raises(SyncError, match="unknown region 'mars-north-1'"):
        SageMakerSync(boto3.Session(region_name="mars-north-1")).push(request(models, "x"))
    with pytest.raises(SyncError, match=r"is not built|neither podman nor docker"):
        SageMakerSync(boto3.Session()).push(PushRequest("half_plus_three", "x", "ml.c5.xlarge", models, image="nope:1"))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(SyncError, match="no AWS credentials"):
        SageMakerSync(boto3.Session()).push(request(models, "x"))


def test_model_tarball_is_deterministic(models, tmp_path):
    """The same files give the same bytes even when copied at another time (times, owners zeroed)."""
    time.sleep(1.1)
    copy = tmp_path / "copy"
    shutil.copytree(models / "half_plus_three", copy / "half_plus_three")  # new mtimes
    for path in (copy / "half_plus_three").rglob("*"):
        os.utime(path, (time.time() + 3600, time.time() + 3600))
    assert pack(models, ["half_plus_three"]) == pack(copy, ["half_plus_three"])
    with pytest.raises(ArchiveError, match="does not exist"):
        pack(models, ["nothing"])


def test_an_endpoint_ships_its_compiled_twin(models, tmp_path):
    shutil.copytree(models / "half_plus_three", tmp_path / "m")
    assert endpoint_models(tmp_path, "m") == ["m"]
    shutil.copytree(models / "half_plus_three", tmp_path / "m_compiled")
    assert endpoint_models(tmp_path, "m") == ["m", "m_compiled"]


def test_dry_run_needs_no_image_and_no_credentials(models, monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    lines = []
    req = PushRequest("half_plus_three", "hpt-plan", "ml.c5.xlarge", models, image="never-built:1", dry_run=True,
                      autoscale=(1, 2))  # fmt: skip
    steps = SageMakerSync(boto3.Session(region_name="us-east-1"), log=lines.append).push(req)
    planned = {s.what for s in steps if s.action == "planned"}
    assert planned >= {"image", "ECR repository", "S3 bucket", "model.tar.gz", "Model", "EndpointConfig", "Endpoint"}
    assert any("never-built:1" in line for line in lines) and any("autoscaling" in line for line in lines)


def test_cli_dry_run_prints_the_plan(aws, models):
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "push", "--model", "half_plus_three", "--endpoint-name", "hpt-cli",
         "--instance-type", "ml.m5.large", "--model-dir", str(models), "--no-image-push", "--dry-run"],
        capture_output=True, text=True, cwd=ROOT, env=os.environ.copy(), timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "plan (--dry-run" in result.stdout and "Endpoint" in result.stdout and "planned" in result.stdout


@pytest.mark.stack
def test_invoke_local(stack):
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "invoke", "--endpoint-name", "local", "--local", "--url", stack.url],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert '"predictions":[3.5,4.0,5.5]' in result.stdout


def test_push_sends_the_endpoint_config_and_a_change_of_weights_alone_is_update_weights(aws, models, tmp_path):
    """The file `sagestack serve` takes, pushed: a Model per variant, the weights, data capture, async; then new
    weights alone, as UpdateEndpointWeightsAndCapacities (no new config, no blue/green)."""
    import json

    shutil.copytree(models / "half_plus_three", tmp_path / "models" / "half_plus_three")
    shutil.copytree(models / "half_plus_three", tmp_path / "models" / "hpt_challenger")
    config = {
        "EndpointConfigName": "hpt-canary",
        "ProductionVariants": [
            {"VariantName": "champion", "ModelName": "half_plus_three", "InitialVariantWeight": 0.9},
            {"VariantName": "challenger", "ModelName": "hpt-challenger", "InitialVariantWeight": 0.1,
             "InstanceType": "ml.m5.large"},
        ],
        "DataCaptureConfig": {"InitialSamplingPercentage": 20, "DestinationS3Uri": "s3://capture/hpt",
                              "CaptureOptions": [{"CaptureMode": "Input"}]},
        "AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": "s3://async-out/canary"}},
    }  # fmt: skip
    path = tmp_path / "endpoint.json"
    path.write_text(json.dumps(config))

    def push(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "server.cli", "push", "--endpoint-config", str(path), "--endpoint-name",
             "hpt-canary", "--instance-type", "ml.c5.xlarge", "--model-dir", str(tmp_path / "models"),
             "--no-image-push", *extra], capture_output=True, text=True, cwd=ROOT, env=os.environ.copy(), timeout=300,
        )  # fmt: skip

    first = push()
    assert first.returncode == 0, first.stderr
    sm = boto3.client("sagemaker")
    endpoint = sm.describe_endpoint(EndpointName="hpt-canary")
    sent = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variants = {v["VariantName"]: v for v in sent["ProductionVariants"]}
    assert {k: v["InitialVariantWeight"] for k, v in variants.items()} == {"champion": 0.9, "challenger": 0.1}
    assert (
        variants["challenger"]["InstanceType"] == "ml.m5.large"
        and variants["champion"]["InstanceType"] == "ml.c5.xlarge"
    )
    served = {k: sm.describe_model(ModelName=v["ModelName"])["PrimaryContainer"] for k, v in variants.items()}
    assert served["challenger"]["Environment"]["SAGEMAKER_TFS_DEFAULT_MODEL_NAME"] == "hpt_challenger"
    assert "/hpt_challenger/" in served["challenger"]["ModelDataUrl"]  # each variant's tarball carries its model
    assert served["champion"]["Environment"]["SAGEMAKER_MAX_PAYLOAD_IN_MB"] == "1024"  # async
    assert sent["DataCaptureConfig"]["DestinationS3Uri"] == "s3://capture/hpt"
    assert sent["AsyncInferenceConfig"] == config["AsyncInferenceConfig"]

    config["ProductionVariants"][0]["InitialVariantWeight"] = 0.5
    config["ProductionVariants"][1]["InitialVariantWeight"] = 0.5
    path.write_text(json.dumps(config))
    second = push()
    assert second.returncode == 0, second.stderr
    assert "variant weights" in second.stdout and "updated" in second.stdout
    after = sm.describe_endpoint(EndpointName="hpt-canary")
    assert after["EndpointConfigName"] == endpoint["EndpointConfigName"]  # no new config: weights only
    current = {v["VariantName"]: v["CurrentWeight"] for v in after["ProductionVariants"]}
    assert current == {"champion": 0.5, "challenger": 0.5}
    weights = subprocess.run([sys.executable, "-m", "server.cli", "variants", "set-weights", "champion=1",
                              "challenger=0.25", "--endpoint-name", "hpt-canary"], capture_output=True, text=True,
                             cwd=ROOT, env=os.environ.copy(), timeout=120)  # fmt: skip
    assert weights.returncode == 0, weights.stderr
    now = sm.describe_endpoint(EndpointName="hpt-canary")["ProductionVariants"]
    assert {v["VariantName"]: v["CurrentWeight"] for v in now} == {"champion": 1.0, "challenger": 0.25}

    config["DataCaptureConfig"]["DestinationS3Uri"] = "file:///tmp/capture"
    path.write_text(json.dumps(config))
    local_only = push("--dry-run")
    assert local_only.returncode != 0 and "DataCaptureConfig.DestinationS3Uri" in local_only.stderr
