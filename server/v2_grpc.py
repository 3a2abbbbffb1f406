"""The Open Inference Protocol (KServe v2) over gRPC: `inference.GRPCInferenceService` on SAGESTACK_GRPC_PORT.

Every gateway worker serves it (gunicorn_conf starts it after the worker loads the app), binding the port with
SO_REUSEPORT so the kernel spreads connections over the workers, as nginx spreads HTTP over them. The messages and
stubs are the ones tritonclient generates from Triton's grpc_service.proto (a maintained package; none are written
here). A call goes the way of REST's v2 routes: the same model target, signature check, gateway predict (batching,
variants), metrics, variant counters and access log, under the route `/inference.GRPCInferenceService/<Rpc>` with
the HTTP status the same mistake gets over REST. Tensors come as typed `contents` or `raw_input_contents` (laid out
as server.v2_protocol's binary tensors); outputs go back as `raw_output_contents`, as Triton sends them.

The request id (`x-amzn-requestid`) and the variant that answered (`x-amzn-invoked-production-variant`) come
back as trailing metadata; `x-amzn-sagemaker-target-variant` metadata pins a variant. With SAGESTACK_AUTH_TOKEN
set, every RPC but ServerLive and ServerReady needs `authorization: Bearer <token>`.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import math
import types
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from server import front, request_log, v2_api, v2_repository
from server.errors import ApiError
from server.gateway import Gateway
from server.handler_kit import ClientError
from server.v2_protocol import DATATYPES, InferRequest, V2Error, datatype, from_bytes, selected, to_bytes
from server.variants import INVOKED_VARIANT, TARGET_VARIANT

log = logging.getLogger("sagestack.v2_grpc")
SERVICE = "inference.GRPCInferenceService"
CONCURRENCY = 64  # calls one gateway worker runs at once; more wait in gRPC's own queue
MAX_WAITING = 1024  # calls one worker holds waiting; past that, gRPC answers RESOURCE_EXHAUSTED
OPEN_RPCS = ("ServerLive", "ServerReady")  # health: no token, as /ping and /v2/health/*
_CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND, 409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED, 503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED,
}  # fmt: skip
Reply = TypeVar("Reply")


def status_code(http_status: int) -> grpc.StatusCode:
    """The gRPC status for the HTTP status REST gives the same mistake (Triton's mapping)."""
    if http_status in _CODES:
        return _CODES[http_status]
    return grpc.StatusCode.INVALID_ARGUMENT if http_status < 500 else grpc.StatusCode.INTERNAL


def infer_request(message: Any) -> InferRequest:
    """A ModelInferRequest's tensors as numpy, or a V2Error naming the tensor at fault."""
    if not message.inputs:
        raise V2Error("a ModelInferRequest needs inputs")
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise V2Error(f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs (one each)")
    inputs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(message.inputs):
        name, kind, shape = tensor.name, tensor.datatype, list(tensor.shape)
        if name in inputs:
            raise V2Error(f"input '{name}' is given twice")
        if kind not in DATATYPES:
            raise V2Error(f"input '{name}': datatype {kind!r} is not supported (supported: {', '.join(DATATYPES)})")
        if any(d < 0 for d in shape):
            raise V2Error(f"input '{name}': shape must be a list of non-negative integers")
        count = math.prod(shape)  # Python ints: a huge shape cannot wrap to a small count
        inputs[name] = from_bytes(name, raw[i], kind, shape, count) if raw else _typed(tensor, shape, count)
    return InferRequest(message.id or None, inputs, [out.name for out in message.outputs], set(), False)


def _typed(tensor: Any, shape: list[int], count: int) -> np.ndarray:
    name, kind = tensor.name, tensor.datatype
    if kind not in _CONTENTS:
        raise V2Error(f"input '{name}': {kind} has no typed contents in the protocol; send it in raw_input_contents")
    values = list(getattr(tensor.contents, _CONTENTS[kind]))
    if len(values) != count:
        raise V2Error(f"input '{name}': {len(values)} {_CONTENTS[kind]} values for shape {shape}")
    try:
        return np.array(values, dtype=DATATYPES[kind]).reshape(shape)
    except (OverflowError, ValueError):
        raise V2Error(f"input '{name}': a value does not fit {kind}") from None


class Service(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The RPCs of OIP v2 over the worker's gateway. The ones not here answer UNIMPLEMENTED (the base class)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        token = gateway.settings.auth_token
        self.expected = f"Bearer {token}".encode() if token else None

    def _run(self, rpc: str, context: grpc.ServicerContext, work: Callable[[Any], Reply]) -> Reply:
        """One call with REST's bookkeeping: its id (sent back as metadata), auth, metrics, log line, errors."""
        metadata = dict(context.invocation_metadata())
        call = types.SimpleNamespace(metadata=metadata)
        rid = front.begin(call, metadata.get(request_log.REQUEST_ID.lower()))
        code, message = 200, ""
        try:
            self._authorize(rpc, metadata)
            return work(call)
        except ApiError as exc:
            code, message = exc.status, exc.message
        except ClientError as exc:
            code, message = exc.status_code, str(exc)
        except V2Error as exc:
            code, message = 400, str(exc)
        except Exception as exc:
            log.exception("unexpected error in %s", rpc)
            code, message = 500, f"internal error: {type(exc).__name__}: {exc}"
        finally:
            front.finish(call, f"/{SERVICE}/{rpc}", code, self.gateway.settings.access_log)
            sent = [(request_log.REQUEST_ID.lower(), rid)]
            if call.variant is not None:
                sent.append((INVOKED_VARIANT.lower(), call.variant[1]))
            context.set_trailing_metadata(sent)
        context.abort(status_code(code), message)

    def _authorize(self, rpc: str, metadata: dict[str, Any]) -> None:
        if self.expected is None or rpc in OPEN_RPCS:
            return
        given = str(metadata.get("authorization", "")).encode("latin-1", "replace")
        if not hmac.compare_digest(given, self.expected):
            raise ApiError(401, "missing or wrong bearer token (metadata authorization: Bearer <SAGESTACK_AUTH_TOKEN>)")

    def _target(self, model: str, version: str, metadata: dict[str, Any], context: grpc.ServicerContext,
                load: bool = True):  # fmt: skip
        variant = metadata.get(TARGET_VARIANT.lower())
        target = front.model_target(self.gateway, model, version or None, variant, load=load)
        remaining = context.time_remaining()  # the client's deadline (no deadline: a very long time)
        if remaining <= 0:
            raise ApiError(504, "the call's deadline passed before the model was called")
        return dataclasses.replace(target, timeout=min(target.timeout, remaining))

    def ServerLive(self, request, context):
        return self._run("ServerLive", context, lambda call: service_pb2.ServerLiveResponse(live=True))

    def ServerReady(self, request, context):
        return self._run("ServerReady", context,
                         lambda call: service_pb2.ServerReadyResponse(ready=self.gateway.ready()[0]))  # fmt: skip

    def ServerMetadata(self, request, context):
        return self._run("ServerMetadata", context,
                         lambda call: service_pb2.ServerMetadataResponse(**v2_api.server_metadata()))  # fmt: skip

    def ModelReady(self, request, context):
        def work(call: Any) -> Any:
            try:
                target = self._target(request.name, request.version, call.metadata, context, load=False)
            except ApiError as exc:
                if exc.status not in (404, 503):
                    raise
                return service_pb2.ModelReadyResponse(ready=False)  # as Triton: an unknown or failed model is not
            return service_pb2.ModelReadyResponse(ready=self.gateway.table().models[target.model].ready)

        return self._run("ModelReady", context, work)

    def ModelMetadata(self, request, context):
        def work(call: Any) -> Any:
            target = self._target(request.name, request.version, call.metadata, context, load=False)
            doc = v2_api.metadata(self.gateway, target)
            tensors = {
                side: [service_pb2.ModelMetadataResponse.TensorMetadata(**t) for t in doc[side]]
                for side in ("inputs", "outputs")
            }
            return service_pb2.ModelMetadataResponse(name=doc["name"], versions=doc["versions"],
                                                     platform=doc["platform"], **tensors)  # fmt: skip

        return self._run("ModelMetadata", context, work)

    def ModelInfer(self, request, context):
        def work(call: Any) -> Any:
            target = self._target(request.model_name, request.model_version, call.metadata, context)
            front.start_invocation(call, target)
            with call.timings.phase("input"):
                asked = infer_request(request)
            version, outputs = v2_api.infer(self.gateway, target, asked, call.timings)
            with call.timings.phase("output"):
                reply = service_pb2.ModelInferResponse(model_name=target.model, model_version=version,
                                                       id=request.id)  # fmt: skip
                for name, array in selected(target.model, asked, outputs):
                    reply.outputs.add(name=name, datatype=datatype(array.dtype), shape=list(array.shape))
                    reply.raw_output_contents.append(to_bytes(array))
            return reply

        return self._run("ModelInfer", context, work)

    def RepositoryIndex(self, request, context):
        def work(call: Any) -> Any:
            _one_repository(request)
            entries = v2_repository.index(self.gateway, request.ready)
            return service_pb2.RepositoryIndexResponse(
                models=[service_pb2.RepositoryIndexResponse.ModelIndex(**e) for e in entries]
            )

        return self._run("RepositoryIndex", context, work)

    def RepositoryModelLoad(self, request, context):
        def work(call: Any) -> Any:
            _one_repository(request)
            call.model = request.model_name
            v2_repository.load(self.gateway, request.model_name, dict(request.parameters))
            return service_pb2.RepositoryModelLoadResponse()

        return self._run("RepositoryModelLoad", context, work)

    def RepositoryModelUnload(self, request, context):
        def work(call: Any) -> Any:
            _one_repository(request)
            call.model = request.model_name
            v2_repository.unload(self.gateway, request.model_name)
            return service_pb2.RepositoryModelUnloadResponse()

        return self._run("RepositoryModelUnload", context, work)


def _one_repository(request: Any) -> None:
    """The model directory is the one repository; a request naming another is a mistake (as Triton answers it)."""
    if request.repository_name:
        raise V2Error(f"repository_name {request.repository_name!r}: there is one repository, the model directory")


def serve(gateway: Gateway) -> grpc.Server:
    """This worker's gRPC server, started on SAGESTACK_GRPC_PORT (shared with the other workers)."""
    settings = gateway.settings
    options = [
        ("grpc.so_reuseport", 1),
        ("grpc.max_receive_message_length", settings.max_payload_bytes),  # SAGEMAKER_MAX_PAYLOAD_IN_MB, as REST
        ("grpc.max_send_message_length", -1),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="v2-grpc"), options=options,
                         maximum_concurrent_rpcs=MAX_WAITING + CONCURRENCY)  # fmt: skip
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Service(gateway), server)
    address = f"{settings.bind_address}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"SAGESTACK_GRPC_PORT={settings.grpc_port}: cannot listen on {address}: {exc}") from None
    server.start()
    return server
