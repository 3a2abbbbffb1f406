"""TF Serving's gRPC API on a runtime: PredictionService (Predict, Classify, Regress, GetModelMetadata) and
ModelService (GetModelStatus, HandleReloadConfigRequest), over one ModelStore; plus PredictStream."""

from __future__ import annotations

import traceback
from typing import Any

import grpc
import numpy as np

from server.protos import (
    PREDICT_STREAM,
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from server.runtimes.servable import CLASSIFY, REGRESS, NotFound, Overloaded, first_line, is_client_error
from server.runtimes.store import ModelStore, signature_def
from server.tensors import TensorError, TensorSpec, from_proto, to_proto


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


def predict_stream_handler(store: ModelStore) -> grpc.GenericRpcHandler:
    """PredictStream(PredictRequest) -> stream PredictResponse. A client that cancels (the HTTP client went away)
    ends the call; the servable's iterator is then closed, which stops its work."""

    def predict_stream(request, context):
        with _grpc_errors(context):
            spec = request.model_spec
            mv, sig = store.resolve(spec.name, _version(spec), spec.signature_name)
            inputs = {k: _as_input(v, sig.inputs.get(k)) for k, v in request.inputs.items()}
            parts = store.run_stream(mv, sig, inputs)
            try:
                for outputs in parts:
                    response = predict_pb2.PredictResponse()
                    _fill_spec(response.model_spec, spec.name, mv.version, sig.name)
                    for key, value in outputs.items():
                        response.outputs[key].CopyFrom(to_proto(value))
                    yield response
                    if not context.is_active():
                        return
            finally:
                close = getattr(parts, "close", None)
                if close is not None:
                    close()

    method = grpc.unary_stream_rpc_method_handler(
        predict_stream,
        request_deserializer=predict_pb2.PredictRequest.FromString,
        response_serializer=predict_pb2.PredictResponse.SerializeToString,
    )
    service, name = PREDICT_STREAM.strip("/").split("/")
    return grpc.method_handlers_generic_handler(service, {name: method})


def _fill_spec(target: Any, name: str, version: int, signature: str) -> None:
    target.name = name
    target.version.value = version
    if signature:
        target.signature_name = signature


def _as_input(proto: Any, spec: TensorSpec | None) -> np.ndarray:
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

    def HandleReloadConfigRequest(self, request, context):
        """Serve exactly request.config's models; returns once the new ones are loaded (or failed: see status)."""
        with _grpc_errors(context):
            self.store.load_config(request.config)
            return model_management_pb2.ReloadConfigResponse()


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
        if isinstance(exc, Overloaded):
            self.context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        if is_client_error(exc):
            self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, first_line(exc))
        traceback.print_exception(kind, exc, tb)
        self.context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {first_line(exc)}")
        return False


def grpc_server(store: ModelStore, max_threads: int) -> grpc.Server:
    """A gRPC server with both services on `store`, unlimited message sizes (images, batches)."""
    from concurrent import futures

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_threads),
        options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(store), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(store), server)
    server.add_generic_rpc_handlers((predict_stream_handler(store),))
    return server
