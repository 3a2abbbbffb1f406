"""One model-server API, whatever the backend (as TF Serving keeps it).

A runtime process serves the models named in a TF Serving model config file, on gRPC
(PredictionService Predict/Classify/Regress/GetModelMetadata and ModelService GetModelStatus)
and on REST (`/v1/models/...`). It takes `tensorflow_model_server`'s own flags, so the
supervisor launches it and the real binary the same way. A backend only loads one version
directory into a `Servable`; everything else lives here.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np
from google.protobuf import text_format

from server.protos import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    meta_graph_pb2,
    model_server_config_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from server.runtimes.batching import Batching, read_batching_file
from server.tensors import (
    Signature,
    TensorError,
    from_proto,
    to_proto,
)
from server.tensors import TensorSpec as Spec

State = get_model_status_pb2.ModelVersionStatus.State
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
PREDICT = "tensorflow/serving/predict"
DEFAULT_SIGNATURE = "serving_default"


class Servable(Protocol):
    """A loaded model version: its signatures and a way to run one.

    A servable with a true `batches_itself` attribute schedules concurrent calls on its own (the music
    transformer's continuous batching), so SAGEMAKER_TFS_ENABLE_BATCHING's row-joining batcher leaves it alone.
    """

    signatures: dict[str, Signature]

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


Backend = Callable[[Path], Servable]


class NotFound(LookupError):
    """Unknown model, version or signature (gRPC NOT_FOUND, HTTP 404)."""


@dataclass
class ModelVersion:
    version: int
    path: Path
    state: int = State.START
    error: str = ""
    servable: Servable | None = None


@dataclass
class Model:
    name: str
    versions: dict[int, ModelVersion] = field(default_factory=dict)

    def get(self, version: int | None) -> ModelVersion:
        if version is None or version == 0:
            ready = [v for v in self.versions.values() if v.state == State.AVAILABLE]
            if not ready:
                raise NotFound(f"model '{self.name}' has no available version")
            return max(ready, key=lambda v: v.version)
        mv = self.versions.get(version)
        if mv is None or mv.state != State.AVAILABLE:
            raise NotFound(f"model '{self.name}' has no available version {version}")
        return mv


def version_dirs(base: Path) -> dict[int, Path]:
    """Numeric subdirectories of a model base path, as TF Serving's file-system source sees them."""
    if not base.is_dir():
        return {}
    return {int(p.name): p for p in base.iterdir() if p.is_dir() and p.name.isdigit()}


def select_versions(available: dict[int, Path], policy: Any) -> dict[int, Path]:
    kind = policy.WhichOneof("policy_choice") if policy is not None else None
    if kind == "all":
        return available
    if kind == "specific":
        wanted = set(policy.specific.versions)
        return {v: p for v, p in available.items() if v in wanted}
    n = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions else 1
    return {v: available[v] for v in sorted(available)[-n:]}


class ModelStore:
    def __init__(self, backend: Backend, batcher: Batching | None = None) -> None:
        self.backend = backend
        self.batcher = batcher
        self.models: dict[str, Model] = {}

    def load_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        for cfg in config.model_config_list.config:
            base = Path(cfg.base_path)
            chosen = select_versions(version_dirs(base), cfg.model_version_policy)
            if not chosen:
                raise SystemExit(f"model '{cfg.name}': no numeric version directory under {base}")
            model = self.models.setdefault(cfg.name, Model(cfg.name))
            for version, path in sorted(chosen.items()):
                model.versions[version] = ModelVersion(version, path)
        for model in self.models.values():
            for mv in model.versions.values():
                self._load(model.name, mv)

    def _load(self, name: str, mv: ModelVersion) -> None:
        mv.state = State.LOADING
        started = time.monotonic()
        try:
            mv.servable = self.backend(mv.path)
            warmup(mv.servable)
        except Exception as exc:  # a broken version must not take the others down
            missing = isinstance(exc, ModuleNotFoundError)
            why = f"the Python module '{exc.name}' is not installed" if missing else type(exc).__name__  # type: ignore[attr-defined]
            mv.state, mv.error = State.END, f"{why}: {exc}"
            log(f"model '{name}' version {mv.version} failed to load: {mv.error}")
            return
        mv.state = State.AVAILABLE
        took = time.monotonic() - started
        log(f"model '{name}' version {mv.version} AVAILABLE (loaded and warmed in {took:.2f}s)")

    def model(self, name: str) -> Model:
        try:
            return self.models[name]
        except KeyError:
            raise NotFound(f"model '{name}' is not served here") from None

    def resolve(self, name: str, version: int | None, signature: str | None) -> tuple[ModelVersion, Signature]:
        mv = self.model(name).get(version)
        assert mv.servable is not None
        sig_name = signature or DEFAULT_SIGNATURE
        sig = mv.servable.signatures.get(sig_name)
        if sig is None:
            raise NotFound(f"model '{name}' version {mv.version} has no signature '{sig_name}'")
        return mv, sig

    def run(self, mv: ModelVersion, sig: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for key in inputs:
            if key not in sig.inputs:
                raise TensorError(f"unknown input '{key}'; signature '{sig.name}' takes {list(sig.inputs)}")
        missing = [k for k in sig.inputs if k not in inputs]
        if missing:
            raise TensorError(f"missing input(s) {missing} for signature '{sig.name}'")
        assert mv.servable is not None
        if self.batcher is not None and not getattr(mv.servable, "batches_itself", False):
            return self.batcher.run(mv.servable, sig.name, inputs)
        return mv.servable.run(sig.name, inputs)

    def classify_or_regress(
        self, mv: ModelVersion, sig: Signature, examples: Iterable[Any], method: str
    ) -> dict[str, np.ndarray]:
        if sig.method != method:
            raise TensorError(f"signature '{sig.name}' is a {sig.method.rsplit('/', 1)[-1]} signature, not {method}")
        if len(sig.inputs) != 1:
            raise TensorError(f"signature '{sig.name}' must take exactly one serialized-example input")
        serialized = np.array([e.SerializeToString() for e in examples], dtype=object)
        return self.run(mv, sig, {next(iter(sig.inputs)): serialized})


def warmup(servable: Servable) -> None:
    """Run each signature once so the first real request does not pay for tracing/allocation.

    A servable with `warmup_inputs` (signature -> inputs) supplies real requests, like TF Serving's
    assets.extra/tf_serving_warmup_requests; other signatures get zeros of their declared shapes.
    """
    own = getattr(servable, "warmup_inputs", {})
    for sig in servable.signatures.values():
        inputs = dict(own.get(sig.name, {}))
        for name, spec in sig.inputs.items():
            if name in inputs:
                continue
            shape = tuple(1 if d < 0 else d for d in (spec.shape or (1,)))
            if spec.np_dtype is np.object_:
                shape = (0, *shape[1:]) if shape else (0,)
                inputs[name] = np.empty(shape, dtype=object)
            else:
                inputs[name] = np.zeros(shape, dtype=spec.np_dtype)
        try:
            servable.run(sig.name, inputs)
        except Exception as exc:  # synthetic inputs may not suit every signature
            log(f"warm-up of signature '{sig.name}' skipped: {type(exc).__name__}: {str(exc)[:200]}")


def signature_def(sig: Signature) -> meta_graph_pb2.SignatureDef:
    out = meta_graph_pb2.SignatureDef(method_name=sig.method)
    for target, specs in ((out.inputs, sig.inputs), (out.outputs, sig.outputs)):
        for key, spec in specs.items():
            info = target[key]
            info.name = f"{key}:0"
            info.dtype = spec.dtype
            if spec.shape is None:
                info.tensor_shape.unknown_rank = True
            else:
                for d in spec.shape:
                    info.tensor_shape.dim.add(size=d)
    return out


def _version(spec: Any) -> int | None:
    return spec.version.value if spec.HasField("version") else None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, store: ModelStore) -> None:
        self.store = store

    def Predict(self, request, context):
        with _grpc_errors(context):
            spec = request.model_spec
            mv, sig = self.store.resolve(spec.name, _version(spec), spec.signature_name)
            inputs = {k: _as_input(v, sig.inputs.get(k)) for k, v in request.inputs.items()}
            outputs = self.store.run(mv, sig, inputs)
            wanted = set(request.output_filter) or set(outputs)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = spec.name
            response.model_spec.version.value = mv.version
            response.model_spec.signature_name = sig.name
            for key in wanted:
                if key not in outputs:
                    raise TensorError(f"output_filter names unknown output '{key}'")
                response.outputs[key].CopyFrom(to_proto(outputs[key]))
            return response

    def Classify(self, request, context):
        with _grpc_errors(context):
            mv, sig, outputs = self._examples(request, CLASSIFY)
            response = classification_pb2.ClassificationResponse()
            _fill_spec(response.model_spec, request.model_spec.name, mv.version, sig.name)
            scores, classes = outputs.get("scores"), outputs.get("classes")
            n = len(scores if scores is not None else classes)
            for i in range(n):
                result = response.result.classifications.add()
                width = (scores if scores is not None else classes)[i].reshape(-1).shape[0]
                for j in range(width):
                    cls = result.classes.add()
                    if classes is not None:
                        label = classes[i].reshape(-1)[j]
                        cls.label = label.decode() if isinstance(label, bytes) else str(label)
                    if scores is not None:
                        cls.score = float(scores[i].reshape(-1)[j])
            return response

    def Regress(self, request, context):
        with _grpc_errors(context):
            mv, sig, outputs = self._examples(request, REGRESS)
            if "outputs" not in outputs:
                raise TensorError(f"regress signature '{sig.name}' has no 'outputs' output")
            response = regression_pb2.RegressionResponse()
            _fill_spec(response.model_spec, request.model_spec.name, mv.version, sig.name)
            for value in outputs["outputs"].reshape(len(outputs["outputs"]), -1)[:, 0]:
                response.result.regressions.add(value=float(value))
            return response

    def _examples(self, request, method: str):
        spec = request.model_spec
        mv, sig = self.store.resolve(spec.name, _version(spec), spec.signature_name)
        which = request.input.WhichOneof("kind")
        if which != "example_list":
            raise TensorError("only input.example_list is supported")
        outputs = self.store.classify_or_regress(mv, sig, request.input.example_list.examples, method)
        return mv, sig, outputs

    def GetModelMetadata(self, request, context):
        with _grpc_errors(context):
            spec = request.model_spec
            mv = self.store.model(spec.name).get(_version(spec))
            assert mv.servable is not None
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            for name, sig in mv.servable.signatures.items():
                sig_map.signature_def[name].CopyFrom(signature_def(sig))
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            _fill_spec(response.model_spec, spec.name, mv.version, "")
            response.metadata["signature_def"].Pack(sig_map)
            return response


def _fill_spec(target: Any, name: str, version: int, signature: str) -> None:
    target.name = name
    target.version.value = version
    if signature:
        target.signature_name = signature


def _as_input(proto: Any, spec: Spec | None) -> np.ndarray:
    arr = from_proto(proto)
    if spec is not None and arr.dtype != spec.np_dtype and spec.np_dtype is not np.object_:
        arr = arr.astype(spec.np_dtype)
    return arr


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, store: ModelStore) -> None:
        self.store = store

    def GetModelStatus(self, request, context):
        with _grpc_errors(context):
            model = self.store.model(request.model_spec.name)
            response = get_model_status_pb2.GetModelStatusResponse()
            wanted = _version(request.model_spec)
            for mv in sorted(model.versions.values(), key=lambda v: v.version):
                if wanted and mv.version != wanted:
                    continue
                status = response.model_version_status.add(version=mv.version, state=mv.state)
                if mv.error:
                    status.status.error_code = 13  # INTERNAL
                    status.status.error_message = mv.error
            if wanted and not response.model_version_status:
                raise NotFound(f"model '{model.name}' has no version {wanted}")
            return response


