"""`sagestack push`: the same image and model directory, onto a SageMaker endpoint, idempotently.

1. ECR: create the repository if needed, log in with get_authorization_token, tag and push the
   local image (tagged by its image id, so a changed image is a new URI).
2. S3: pack the model directory as model.tar.gz (deterministically, so the same files give the
   same key) and upload it unless that key exists.
3. SageMaker: Model and EndpointConfig are named after a hash of what defines them, so a rerun
   finds them and changes nothing, while a changed image or env makes new ones; the Endpoint is
   created, left alone, or updated to the new config (a blue/green deployment), then awaited.
4. Optionally, Application Auto Scaling target tracking on invocations per instance.

It uses boto3's standard configuration (profiles, AWS_ENDPOINT_URL, region), so the same command
runs against a local moto server. --dry-run prints the plan and mutates nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, NoCredentialsError

from server import model_archive
from server.endpoint_config import DEFAULT_VARIANT, EndpointConfig, for_botocore

REPOSITORY = "sagestack"
CLIENT_CONFIG = Config(retries={"max_attempts": 3, "mode": "standard"})
# Error codes that mean "not there" across ECR, S3 (HEAD answers a bare status) and SageMaker.
NOT_FOUND = {
    "RepositoryNotFoundException",
    "ImageNotFoundException",
    "404",
    "NoSuchBucket",
    "NoSuchKey",
    "ValidationException",
    "ResourceNotFound",
    "ResourceNotFoundException",
}


# What an async endpoint's container needs (the user's --env-file wins): SageMaker's queue sends it inputs of up
# to 1 GB and waits up to InvocationTimeoutSeconds (at most 3600 s) for each answer.
ASYNC_ENV = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1024", "SAGEMAKER_GUNICORN_TIMEOUT_SECONDS": "3600"}


class SyncError(RuntimeError):
    """A problem the user can fix; the message says what."""


@dataclass
class PushRequest:
    model: str
    endpoint_name: str
    instance_type: str | None
    model_dir: Path
    image: str = "sagestack:latest"
    instance_count: int = 1
    env: dict[str, str] = field(default_factory=dict)
    role_arn: str | None = None
    push_image: bool = True
    autoscale: tuple[int, int] | None = None
    target_invocations: int = 100
    dry_run: bool = False
    wait_seconds: float = 1800
    async_output_path: str | None = None  # set: the endpoint is async (AsyncInferenceConfig)
    async_failure_path: str | None = None
    async_max_concurrent_invocations: int | None = None
    endpoint_config: EndpointConfig | None = None  # --endpoint-config: its variants, shadow, capture, explainer

    def async_config(self) -> dict[str, Any] | None:
        """CreateEndpointConfig's AsyncInferenceConfig, or None for a real-time endpoint."""
        if self.endpoint_config is not None:
            return self.endpoint_config.raw.get("AsyncInferenceConfig")
        if self.async_output_path is None:
            return None
        output: dict[str, Any] = {"S3OutputPath": self.async_output_path}
        if self.async_failure_path:
            output["S3FailurePath"] = self.async_failure_path
        config: dict[str, Any] = {"OutputConfig": output}
        if self.async_max_concurrent_invocations:
            config["ClientConfig"] = {"MaxConcurrentInvocationsPerInstance": self.async_max_concurrent_invocations}
        return config


@dataclass
class Step:
    what: str
    action: str  # created | exists | updated | uploaded | pushed | planned | failed | registered
    detail: str = ""


def short_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def sagemaker_request(config: EndpointConfig, instance_type: str | None, instance_count: int) -> dict[str, Any]:
    """The file's CreateEndpointConfig request as SageMaker takes it: sagestack's SamplingPercentage as the shadow's
    weight relative to production's, each variant's instance type and count (the flags' where the file has none),
    and S3 for every location SageMaker writes to."""
    request = for_botocore(config.raw)
    for key, variants in (("ProductionVariants", request["ProductionVariants"]),
                          ("ShadowProductionVariants", request.get("ShadowProductionVariants", []))):  # fmt: skip
        for i, variant in enumerate(variants):
            variant.setdefault("InitialInstanceCount", instance_count)
            if "InstanceType" not in variant and "ServerlessConfig" not in variant:
                if not instance_type:
                    raise SyncError(f"{key}[{i}].InstanceType: give it in the file or as --instance-type")
                variant["InstanceType"] = instance_type
    if config.shadow is not None:
        production = float(request["ProductionVariants"][0].get("InitialVariantWeight", 1.0))
        request["ShadowProductionVariants"][0]["InitialVariantWeight"] = production * config.shadow_percentage / 100
    where = [("DataCaptureConfig.DestinationS3Uri", (request.get("DataCaptureConfig") or {}).get("DestinationS3Uri"))]
    output = (request.get("AsyncInferenceConfig") or {}).get("OutputConfig", {})
    where += [(f"AsyncInferenceConfig.OutputConfig.{k}", output.get(k)) for k in ("S3OutputPath", "S3FailurePath")]
    for field_name, uri in where:
        if uri and not uri.startswith("s3://"):
            raise SyncError(f"{field_name}: SageMaker writes to S3, not {uri!r} (use an s3:// URI in the pushed file)")
    return json.loads(json.dumps(request))


