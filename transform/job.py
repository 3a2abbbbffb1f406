"""A batch transform job, under CreateTransformJob's names: from `sagestack transform`'s flags or from the very
request JSON boto3's `create_transform_job` sends (`--job-json`), so one file serves both."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

SPLIT_TYPES = ("None", "Line")  # RecordIO and TFRecord are SageMaker's too, not taken here
BATCH_STRATEGIES = ("SingleRecord", "MultiRecord")
ASSEMBLY = ("None", "Line")
JOIN_SOURCES = ("None", "Input")


class JobError(ValueError):
    """A job the transform cannot run; names the parameter."""


@dataclass(frozen=True)
class TransformJob:
    model: str
    input: str  # s3://bucket/prefix, file:///path or a path (TransformInput.DataSource.S3DataSource.S3Uri)
    output: str  # TransformOutput.S3OutputPath
    content_type: str | None = None
    split_type: str = "None"
    compression: str = "None"
    batch_strategy: str | None = None  # None: what the container's /execution-parameters asks
    max_payload_mb: int | None = None
    max_concurrent_transforms: int | None = None
    assemble_with: str = "None"
    accept: str | None = None
    input_filter: str | None = None
    output_filter: str | None = None
    join_source: str = "None"
    invocations_timeout_s: int = 600  # ModelClientConfig.InvocationsTimeoutInSeconds (SageMaker's default)
    invocations_max_retries: int = 3  # ModelClientConfig.InvocationsMaxRetries
    environment: tuple[tuple[str, str], ...] = ()
    name: str = "sagestack-transform"

    def __post_init__(self) -> None:
        for value, allowed, flag in (
            (self.split_type, SPLIT_TYPES, "--split-type"),
            (self.assemble_with, ASSEMBLY, "--assemble-with"),
            (self.join_source, JOIN_SOURCES, "--join-source"),
            (self.compression, ("None",), "CompressionType"),
        ):
            if value not in allowed:
                raise JobError(f"{flag} {value!r}: choose from {', '.join(allowed)}")
        if self.batch_strategy is not None and self.batch_strategy not in BATCH_STRATEGIES:
            raise JobError(f"--batch-strategy {self.batch_strategy!r}: choose from {', '.join(BATCH_STRATEGIES)}")
        for value, flag, high in ((self.max_payload_mb, "--max-payload-mb", 100),
                                  (self.max_concurrent_transforms, "--max-concurrent-transforms", 1024)):  # fmt: skip
            if value is not None and (not isinstance(value, int) or not 1 <= value <= high):
                raise JobError(f"{flag} must be a whole number from 1 to {high} (SageMaker's 0, streaming, is not "
                               f"taken), got {value!r}")  # fmt: skip
        if not 0 <= self.invocations_max_retries <= 3:
            raise JobError(f"InvocationsMaxRetries must be 0-3, got {self.invocations_max_retries}")
        if self.batch_strategy == "MultiRecord" and self.split_type == "None":
            raise JobError("--batch-strategy MultiRecord needs --split-type Line (records to put together)")
        self._check_processing()

    def _check_processing(self) -> None:
        """Filters and a join that could never work fail the job before any record is sent."""
        from transform.jsonpath import JsonPathError, parse
        from transform.records import fmt

        for path, flag in ((self.input_filter, "--input-filter"), (self.output_filter, "--output-filter")):
            if path is None:
                continue
            try:
                parse(path)
            except JsonPathError as exc:
                raise JobError(f"{flag}: {exc}") from None
        uses_records = self.input_filter is not None or self.join_source == "Input"
        if uses_records and fmt(self.content_type) == "raw":
            raise JobError(f"--input-filter and --join-source Input need text/csv or JSON records, not "
                           f"{self.content_type or 'an unnamed content type'}")  # fmt: skip
        if self.join_source == "Input" and fmt(self.content_type) == "csv" and fmt(self.accept) != "csv":
            raise JobError("--join-source Input with text/csv records needs --accept text/csv (fields to append)")
        if self.output_filter is not None and self.accept and fmt(self.accept) == "raw" and self.join_source != "Input":
            raise JobError(f"--output-filter needs CSV or JSON answers, not --accept {self.accept}")

    def with_defaults(self, execution_parameters: dict[str, Any]) -> TransformJob:
        """The job with the container's /execution-parameters filling what it leaves unset, as SageMaker does."""
        strategy = str(execution_parameters.get("BatchStrategy", "MULTI_RECORD")).upper().replace("_", "")
        wanted = "MultiRecord" if strategy == "MULTIRECORD" and self.split_type == "Line" else "SingleRecord"
        return replace(
            self,
            batch_strategy=self.batch_strategy or wanted,
            max_payload_mb=self.max_payload_mb or int(execution_parameters.get("MaxPayloadInMB", 6)),
            max_concurrent_transforms=self.max_concurrent_transforms
            or int(execution_parameters.get("MaxConcurrentTransforms", 1)),
        )

    def container_env(self) -> dict[str, str]:
        """What SageMaker sets in a transform job's container: the model's Environment, then the job's values."""
        env = dict(self.environment) | {"SAGEMAKER_BATCH": "true"}
        if self.max_payload_mb:
            env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = str(self.max_payload_mb)
        if self.batch_strategy:
            env["SAGEMAKER_BATCH_STRATEGY"] = {"MultiRecord": "MULTI_RECORD", "SingleRecord": "SINGLE_RECORD"}[
                self.batch_strategy
            ]
        if self.max_concurrent_transforms:
            env["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] = str(self.max_concurrent_transforms)
        return env


def from_request(request: dict[str, Any], **overrides: Any) -> TransformJob:
    """The job CreateTransformJob's request describes (boto3's keyword arguments, as JSON)."""
    try:
        source = request["TransformInput"]["DataSource"]["S3DataSource"]
        if source.get("S3DataType", "S3Prefix") != "S3Prefix":
            raise JobError(f"S3DataType {source['S3DataType']!r}: only S3Prefix is taken")
        inp, out = request["TransformInput"], request["TransformOutput"]
        processing = request.get("DataProcessing", {})
        client = request.get("ModelClientConfig", {})
        values: dict[str, Any] = {
            "name": request.get("TransformJobName", "sagestack-transform"),
            "model": request["ModelName"],
            "input": source["S3Uri"],
            "output": out["S3OutputPath"],
            "content_type": inp.get("ContentType"),
            "split_type": inp.get("SplitType", "None"),
            "compression": inp.get("CompressionType", "None"),
            "batch_strategy": request.get("BatchStrategy"),
            "max_payload_mb": request.get("MaxPayloadInMB"),
            "max_concurrent_transforms": request.get("MaxConcurrentTransforms"),
            "assemble_with": out.get("AssembleWith", "None"),
            "accept": out.get("Accept"),
            "input_filter": processing.get("InputFilter"),
            "output_filter": processing.get("OutputFilter"),
            "join_source": processing.get("JoinSource", "None"),
            "invocations_timeout_s": client.get("InvocationsTimeoutInSeconds", 600),
            "invocations_max_retries": client.get("InvocationsMaxRetries", 3),
            "environment": tuple(sorted(request.get("Environment", {}).items())),
        }
    except KeyError as exc:
        raise JobError(f"the job JSON lacks {exc.args[0]!r} (CreateTransformJob's request shape)") from None
    except (TypeError, AttributeError):
        raise JobError("the job JSON does not have CreateTransformJob's request shape") from None
    known = {f.name for f in fields(TransformJob)}
    values.update({k: v for k, v in overrides.items() if v is not None and k in known})
    try:
        return TransformJob(**values)
    except TypeError as exc:
        raise JobError(f"the job JSON has a value of the wrong type: {exc}") from None


def load_request(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise JobError(f"--job-json {path}: {exc}") from None
