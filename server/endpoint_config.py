"""SAGESTACK_ENDPOINT_CONFIG: the request JSON of SageMaker's CreateEndpointConfig, read as the stack's own.

One file says what the endpoint does with its traffic, here and on SageMaker (`sagestack push --endpoint-config`
sends the same file): ProductionVariants with weights, one ShadowProductionVariant, DataCaptureConfig,
ExplainerConfig (Clarify's kernel SHAP) and AsyncInferenceConfig. Each variant's ModelName is a model of the model
directory (`yolov4_compiled`; SageMaker's spelling `yolov4-compiled` finds it too). The shape is checked with
botocore's own validator against CreateEndpointConfigInput, then what sagestack needs of the values, and every
error names the field (`ProductionVariants[1].InitialVariantWeight: ...`).

sagestack's one addition: a shadow variant may say `SamplingPercentage` (0-100), the share of production requests
copied to it; without it the share is its InitialVariantWeight over the production variant's, as SageMaker has it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_VARIANT = "AllTraffic"  # SageMaker's name for an endpoint's only variant
_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")  # VariantName and EndpointConfigName in botocore
SAMPLING = "SamplingPercentage"  # sagestack's field on a shadow variant (not SageMaker's): stripped for botocore
CAPTURE_MODES = {"Input": ("Input",), "Output": ("Output",), "InputAndOutput": ("Input", "Output")}


class EndpointConfigError(ValueError):
    """The file cannot be served; the message names the field."""


@dataclass(frozen=True)
class Variant:
    name: str
    model: str  # the model directory's name for ModelName
    weight: float


@dataclass(frozen=True)
class Capture:
    """DataCaptureConfig: what share of requests is written where, and which content types are text."""

    enabled: bool
    percentage: int
    destination: str
    modes: tuple[str, ...]  # "Input", "Output"
    csv_types: tuple[str, ...]
    json_types: tuple[str, ...]


@dataclass(frozen=True)
class Explainer:
    """ExplainerConfig.ClarifyExplainerConfig: kernel SHAP over the features of each record."""

    enable: str | None  # a JMESPath expression; None: explain every request
    baseline: str  # ShapBaseline: CSV rows of feature values
    samples: int | None  # NumberOfSamples; None: every coalition, up to the default budget
    use_logit: bool
    seed: int | None
    feature_headers: tuple[str, ...] | None
    feature_types: tuple[str, ...] | None
    probability_index: int | None
    probability_attribute: str | None
    features_attribute: str | None
    max_record_count: int | None


@dataclass(frozen=True)
class EndpointConfig:
    name: str
    variants: tuple[Variant, ...]
    shadow: Variant | None
    shadow_percentage: float  # 0-100
    capture: Capture | None
    explainer: Explainer | None
    async_output: str | None
    async_failure: str | None
    async_max_concurrent: int | None
    raw: dict[str, Any]  # the file as read: what `push` sends, once ModelName is SageMaker's

    def variant(self, name: str) -> Variant | None:
        return next((v for v in (*self.variants, *filter(None, [self.shadow])) if v.name == name), None)


def read(path: Path) -> dict[str, Any]:
    """The file's JSON object, or an error naming the file."""
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise EndpointConfigError(f"{path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise EndpointConfigError(f"{path}: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise EndpointConfigError(f"{path}: the file must hold CreateEndpointConfig's request, a JSON object")
    return raw


def for_botocore(raw: dict[str, Any]) -> dict[str, Any]:
    """The request without sagestack's additions, as SageMaker takes it."""
    out = json.loads(json.dumps(raw))  # a deep copy: callers fill in what SageMaker needs
    if "ShadowProductionVariants" in out and isinstance(out["ShadowProductionVariants"], list):
        out["ShadowProductionVariants"] = [
            {k: v for k, v in variant.items() if k != SAMPLING} if isinstance(variant, dict) else variant
            for variant in out["ShadowProductionVariants"]
        ]
    return out


def validate_shape(raw: dict[str, Any]) -> None:
    """Types, required and unknown members, as botocore checks CreateEndpointConfig before sending it."""
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateEndpointConfig").input_shape
    report = ParamValidator().validate(for_botocore(raw), shape)
    if report.has_errors():
        raise EndpointConfigError(report.generate_report().replace("\n", "; "))


def parse(raw: dict[str, Any], models: Iterable[str] | None = None, shape: bool = True) -> EndpointConfig:
    """The config, checked. With `models` (the model directory's names), each ModelName must be one of them;
    `shape=False` skips botocore's check (a file the supervisor checked already)."""
    if shape:
        validate_shape(raw)
    _name("EndpointConfigName", raw["EndpointConfigName"])
    known = None if models is None else list(models)
    variants = tuple(_variant(f"ProductionVariants[{i}]", v, known) for i, v in enumerate(raw["ProductionVariants"]))
    names = [v.name for v in variants]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise EndpointConfigError(f"ProductionVariants[{i}].VariantName: {name!r} is used twice")
    if sum(v.weight for v in variants) <= 0:
        raise EndpointConfigError("ProductionVariants[*].InitialVariantWeight: at least one weight must be above 0")
    shadow, share = _shadow(raw, variants, known)
    async_ = raw.get("AsyncInferenceConfig") or {}
    output = async_.get("OutputConfig", {})
    if async_ and not output.get("S3OutputPath"):
        raise EndpointConfigError("AsyncInferenceConfig.OutputConfig.S3OutputPath: the async answers need a place")
    for key in ("S3OutputPath", "S3FailurePath"):
        if output.get(key):
            _location(f"AsyncInferenceConfig.OutputConfig.{key}", output[key])
    return EndpointConfig(
        name=raw["EndpointConfigName"],
        variants=variants,
        shadow=shadow,
        shadow_percentage=share,
        capture=_capture(raw.get("DataCaptureConfig")),
        explainer=_explainer(raw.get("ExplainerConfig")),
        async_output=output.get("S3OutputPath"),
        async_failure=output.get("S3FailurePath"),
        async_max_concurrent=async_.get("ClientConfig", {}).get("MaxConcurrentInvocationsPerInstance"),
        raw=raw,
    )


def load(path: Path, models: Iterable[str] | None = None) -> EndpointConfig:
    try:
        return parse(read(path), models)
    except EndpointConfigError as exc:
        raise EndpointConfigError(f"SAGESTACK_ENDPOINT_CONFIG={path}: {exc}") from None


CHECKED = "endpoint-config.json"  # in the run directory: the supervisor's checked copy, which the workers read


def write_checked(config: EndpointConfig, run_dir: Path) -> None:
    """The file as the supervisor checked it, with ModelName resolved to the model directory's names."""
    raw = json.loads(json.dumps(config.raw))
    for key in ("ProductionVariants", "ShadowProductionVariants"):
        for variant in raw.get(key) or []:
            found = config.variant(variant["VariantName"])
            if found is not None:
                variant["ModelName"] = found.model
    (run_dir / CHECKED).write_text(json.dumps(raw))


def read_checked(run_dir: Path) -> EndpointConfig | None:
    """The supervisor's copy (a gateway worker never reads the user's file, which may have changed since)."""
    path = run_dir / CHECKED
    return parse(json.loads(path.read_text()), shape=False) if path.is_file() else None


def model_for(name: str, models: list[str]) -> str | None:
    """The model directory's model for a ModelName: itself, or with SageMaker's '-' read as '_'."""
    if name in models:
        return name
    underscored = name.replace("-", "_")
    return underscored if underscored in models else None


def _name(field: str, value: str) -> None:
    if not _NAME.fullmatch(value):
        raise EndpointConfigError(f"{field}: {value!r} must be 1-63 letters, digits and '-' (SageMaker's pattern)")


def _variant(field: str, raw: dict[str, Any], models: list[str] | None) -> Variant:
    _name(f"{field}.VariantName", raw["VariantName"])
    name = raw.get("ModelName")
    if not name:
        raise EndpointConfigError(f"{field}.ModelName: name the model this variant serves")
    model = name if models is None else model_for(name, models)
    if model is None:
        raise EndpointConfigError(f"{field}.ModelName: {name!r} is not in the model directory (has: {sorted(models)})")
    weight = float(raw.get("InitialVariantWeight", 1.0))
    if not math.isfinite(weight) or weight < 0:
        raise EndpointConfigError(f"{field}.InitialVariantWeight: {weight} must be a number, 0 or more")
    return Variant(raw["VariantName"], model, weight)


def _shadow(
    raw: dict[str, Any], variants: tuple[Variant, ...], models: list[str] | None
) -> tuple[Variant | None, float]:
    shadows = raw.get("ShadowProductionVariants") or []
    if not shadows:
        return None, 0.0
    if len(shadows) > 1:
        raise EndpointConfigError("ShadowProductionVariants: sagestack takes one shadow variant")
    if len(variants) != 1:
        raise EndpointConfigError("ProductionVariants: with a shadow variant, SageMaker takes one production variant")
    shadow = _variant("ShadowProductionVariants[0]", shadows[0], models)
    if shadow.name == variants[0].name:
        raise EndpointConfigError(f"ShadowProductionVariants[0].VariantName: {shadow.name!r} is the production's")
    if SAMPLING in shadows[0]:
        share = shadows[0][SAMPLING]
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 100:
            raise EndpointConfigError(f"ShadowProductionVariants[0].{SAMPLING}: {share!r} must be a number 0-100")
        return shadow, float(share)
    production = variants[0].weight
    return shadow, min(100.0, 100.0 * shadow.weight / production) if production > 0 else 100.0


def _location(field: str, uri: str) -> None:
    from server.storage import Location, StorageError

    try:
        Location.parse(uri)
    except StorageError as exc:
        raise EndpointConfigError(f"{field}: {exc}") from None


def _capture(raw: dict[str, Any] | None) -> Capture | None:
    if raw is None:
        return None
    field = "DataCaptureConfig"
    percentage = raw["InitialSamplingPercentage"]
    if not 0 <= percentage <= 100:
        raise EndpointConfigError(f"{field}.InitialSamplingPercentage: {percentage} must be 0-100")
    _location(f"{field}.DestinationS3Uri", raw["DestinationS3Uri"])
    modes: list[str] = []
    for i, option in enumerate(raw["CaptureOptions"]):
        mode = option["CaptureMode"]
        if mode not in CAPTURE_MODES:
            raise EndpointConfigError(f"{field}.CaptureOptions[{i}].CaptureMode: {mode!r} must be one of "
                                      f"{', '.join(CAPTURE_MODES)}")  # fmt: skip
        modes += [m for m in CAPTURE_MODES[mode] if m not in modes]
    types = raw.get("CaptureContentTypeHeader") or {}
    return Capture(
        enabled=raw.get("EnableCapture", True),
        percentage=percentage,
        destination=raw["DestinationS3Uri"],
        modes=tuple(modes),
        # Without CaptureContentTypeHeader, SageMaker captures everything as base64.
        csv_types=tuple(t.lower() for t in types.get("CsvContentTypes", [])),
        json_types=tuple(t.lower() for t in types.get("JsonContentTypes", [])),
    )


def _explainer(raw: dict[str, Any] | None) -> Explainer | None:
    clarify = (raw or {}).get("ClarifyExplainerConfig")
    if clarify is None:
        return None
    field = "ExplainerConfig.ClarifyExplainerConfig"
    shap = clarify["ShapConfig"]
    base = shap["ShapBaselineConfig"]
    if base.get("ShapBaselineUri") or not base.get("ShapBaseline"):
        raise EndpointConfigError(f"{field}.ShapConfig.ShapBaselineConfig.ShapBaseline: give the baseline inline "
                                  "(CSV rows); ShapBaselineUri is not read")  # fmt: skip
    if base.get("MimeType", "text/csv") != "text/csv":
        raise EndpointConfigError(f"{field}.ShapConfig.ShapBaselineConfig.MimeType: only text/csv is read")
    if shap.get("TextConfig"):
        raise EndpointConfigError(f"{field}.ShapConfig.TextConfig: text features are not explained here")
    inference = clarify.get("InferenceConfig") or {}
    if inference.get("ContentTemplate"):
        raise EndpointConfigError(f"{field}.InferenceConfig.ContentTemplate: not supported; send CSV or JSON Lines")
    if clarify.get("EnableExplanations"):
        _jmespath(f"{field}.EnableExplanations", clarify["EnableExplanations"])
    headers = inference.get("FeatureHeaders")
    types = inference.get("FeatureTypes")
    if types and any(t not in ("numerical", "categorical") for t in types):
        raise EndpointConfigError(f"{field}.InferenceConfig.FeatureTypes: each is 'numerical' or 'categorical'")
    if headers and types and len(headers) != len(types):
        raise EndpointConfigError(f"{field}.InferenceConfig.FeatureTypes: {len(types)} types for {len(headers)} "
                                  "FeatureHeaders")  # fmt: skip
    rows = [row for row in csv.reader(io.StringIO(base["ShapBaseline"])) if row]
    if not rows or len({len(row) for row in rows}) != 1 or (headers and len(rows[0]) != len(headers)):
        raise EndpointConfigError(f"{field}.ShapConfig.ShapBaselineConfig.ShapBaseline: CSV rows of one value per "
                                  f"feature{f' ({len(headers)} FeatureHeaders)' if headers else ''}")  # fmt: skip
    return Explainer(
        enable=clarify.get("EnableExplanations"),
        baseline=base["ShapBaseline"],
        samples=shap.get("NumberOfSamples"),
        use_logit=bool(shap.get("UseLogit", False)),
        seed=shap.get("Seed"),
        feature_headers=tuple(headers) if headers else None,
        feature_types=tuple(types) if types else None,
        probability_index=inference.get("ProbabilityIndex"),
        probability_attribute=inference.get("ProbabilityAttribute"),
        features_attribute=inference.get("FeaturesAttribute"),
        max_record_count=inference.get("MaxRecordCount"),
    )


def _jmespath(field: str, expression: str) -> None:
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        jmespath.compile(expression)
    except JMESPathError as exc:
        raise EndpointConfigError(f"{field}: {expression!r} is not a JMESPath expression ({exc})") from None