class _grpc_errors:
    def __init__(self, context: grpc.ServicerContext) -> None:
        self.context = context

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None:
            return False
        if isinstance(exc, NotFound):
            self.context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        if isinstance(exc, TensorError | ValueError) or is_tf_invalid_argument(exc):
            self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, first_line(exc))
        traceback.print_exception(kind, exc, tb)
        self.context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {first_line(exc)}")
        return False


def is_tf_invalid_argument(exc: BaseException) -> bool:
    return type(exc).__name__ in ("InvalidArgumentError", "OutOfRangeError")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="TF-Serving-compatible model server")
    p.add_argument("--port", type=int, default=8500)
    p.add_argument("--rest_api_port", type=int, default=0)
    p.add_argument("--model_config_file")
    p.add_argument("--model_name", default="default")
    p.add_argument("--model_base_path")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0)
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0)
    p.add_argument("--enable_batching", nargs="?", const="true", default="false")
    p.add_argument("--batching_parameters_file")
    p.add_argument("--per_process_gpu_memory_fraction", type=float, default=0.0)
    p.add_argument("--grpc_max_threads", type=int, default=16)
    args, unknown = p.parse_known_args(argv)
    if unknown:
        log(f"ignoring flags this server does not implement: {unknown}")
    if not args.model_config_file and not args.model_base_path:
        p.error("--model_config_file or --model_base_path is required")
    return args