def endpoint_models(model_dir: Path, model: str) -> list[str]:
    """What one endpoint's model.tar.gz carries: the model, and its compiled twin where `sagestack compile` made one."""
    return [model] + ([f"{model}_compiled"] if (model_dir / f"{model}_compiled").is_dir() else [])


def container_cli() -> str | None:
    return shutil.which("podman") or shutil.which("docker")


def local_image_id(image: str) -> str:
    cli = container_cli()
    if cli is None:
        raise SyncError("neither podman nor docker is installed; build the image first (make image)")
    result = subprocess.run([cli, "image", "inspect", image, "--format", "{{.Id}}"], capture_output=True, text=True)
    if result.returncode != 0:
        raise SyncError(f"image {image} is not built (run `make image`): {result.stderr.strip()}")
    return result.stdout.strip().removeprefix("sha256:")


class SageMakerSync:
    def __init__(self, session: boto3.Session, log: Callable[[str], None] = print) -> None:
        self.session = session
        self.log = log
        self.steps: list[Step] = []
        self.offline = False  # a dry run without credentials: nothing is looked up, everything is planned
        self.region = session.region_name

    def client(self, name: str):
        return self.session.client(name, config=CLIENT_CONFIG, region_name=self.region)

    def _step(self, what: str, action: str, detail: str = "") -> None:
        self.steps.append(Step(what, action, detail))
        self.log(f"{what:<18} {action:<10} {detail}")

    def check_environment(self) -> str:
        region = self.session.region_name
        if not region:
            raise SyncError("no AWS region: set AWS_DEFAULT_REGION, or region in your profile")
        if region not in self.session.get_available_regions("sagemaker"):
            raise SyncError(f"unknown region {region!r}: SageMaker is not offered there")
        if self.session.get_credentials() is None:
            raise SyncError("no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE")
        try:
            return self.client("sts").get_caller_identity()["Account"]
        except NoCredentialsError:
            raise SyncError("no AWS credentials found") from None
        except ClientError as exc:
            raise SyncError(f"AWS rejected the credentials: {exc}") from None

    def _lookup(self, describe: Callable[[], Any]) -> Any | None:
        """What describe() answers, or None when its resource does not exist; offline, nothing exists yet."""
        if self.offline:
            return None
        try:
            return describe()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in NOT_FOUND:
                return None
            raise

    def push(self, req: PushRequest) -> list[Step]:
        if req.dry_run and self.session.get_credentials() is None:
            self.offline = True
            account, region = "<account>", self.region or "us-east-1"
            self.region = region
            self._step("AWS", "offline", "no credentials: the plan assumes nothing exists yet")
        else:
            account, region = self.check_environment(), self.session.region_name
        image_uri = self.push_image(req, account, region)
        role = req.role_arn or f"arn:aws:iam::{account}:role/SageMakerExecutionRole"
        if req.endpoint_config is not None:
            config_name, weights = self.configured_endpoint(req, account, region, image_uri, role)
        else:
            served = endpoint_models(req.model_dir, req.model)
            model_name = self.variant_model(req, account, region, image_uri, role, served)
            defining: tuple[Any, ...] = (model_name, req.instance_type, req.instance_count)
            if req.async_config():  # a real-time endpoint keeps the name it always had
                defining += (req.async_config(),)
            config_name, weights = f"{req.endpoint_name}-{short_hash(*defining)}", {}
            self.ensure_endpoint_config(req, config_name, model_name)
        self.ensure_endpoint(req, config_name, weights)
        if req.autoscale:
            self.ensure_autoscaling(req)
        return self.steps

    def variant_model(self, req: PushRequest, account: str, region: str, image_uri: str, role: str,
                      models: list[str]) -> str:  # fmt: skip
        """The SageMaker Model serving `models[0]` (its model.tar.gz carries `models`), created if new."""
        model_data = self.upload_model(req, account, region, models)
        env = {"SAGEMAKER_TFS_DEFAULT_MODEL_NAME": models[0], **(ASYNC_ENV if req.async_config() else {}), **req.env}
        model_name = f"{req.endpoint_name}-{short_hash(image_uri, model_data, env, role)}"
        self.ensure_model(req, model_name, image_uri, model_data, env, role)
        return model_name

    def configured_endpoint(self, req: PushRequest, account: str, region: str, image_uri: str,
                            role: str) -> tuple[str, dict[str, float]]:  # fmt: skip
        """--endpoint-config: a Model per variant (its model alone), then the file's EndpointConfig with those
        Models. The config's name leaves the weights out, so a change of weights alone keeps the config and
        becomes UpdateEndpointWeightsAndCapacities (ensure_endpoint): no blue/green deployment."""
        config = req.endpoint_config
        assert config is not None
        request = sagemaker_request(config, req.instance_type, req.instance_count)
        for variant in (*request["ProductionVariants"], *request.get("ShadowProductionVariants", [])):
            model = config.variant(variant["VariantName"])
            assert model is not None
            variant["ModelName"] = self.variant_model(req, account, region, image_uri, role, [model.model])
        weights = {v["VariantName"]: float(v.get("InitialVariantWeight", 1.0)) for v in request["ProductionVariants"]}
        unweighted = json.loads(json.dumps(request))
        for variant in unweighted["ProductionVariants"]:
            variant.pop("InitialVariantWeight", None)
        name = f"{req.endpoint_name}-{short_hash(unweighted)}"
        request["EndpointConfigName"] = name
        sm = self.client("sagemaker")
        if self._lookup(lambda: sm.describe_endpoint_config(EndpointConfigName=name)):
            self._step("EndpointConfig", "exists", name)
        elif req.dry_run:
            shadow = ", shadow" if request.get("ShadowProductionVariants") else ""
            self._step("EndpointConfig", "planned", f"create {name} ({', '.join(weights)}{shadow})")
        else:
            sm.create_endpoint_config(**request)
            self._step("EndpointConfig", "created", f"{name} ({', '.join(f'{k}={v:g}' for k, v in weights.items())})")
        return name, weights

    # ---- 1. ECR -------------------------------------------------------------------------------
    def push_image(self, req: PushRequest, account: str, region: str) -> str:
        tag = req.image.rsplit(":", 1)[-1]
        if req.push_image:
            try:
                tag = local_image_id(req.image)[:12]
            except SyncError as exc:
                if not req.dry_run:
                    raise
                self._step("image", "planned", f"{exc}; tagged by its image id once built")
                tag = "<image-id>"
        registry = f"{account}.dkr.ecr.{region}.amazonaws.com"
        uri = f"{registry}/{REPOSITORY}:{tag}"
        ecr = self.client("ecr")
        if self._lookup(lambda: ecr.describe_repositories(repositoryNames=[REPOSITORY])):
            self._step("ECR repository", "exists", REPOSITORY)
        elif req.dry_run:
            self._step("ECR repository", "planned", f"create {REPOSITORY}")
        else:
            ecr.create_repository(repositoryName=REPOSITORY, imageScanningConfiguration={"scanOnPush": True})
            self._step("ECR repository", "created", REPOSITORY)
        if not req.push_image:
            self._step("image", "skipped", f"--no-image-push: using {uri}")
            return uri
        if self._lookup(lambda: ecr.describe_images(repositoryName=REPOSITORY, imageIds=[{"imageTag": tag}])):
            self._step("image", "exists", uri)
            return uri
        if req.dry_run:
            self._step("image", "planned", f"tag {req.image} as {uri} and push")
            return uri
        auth = ecr.get_authorization_token()["authorizationData"][0]
        user, password = base64.b64decode(auth["authorizationToken"]).decode().split(":", 1)
        cli = container_cli()
        subprocess.run([cli, "tag", req.image, uri], check=True)
        login = [cli, "login", "--username", user, "--password-stdin", registry]  # docker and podman alike
        logged_in = subprocess.run(login, input=password, capture_output=True, text=True)
        if logged_in.returncode != 0:
            raise SyncError(f"{cli} login to {registry} failed: {logged_in.stderr.strip()[-500:]}")
        pushed = subprocess.run([cli, "push", uri], capture_output=True, text=True)
        if pushed.returncode != 0:
            raise SyncError(f"pushing {uri} to {auth['proxyEndpoint']} failed: {pushed.stderr.strip()[-500:]}")
        self._step("image", "pushed", uri)
        return uri

    # ---- 2. S3 --------------------------------------------------------------------------------
    def upload_model(self, req: PushRequest, account: str, region: str, models: list[str]) -> str:
        try:
            data = model_archive.pack(req.model_dir, models)
        except model_archive.ArchiveError as exc:
            raise SyncError(str(exc)) from None
        digest = hashlib.sha256(data).hexdigest()[:16]
        bucket = f"sagestack-{account}-{region}"
        key = f"models/{models[0]}/{digest}/model.tar.gz"
        url = f"s3://{bucket}/{key}"
        s3 = self.client("s3")
        carries = " + ".join(models)
        if self._lookup(lambda: s3.head_bucket(Bucket=bucket)):
            pass
        elif req.dry_run:
            self._step("S3 bucket", "planned", f"create {bucket}")
        else:
            extra = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            s3.create_bucket(Bucket=bucket, **extra)
            self._step("S3 bucket", "created", bucket)
        if self._lookup(lambda: s3.head_object(Bucket=bucket, Key=key)):
            self._step("model.tar.gz", "exists", url)
        elif req.dry_run:
            self._step("model.tar.gz", "planned", f"upload {len(data) / 2**20:.1f} MB ({carries}) to {url}")
        else:
            s3.put_object(Bucket=bucket, Key=key, Body=data)
            self._step("model.tar.gz", "uploaded", f"{len(data) / 2**20:.1f} MB ({carries}) to {url}")
        return url

    # ---- 3. SageMaker -------------------------------------------------------------------------
    def ensure_model(self, req: PushRequest, name: str, image: str, data: str, env: dict, role: str) -> None:
        sm = self.client("sagemaker")
        if self._lookup(lambda: sm.describe_model(ModelName=name)):
            self._step("Model", "exists", name)
        elif req.dry_run:
            self._step("Model", "planned", f"create {name} (image {image}, env {len(env)} vars)")
        else:
            container = {"Image": image, "ModelDataUrl": data, "Environment": env}
            sm.create_model(ModelName=name, PrimaryContainer=container, ExecutionRoleArn=role)
            self._step("Model", "created", name)

    def ensure_endpoint_config(self, req: PushRequest, name: str, model_name: str) -> None:
        sm = self.client("sagemaker")
        if self._lookup(lambda: sm.describe_endpoint_config(EndpointConfigName=name)):
            self._step("EndpointConfig", "exists", name)
        elif req.dry_run:
            kind = ", async" if req.async_config() else ""
            self._step("EndpointConfig", "planned", f"create {name} ({req.instance_count} x {req.instance_type}{kind})")
        else:
            variant = {
                "VariantName": DEFAULT_VARIANT,
                "ModelName": model_name,
                "InstanceType": req.instance_type,
                "InitialInstanceCount": req.instance_count,
                "InitialVariantWeight": 1.0,
            }
            extra = {"AsyncInferenceConfig": req.async_config()} if req.async_config() else {}
            sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant], **extra)
            self._step("EndpointConfig", "created", name)

    def ensure_endpoint(self, req: PushRequest, config_name: str, weights: dict[str, float]) -> None:
        sm = self.client("sagemaker")
        current = self._lookup(lambda: sm.describe_endpoint(EndpointName=req.endpoint_name))
        if current is None:
            if req.dry_run:
                self._step("Endpoint", "planned", f"create {req.endpoint_name} with {config_name}")
                return
            sm.create_endpoint(EndpointName=req.endpoint_name, EndpointConfigName=config_name)
            self._step("Endpoint", "created", req.endpoint_name)
        elif current["EndpointConfigName"] == config_name:
            self._step("Endpoint", "exists", f"{req.endpoint_name} already runs {config_name}")
            self.ensure_weights(req, current, weights)
            return
        elif req.dry_run:
            self._step("Endpoint", "planned", f"blue/green update {current['EndpointConfigName']} -> {config_name}")
            return
        else:
            try:
                sm.update_endpoint(EndpointName=req.endpoint_name, EndpointConfigName=config_name)
            except ClientError as exc:
                self._step("Endpoint", "failed", f"update_endpoint to {config_name}: {exc}")
                raise SyncError(f"update_endpoint({req.endpoint_name} -> {config_name}) failed: {exc}") from None
            self._step("Endpoint", "updated", f"blue/green {current['EndpointConfigName']} -> {config_name}")
        self.wait_in_service(req)

    def ensure_weights(self, req: PushRequest, current: dict[str, Any], weights: dict[str, float]) -> None:
        """UpdateEndpointWeightsAndCapacities where the running variants' weights are not the file's."""
        running = {v["VariantName"]: v.get("DesiredWeight", v.get("CurrentWeight")) for v in
                   current.get("ProductionVariants", [])}  # fmt: skip
        changed = {name: w for name, w in weights.items() if running.get(name) is None or
                   abs(float(running[name]) - w) > 1e-9}  # fmt: skip
        if not changed:
            return
        detail = ", ".join(f"{k}={v:g}" for k, v in changed.items())
        if req.dry_run:
            self._step("variant weights", "planned", f"UpdateEndpointWeightsAndCapacities {detail}")
            return
        self.client("sagemaker").update_endpoint_weights_and_capacities(
            EndpointName=req.endpoint_name,
            DesiredWeightsAndCapacities=[{"VariantName": k, "DesiredWeight": v} for k, v in changed.items()],
        )
        self._step("variant weights", "updated", detail)

    def wait_in_service(self, req: PushRequest) -> None:
        sm = self.client("sagemaker")
        deadline = time.monotonic() + req.wait_seconds
        while True:
            status = sm.describe_endpoint(EndpointName=req.endpoint_name)["EndpointStatus"]
            if status == "InService":
                self._step("Endpoint", "InService", req.endpoint_name)
                return
            if status == "Failed":
                reason = sm.describe_endpoint(EndpointName=req.endpoint_name).get("FailureReason", "")
                raise SyncError(f"endpoint {req.endpoint_name} failed: {reason}")
            if time.monotonic() > deadline:
                raise SyncError(f"endpoint {req.endpoint_name} still {status} after {req.wait_seconds:.0f}s")
            time.sleep(15)

    # ---- 4. Autoscaling -----------------------------------------------------------------------
    def ensure_autoscaling(self, req: PushRequest) -> None:
        assert req.autoscale is not None
        low, high = req.autoscale
        aas = self.client("application-autoscaling")
        variant = req.endpoint_config.variants[0].name if req.endpoint_config else DEFAULT_VARIANT
        resource = f"endpoint/{req.endpoint_name}/variant/{variant}"
        dimension = "sagemaker:variant:DesiredInstanceCount"
        targets = self._lookup(
            lambda: aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource])
        ) or {"ScalableTargets": []}
        same = [t for t in targets["ScalableTargets"] if (t["MinCapacity"], t["MaxCapacity"]) == (low, high)]
        policy_name = f"{req.endpoint_name}-invocations"
        policies = self._lookup(
            lambda: aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource)
        ) or {"ScalingPolicies": []}
        config = {
            "TargetValue": float(req.target_invocations),
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": 300,
            "ScaleOutCooldown": 60,
        }
        same_policy = [
            p
            for p in policies["ScalingPolicies"]
            if p["PolicyName"] == policy_name
            and p.get("TargetTrackingScalingPolicyConfiguration", {}).get("TargetValue") == config["TargetValue"]
        ]
        if same and same_policy:
            self._step(
                "autoscaling", "exists", f"{low}-{high} instances, {req.target_invocations} invocations/instance"
            )
            return
        if req.dry_run:
            self._step(
                "autoscaling", "planned", f"{low}-{high} instances, {req.target_invocations} invocations/instance"
            )
            return
        aas.register_scalable_target(
            ServiceNamespace="sagemaker",
            ResourceId=resource,
            ScalableDimension=dimension,
            MinCapacity=low,
            MaxCapacity=high,
        )
        aas.put_scaling_policy(
            PolicyName=policy_name,
            ServiceNamespace="sagemaker",
            ResourceId=resource,
            ScalableDimension=dimension,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration=config,
        )
        self._step(
            "autoscaling", "registered", f"{low}-{high} instances, {req.target_invocations} invocations/instance"
        )


def invoke(endpoint_name: str, body: bytes, content_type: str, accept: str, local_url: str | None) -> tuple[bytes, str]:
    """sagemaker-runtime invoke_endpoint, against SageMaker or (local_url) the local stack."""
    session = boto3.Session()
    kwargs: dict[str, Any] = {"config": CLIENT_CONFIG}
    if local_url:
        kwargs |= {"endpoint_url": local_url, "region_name": session.region_name or "us-east-1"}
        if session.get_credentials() is None:  # the local stack does not check signatures
            kwargs |= {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
    runtime = session.client("sagemaker-runtime", **kwargs)
    response = runtime.invoke_endpoint(EndpointName=endpoint_name, Body=body, ContentType=content_type, Accept=accept)
    return response["Body"].read(), response["ContentType"]
