"""`sagestack push` and `sagestack invoke`: the SageMaker side (boto3 imported on use)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_push(args: argparse.Namespace) -> int:
    import boto3

    from containers.sagemaker_sync import PushRequest, SageMakerSync, SyncError
    from server.cli import settings_or_exit
    from server.settings import EnvFileError, read_env_file

    try:
        autoscale = tuple(int(x) for x in args.autoscale.split(":")) if args.autoscale else None
        model_dir = args.model_dir or settings_or_exit().model_dir
        config = endpoint_config(args.endpoint_config, model_dir) if args.endpoint_config else None
        if config is None and not (args.model and args.instance_type):
            raise SyncError("give --model and --instance-type, or --endpoint-config with the variants")
        if config is not None and (args.async_output_path or args.model):
            raise SyncError("with --endpoint-config, the file names the models and its AsyncInferenceConfig")
        req = PushRequest(
            model=args.model or (config.variants[0].model if config else ""),
            endpoint_name=args.endpoint_name,
            instance_type=args.instance_type,
            model_dir=model_dir,
            image=args.image,
            instance_count=args.instance_count,
            env=read_env_file(args.env_file) if args.env_file else {},
            role_arn=args.role_arn,
            push_image=not args.no_image_push,
            autoscale=autoscale,  # type: ignore[arg-type]
            target_invocations=args.target_invocations,
            dry_run=args.dry_run,
            async_output_path=args.async_output_path,
            async_failure_path=args.async_failure_path,
            async_max_concurrent_invocations=args.async_max_concurrent_invocations,
            endpoint_config=config,
        )
        if req.async_output_path is None and (req.async_failure_path or req.async_max_concurrent_invocations):
            raise SyncError("--async-failure-path and --async-max-concurrent-invocations need --async-output-path")
        if args.dry_run:
            print("plan (--dry-run: nothing is changed):")
        SageMakerSync(boto3.Session(profile_name=args.profile)).push(req)
    except (SyncError, EnvFileError) as exc:
        raise SystemExit(f"sagestack push: {exc}") from None
    return 0


def endpoint_config(path: Path, model_dir: Path):
    """The file, checked against the model directory, or the error naming its field."""
    from containers.sagemaker_sync import SyncError
    from server.endpoint_config import EndpointConfigError, load
    from server.modeldir import find_models

    try:
        return load(path, [spec.name for spec in find_models(model_dir)])
    except EndpointConfigError as exc:
        raise SyncError(str(exc)) from None


def cmd_invoke(args: argparse.Namespace) -> int:
    from containers.sagemaker_sync import invoke

    if args.file:
        body, ctype = args.file.read_bytes(), args.content_type
    elif args.body:
        body, ctype = args.body.encode(), args.content_type
    else:
        from bench.payloads import payload

        sample = payload(args.model)
        body, ctype = sample.body, sample.headers["Content-Type"]
    url = args.url if args.local else None
    data, content_type = invoke(args.endpoint_name, body, ctype, args.accept, url)
    sys.stdout.write(data.decode(errors="replace") + ("" if data.endswith(b"\n") else "\n"))
    print(f"({content_type})", file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    pu = sub.add_parser("push", help="push the image and a model to a SageMaker endpoint (ECR, S3, SageMaker)")
    pu.add_argument("--model", help="the model to serve (or --endpoint-config)")
    pu.add_argument("--endpoint-name", required=True)
    pu.add_argument("--instance-type", help="e.g. ml.c5.xlarge (with --endpoint-config: where a variant has none)")
    pu.add_argument("--endpoint-config", type=Path, metavar="endpoint.json",
                    help="CreateEndpointConfig's request JSON, as SAGESTACK_ENDPOINT_CONFIG serves it: a Model per "
                    "variant, the shadow, data capture, explainer, async; a change of weights alone becomes "
                    "UpdateEndpointWeightsAndCapacities")  # fmt: skip
    pu.add_argument("--instance-count", type=int, default=1)
    pu.add_argument("--env-file", type=Path, help="KEY=VALUE lines, e.g. from sagestack tune")
    pu.add_argument("--image", default="sagestack:latest", help="the local image to push")
    pu.add_argument("--no-image-push", action="store_true", help="the image is already in ECR under its tag")
    pu.add_argument("--model-dir", type=Path, help="default: $SAGESTACK_MODEL_DIR")
    pu.add_argument("--role-arn", help="SageMaker execution role (default: <account>/SageMakerExecutionRole)")
    pu.add_argument("--autoscale", metavar="MIN:MAX", help="register target-tracking autoscaling")
    pu.add_argument("--target-invocations", type=int, default=100, help="invocations per instance per minute")
    pu.add_argument("--profile", help="AWS profile (default: boto3's usual lookup)")
    pu.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    pu.add_argument(
        "--async-output-path", metavar="S3_URI", help="an async endpoint: AsyncInferenceConfig's S3OutputPath"
    )
    pu.add_argument("--async-failure-path", metavar="S3_URI", help="AsyncInferenceConfig's S3FailurePath")
    pu.add_argument("--async-max-concurrent-invocations", type=int, metavar="N",
                    help="AsyncInferenceConfig's MaxConcurrentInvocationsPerInstance")  # fmt: skip
    pu.set_defaults(fn=cmd_push)
    iv = sub.add_parser("invoke", help="call an endpoint through boto3's sagemaker-runtime (or the local stack)")
    iv.add_argument("--endpoint-name", required=True)
    iv.add_argument("--local", action="store_true", help="call the local stack (--url) instead of SageMaker")
    iv.add_argument("--url", default="http://127.0.0.1:8080")
    iv.add_argument("--model", default="half_plus_three", help="send this model's sample payload")
    iv.add_argument("--body", help="send this text instead")
    iv.add_argument("--file", type=Path, help="send this file instead")
    iv.add_argument("--content-type", default="application/json")
    iv.add_argument("--accept", default="application/json")
    iv.set_defaults(fn=cmd_invoke)