def load_config(args: argparse.Namespace) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    if args.model_config_file:
        text_format.Parse(Path(args.model_config_file).read_text(), config)
    else:
        cfg = config.model_config_list.config.add(name=args.model_name, base_path=args.model_base_path)
        cfg.model_platform = "tensorflow"
    return config


def serve(argv: list[str], make_backend: Callable[[argparse.Namespace], Backend]) -> None:
    args = parse_args(argv)
    batcher = None
    if args.enable_batching.lower() == "true":
        params = read_batching_file(args.batching_parameters_file)
        batcher = Batching(params["max_batch_size"], params["batch_timeout_micros"], params["max_enqueued_batches"])
    store = ModelStore(make_backend(args), batcher)
    grpc_server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.grpc_max_threads),
        options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(store), grpc_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(store), grpc_server)
    # Listen first (status says LOADING meanwhile), then load: the supervisor can watch progress.
    if grpc_server.add_insecure_port(f"127.0.0.1:{args.port}") == 0:
        raise SystemExit(f"cannot bind gRPC port {args.port}")
    grpc_server.start()
    rest = None
    if args.rest_api_port:
        from server.runtimes.rest import rest_handler

        rest = ThreadingHTTPServer(("127.0.0.1", args.rest_api_port), rest_handler(store))
        rest.daemon_threads = True
        threading.Thread(target=rest.serve_forever, daemon=True).start()
    store.load_config(load_config(args))

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log(f"serving gRPC on {args.port}, REST on {args.rest_api_port or '-'}")
    stop.wait()
    log("stopping: finishing in-flight requests")
    grpc_server.stop(grace=10).wait()
    if rest is not None:
        rest.shutdown()


def log(message: str) -> None:
    print(f"[model_server] {message}", file=sys.stderr, flush=True)
