"""What one invocation does, independent of the web framework.

Pick the model (target-model header, `tfs-model-name`, or the default), its version and method;
run the model's handlers or the default TF Serving path; send binary tensors to the runtime
pool; encode the result for Accept. Every client mistake becomes an ApiError that names it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc

from server import codecs, control, handlers, metrics
from server.coalesce import Coalescer, batch_key
from server.errors import ApiError, bad_request, not_found
from server.handler_kit import json_body, parse_attributes
from server.modeldir import MODEL_NAME, ModelDirError, model_spec
from server.pool import PoolUnavailable, Runtimes, UnknownModel
from server.protos import classification_pb2, predict_pb2, regression_pb2
from server.request_log import RequestTimings
from server.routes import READY, RouteTable, VariantRoute
from server.settings import Settings
from server.tensors import (
    TensorError,
    columnar,
    examples_to_protos,
    from_proto,
    predictions,
    request_to_arrays,
    to_proto,
)
from server.variants import DEFAULT_VARIANT, Chooser

log = logging.getLogger("sagestack.gateway")
METHODS = ("predict", "classify", "regress")
MAX_CUSTOM_ATTRIBUTES = 1024  # SageMaker's InvokeEndpoint limit
_GRPC_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


Reply = bytes | Iterator[bytes]  # a whole answer, or a streamed one (chunk by chunk)


@dataclass(frozen=True)
class Target:
    model: str
    version: int | None
    method: str
    attributes: str
    timeout: float  # the runtime call's deadline: SAGEMAKER_GUNICORN_TIMEOUT_SECONDS, or an async request's own
    endpoint: str = ""
    variant: str = DEFAULT_VARIANT  # the production variant that answers (x-Amzn-Invoked-Production-Variant)
    shadow: VariantRoute | None = None  # the endpoint's shadow variant, which gets a copy of `shadow_percentage`
    shadow_percentage: float = 0.0


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtimes = Runtimes(settings.routes_file, settings.control_socket, settings.restart_wait_seconds)
        self.timeout = float(settings.gunicorn_timeout)
        self._handlers: dict[tuple[str, str | None], handlers.ModelHandlers | None] = {}
        self.coalescer = Coalescer(settings.gateway_batch_size, metrics.observe_batch)
        self.chooser = Chooser(settings.variant_seed)

    # ---- routing -----------------------------------------------------------------------------
    def table(self) -> RouteTable:
        return self.runtimes.table()

    def target(self, raw_attributes: str | None, model: str | None = None, target_variant: str | None = None,
               load: bool = True) -> Target:  # fmt: skip
        """What a request runs: its endpoint and variant (server.variants), model, version and method. On a
        multi-model endpoint a named model of the model directory is loaded first, unless `load` is false (a
        readiness or metadata request)."""
        if raw_attributes and len(raw_attributes) > MAX_CUSTOM_ATTRIBUTES:
            raise bad_request(
                f"X-Amzn-SageMaker-Custom-Attributes is {len(raw_attributes):,} characters; "
                f"at most {MAX_CUSTOM_ATTRIBUTES:,} are taken (SageMaker's limit)"
            )
        attrs = parse_attributes(raw_attributes)
        table = self.table()
        name = model or attrs.get("tfs-model-name") or table.default_model
        if name is None:
            raise not_found("no model is loaded; name one with tfs-model-name or load one with POST /models")
        choice = self.chooser.choose(table, name, target_variant, attrs.get("compiled"))
        name = choice.model
        route = table.models.get(name) or self.runtimes.table(fresh=True).models.get(name)
        if route is None and name in table.failed:
            raise ApiError(503, f"model '{name}' is unavailable: {table.failed[name]}")
        if route is None:
            if model is not None and table.multi_model and load:
                route = self.load_from_model_dir(model)
            else:
                raise not_found(f"model '{name}' is not served here (served: {sorted(table.models)})")
        version = None
        if attrs.get("tfs-model-version"):
            raw = attrs["tfs-model-version"]
            if not raw.isdigit() or int(raw) not in route.versions:
                raise not_found(f"model '{name}' has no version '{raw}' (versions: {route.versions})")
            version = int(raw)
        method = attrs.get("tfs-method", "predict")
        if method not in METHODS:
            raise bad_request(f"tfs-method '{method}' must be one of {', '.join(METHODS)}")
        return Target(name, version, method, raw_attributes or "", self.timeout, choice.endpoint, choice.variant,
                      choice.shadow, choice.shadow_percentage)  # fmt: skip

    def load_from_model_dir(self, name: str):
        """MME: a model that sits in the model directory, loaded by name (a target model on first use, as
        SageMaker does, and Triton's repository load)."""
        if not MODEL_NAME.fullmatch(name) or ".." in name:
            raise bad_request(f"target model {name!r} is not a valid model name (letters, digits, '.', '_', '-')")
        base = self.settings.model_dir / name.removesuffix(".tar.gz")
        try:
            model_spec(name, base)
        except ModelDirError:
            raise not_found(f"model '{name}' is not loaded and not found in {self.settings.model_dir}") from None
        self.load_model(name, str(base))
        return self.table().models[name]

    def ready(self) -> tuple[bool, str]:
        table = self.table()
        if table.multi_model:
            return True, "multi-model endpoint"
        if not table.models:
            return False, "no model is loaded yet"
        waiting = [n for n, m in table.models.items() if not m.ready]
        if waiting:
            return False, f"not AVAILABLE yet: {', '.join(sorted(waiting))}"
        failed = "".join(f"; unavailable: {name} ({why})" for name, why in sorted(table.failed.items()))
        return True, f"{len(table.models)} model(s) AVAILABLE{failed}"

    # ---- invocation --------------------------------------------------------------------------
    def invoke(
        self, target: Target, body: handlers.Body, content_type: str | None, accept: str | None, timings: RequestTimings
    ) -> tuple[Reply, str]:
        """The answer and its content type; a streaming handler's answer is an iterator of chunks, which
        raises ApiError (as the handler's call would) when the handler fails mid-stream."""
        ctype = codecs.media_type(content_type)
        code = self.handlers(target.model)
        if code is None:
            if ctype in codecs.HANDLER_TYPES:
                raise ApiError(415, f"model '{target.model}' has no handler for content type '{ctype}'")
            return self._default(target, handlers.whole(body), ctype, accept, timings)
        ctx = self._context(target, ctype, accept, handlers.length(body), timings)
        if code.handler is not None:
            with timings.phase("handler"):
                return self._reply(target, "handler", self._call(target, code.handler, "handler",
                                                                 handlers.as_stream(body), ctx))  # fmt: skip
        with timings.phase("input"):
            if code.input_handler is not None:
                request = self._call(target, code.input_handler, "input_handler", handlers.as_stream(body), ctx)
            else:
                request = codecs.decode(handlers.whole(body), ctype)
        with timings.phase("runtime"):
            result, outputs = self.run_rest(target, _request_dict(request))
        with timings.phase("output"):
            response = handlers.ModelResponse(result, outputs)
            if code.output_handler is not None:
                reply = self._call(target, code.output_handler, "output_handler", response, ctx)
                return self._reply(target, "output_handler", reply)
            return codecs.encode(result, codecs.negotiate(accept))

    def _default(
        self, target: Target, body: bytes, ctype: str, accept: str | None, timings: RequestTimings
    ) -> tuple[bytes, str]:
        with timings.phase("input"):
            accept_type = codecs.negotiate(accept)  # fail before running the model
            request = codecs.decode(body, ctype)
        with timings.phase("runtime"):
            result, _ = self.run_rest(target, request)
        with timings.phase("output"):
            return codecs.encode(result, accept_type)

    def run_rest(self, target: Target, request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A TF Serving REST-shaped request -> (REST-shaped result, output arrays), over gRPC."""
        method = "classify" if target.method == "predict" and "examples" in request else target.method
        try:
            if method == "predict":
                return self._predict(target, request)
            return self._classify_or_regress(target, method, request)
        except TensorError as exc:
            raise bad_request(f"model '{target.model}': {exc}") from None

    def _predict(self, target: Target, request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        sig = self.signature(target, request.get("signature_name"))
        arrays, row = request_to_arrays(request, sig)
        outputs = self.predict_arrays(target, arrays, sig.name)
        return ({"predictions": predictions(outputs)} if row else {"outputs": columnar(outputs)}), outputs

    def signature(self, target: Target, name: str | None):
        versioned = self._grpc(target, lambda: self.runtimes.signatures(target.model, target.version, target.timeout))
        sig_name = name or "serving_default"
        sig = versioned.signatures.get(sig_name)
        if sig is None:
            raise bad_request(
                f"model '{target.model}' has no signature '{sig_name}' (has: {sorted(versioned.signatures)})"
            )
        return sig

    def predict_arrays(self, target: Target, arrays: dict[str, Any], signature: str) -> dict[str, Any]:
        """One Predict over gRPC, joined with concurrent requests for the same model (server.coalesce)."""
        sig = self.signature(target, signature)
        pool = self._grpc(target, lambda: self.runtimes.pool(target.model))

        def call(inputs: dict[str, Any]) -> dict[str, Any]:
            request = _predict_request(target, sig, inputs)
            response = self._grpc(target, lambda: pool.call("Predict", request, target.timeout))
            return {k: from_proto(v) for k, v in response.outputs.items()}

        key = batch_key(target.model, target.version, sig, arrays)
        return self.coalescer.run(key, arrays, len(pool.instances), call)

    def predict_stream(self, target: Target, arrays: dict[str, Any], signature: str) -> Iterator[dict[str, Any]]:
        """PredictStream: the model's outputs in parts as it makes them (not joined with other requests: the
        runtime batches a streaming model itself). Closing the iterator cancels the call, which stops the work."""
        sig = self.signature(target, signature)
        pool = self._grpc(target, lambda: self.runtimes.pool(target.model))
        request = _predict_request(target, sig, arrays)
        responses = self._grpc(target, lambda: pool.stream(request, target.timeout))
        with contextlib.closing(responses):  # type: ignore[type-var]
            while (response := self._grpc(target, lambda: next(responses, None))) is not None:
                yield {k: from_proto(v) for k, v in response.outputs.items()}

    def _classify_or_regress(self, target: Target, method: str, request: dict[str, Any]):
        if "examples" not in request:
            raise bad_request(f"tfs-method={method} needs a JSON body with 'examples'")
        message = (
            classification_pb2.ClassificationRequest if method == "classify" else regression_pb2.RegressionRequest
        )()
        _spec(message.model_spec, target, request.get("signature_name") or "serving_default")
        message.input.example_list.examples.extend(examples_to_protos(request["examples"]))
        rpc = "Classify" if method == "classify" else "Regress"
        response = self._grpc(target, lambda: self.runtimes.pool(target.model).call(rpc, message, target.timeout))
        if method == "classify":
            rows = [
                [[c.label or str(j), c.score] for j, c in enumerate(r.classes)] for r in response.result.classifications
            ]
            return {"results": rows}, {}
        return {"results": [r.value for r in response.result.regressions]}, {}

    def _grpc(self, target: Target, call):
        try:
            return call()
        except UnknownModel:
            raise not_found(f"model '{target.model}' is not served here") from None
        except PoolUnavailable as exc:
            raise ApiError(503, str(exc)) from None
        except grpc.RpcError as exc:
            status = _GRPC_STATUS.get(exc.code(), 500)
            raise ApiError(status, f"model '{target.model}': {exc.details()}") from None

    # ---- handlers ----------------------------------------------------------------------------
    def handlers(self, model: str) -> handlers.ModelHandlers | None:
        route = self.table().models[model]
        key = (model, route.code_dir)
        if key not in self._handlers:
            try:
                self._handlers[key] = handlers.load(model, Path(route.code_dir) if route.code_dir else None)
            except Exception as exc:
                traceback.print_exc()
                raise ApiError(500, f"model '{model}': code/inference.py failed to import: {exc}") from None
        return self._handlers[key]

    def _context(
        self, target: Target, ctype: str, accept: str | None, length: int, timings: RequestTimings
    ) -> handlers.Context:
        route = self.table().models[target.model]
        ready = [i for i in route.instances if i.state == READY] or route.instances
        inst = min(ready, key=lambda i: self.runtimes.pool(target.model).instances[i.id].outstanding)
        version = f"/versions/{target.version}" if target.version else ""
        # The handler reads its settings for the version its context names (anomaly's threshold and ROI, say),
        # so its calls run exactly that version, not whichever the runtime holds newest.
        pinned = replace(target, version=target.version or max(route.versions))

        def predict(inputs: dict[str, Any], signature: str = "serving_default") -> dict[str, Any]:
            with timings.phase("runtime"):
                return self.predict_arrays(pinned, inputs, signature)

        def predict_stream(inputs: dict[str, Any], signature: str = "serving_default") -> Iterator[dict[str, Any]]:
            return self.predict_stream(pinned, inputs, signature)

        return handlers.Context(
            model_name=target.model,
            model_version=str(pinned.version),
            method=target.method,
            rest_uri=f"http://127.0.0.1:{inst.rest_port}/v1/models/{target.model}{version}:{target.method}",
            grpc_port=inst.grpc_port,
            custom_attributes=target.attributes,
            request_content_type=ctype,
            accept_header=accept or codecs.JSON,
            content_length=length,
            predict=predict,
            predict_stream=predict_stream,
            request_id=timings.request_id,
            max_image_pixels=self.settings.max_image_pixels,
        )

    def _reply(self, target: Target, name: str, value: Any) -> tuple[Reply, str]:
        body, ctype = _as_reply(value)
        if isinstance(body, bytes):
            return body, ctype
        return self._guarded(target, name, body), ctype

    def _guarded(self, target: Target, name: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """A streamed answer whose handler errors come out as the ApiError its call would have raised."""
        with contextlib.closing(chunks):
            while (chunk := self._call(target, next, name, chunks, None)) is not None:
                yield chunk

    def _call(self, target: Target, fn, name: str, *args: Any) -> Any:
        try:
            return fn(*args)
        except ApiError:
            raise
        except UnicodeDecodeError as exc:  # the handler read the client's bytes as text, and they are not
            raise bad_request(
                f"model '{target.model}': the request body is not the text {name} expects: {exc}"
            ) from None
        except Exception as exc:
            status = handlers.client_status(exc)
            if status is not None:
                raise ApiError(status, f"model '{target.model}': {exc}") from None
            log.error("model %s: %s failed\n%s", target.model, name, traceback.format_exc())
            raise ApiError(500, f"model '{target.model}': {name} failed: {type(exc).__name__}: {exc}") from None

    # ---- multi-model endpoint ----------------------------------------------------------------
    def require_multi_model(self, what: str) -> None:
        if not self.settings.multi_model:
            raise ApiError(404, f"{what} needs a multi-model endpoint (SAGEMAKER_MULTI_MODEL=true)")

    def load_model(self, name: str, url: str) -> dict[str, Any]:
        return self._control("POST", "/models", f"loading model '{name}' failed", {"model_name": name, "url": url})

    def unload_model(self, name: str) -> dict[str, Any]:
        _check_name(name)
        return self._control("DELETE", f"/models/{name}", f"unloading model '{name}' failed")

    def refresh_versions(self, name: str) -> dict[str, Any]:
        """Serve the model's version folders as they are now (a version added or taken away), on any endpoint."""
        _check_name(name)
        return self._control("POST", f"/models/{name}/versions", f"refreshing the versions of model '{name}' failed")

    def _control(self, method: str, url: str, failure: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A change the supervisor makes (its control socket), then the routing table as it is after it."""
        status, payload = control.request(self.settings.control_socket, method, url, body)
        if status != 200:
            raise ApiError(status, payload.get("error", failure))
        self.runtimes.table(fresh=True)
        return payload

    def describe(self, name: str) -> dict[str, Any]:
        route = self.table().models.get(name)
        if route is None:
            raise not_found(f"model '{name}' is not loaded")
        return {
            "modelName": name,
            "modelUrl": route.base_path,
            "versions": route.versions,
            "runtime": route.kind,
            "instances": [{"id": i.id, "state": i.state} for i in route.instances],
        }

    def list_models(self, page_size: int, token: str | None) -> dict[str, Any]:
        names = sorted(self.table().models)
        start = names.index(token) if token in names else 0
        page = names[start : start + page_size]
        out: dict[str, Any] = {"models": [{"modelName": n, "modelUrl": self.table().models[n].base_path} for n in page]}
        if start + page_size < len(names):
            out["nextPageToken"] = names[start + page_size]
        return out


def _check_name(name: str) -> None:
    """A model name as it goes into a control-socket path."""
    if not MODEL_NAME.fullmatch(name):
        raise bad_request(f"{name!r} is not a valid model name (letters, digits, '.', '_', '-')")


def _spec(spec: Any, target: Target, signature: str) -> None:
    spec.name = target.model
    spec.signature_name = signature
    if target.version:
        spec.version.value = target.version


def _predict_request(target: Target, sig: Any, inputs: dict[str, Any]) -> Any:
    request = predict_pb2.PredictRequest()
    _spec(request.model_spec, target, sig.name)
    for key, value in inputs.items():
        spec = sig.inputs.get(key)
        request.inputs[key].CopyFrom(to_proto(value, spec.dtype if spec else None))
    return request


def _request_dict(request: Any) -> dict[str, Any]:
    if isinstance(request, bytes | str):
        request = json_body(request.encode() if isinstance(request, str) else request, "JSON from input_handler")
    if isinstance(request, list):
        request = {"instances": request}
    if not isinstance(request, dict):  # e.g. a handler that passes the client's `1` through: the client's mistake
        raise bad_request(
            f"the request is not a TF Serving request (an object or a list), but {type(request).__name__}"
        )
    return request


def _as_reply(value: Any) -> tuple[Reply, str]:
    """A handler's (body, content_type): the body as bytes, or, when the handler streams (an iterator or a
    generator of chunks), as an iterator of byte chunks."""
    if not (isinstance(value, tuple) and len(value) == 2):
        raise ApiError(500, "a handler must return (body, content_type)")
    body, ctype = value
    if isinstance(body, dict | list):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    if isinstance(body, bytearray | memoryview):
        body = bytes(body)
    if not isinstance(body, bytes):
        if not isinstance(body, Iterator):
            raise ApiError(500, f"a handler's body must be bytes, str, JSON, or an iterator of chunks, not "
                                f"{type(body).__name__}")  # fmt: skip
        body = _byte_chunks(body)
    return body, ctype


def _byte_chunks(chunks: Iterator[Any]) -> Iterator[bytes]:
    """Each chunk as bytes (str is UTF-8); empty chunks are dropped (an empty HTTP chunk would end the body).
    Closing this closes the handler's generator, so a client that went away stops the work."""
    try:
        for chunk in chunks:
            if isinstance(chunk, str):
                chunk = chunk.encode()
            elif isinstance(chunk, dict | list):
                chunk = json.dumps(chunk).encode()
            elif not isinstance(chunk, bytes | bytearray | memoryview):
                raise ApiError(500, f"a streamed chunk must be bytes or str, not {type(chunk).__name__}")
            if chunk:
                yield bytes(chunk)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
