"""The Falcon app gunicorn runs: small resources over the Gateway, errors always JSON.

Routes: /ping, /invocations, /endpoints/{name}/invocations (what boto3's invoke_endpoint calls),
/endpoints/{name}/async-invocations (invoke_endpoint_async), /endpoints/{name}/invocations-response-stream
(invoke_endpoint_with_response_stream),
/models... (multi-model endpoints), /metrics and /openapi.json (the OpenAPI 3 document of these); the model
families' own routes (ROUTE_MODULES), such as the anomaly projects at /projects.
"""

from __future__ import annotations

import dataclasses
import hmac
import importlib.resources
import json
import logging
from collections.abc import Callable, Iterator
from typing import IO, Any

import falcon

from server import (
    async_inference,
    eventstream,
    front,
    handlers,
    metrics,
    owners,
    request_log,
    samples_api,
    v1_api,
    v2_api,
    v2_repository,
)
from server.async_queue import AsyncQueue, AsyncRequest
from server.errors import ApiError
from server.front import read_body, spool_body
from server.gateway import Gateway, Reply
from server.handler_kit import ClientError, json_body
from server.request_log import RequestTimings
from server.settings import Settings
from server.traffic import ENABLE_EXPLANATIONS, INFERENCE_ID, Traffic
from server.variants import COMPILED_SUFFIX, INVOKED_VARIANT, TARGET_VARIANT

TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
SERVED_BY = "X-Sagestack-Model"
VARIANT = "X-Sagestack-Variant"  # "compiled" when the compiled twin answered, else "default"
log = logging.getLogger("sagestack.app")
# Owners of routes beyond the service's, by module name (the service imports none of them): each has
# `add_routes(app, gateway)` and adds what its settings turn on.
ROUTE_MODULES = ("models.routes",)


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class Ping:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        ready, detail = self.gateway.ready()
        resp.status = 200 if ready else 503
        resp.data = json.dumps({"status": "ready" if ready else "not ready", "detail": detail}).encode()


class ExecutionParameters:
    """GET /execution-parameters: what this container asks of a batch transform job that does not say, as
    SageMaker's container contract has it (the job's own MaxConcurrentTransforms etc. win)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        s = self.gateway.settings
        resp.data = json.dumps({
            "MaxConcurrentTransforms": s.max_concurrent_transforms,
            "BatchStrategy": s.batch_strategy.upper(),
            "MaxPayloadInMB": max(1, int(s.max_payload_mb)),
        }).encode()  # fmt: skip


class Invocations:
    """POST /invocations, /endpoints/{endpoint}/invocations and /models/{name}/invoke.

    A handler that streams (returns an iterator of chunks) is sent with chunked transfer encoding as the chunks
    come, SageMaker's container contract for streaming; it runs to its first chunk before the status goes out,
    so a failure before any output is still a JSON error status. A failure later cuts the chunked body short
    (no last chunk), which every HTTP client reports as an incomplete body."""

    ACCEPT = "Accept"

    def __init__(self, gateway: Gateway, queue: AsyncQueue | None, traffic: Traffic) -> None:
        self.gateway = gateway
        self.queue = queue
        self.traffic = traffic

    def on_post(
        self, req: falcon.Request, resp: falcon.Response, endpoint: str | None = None, name: str | None = None
    ) -> None:
        settings = self.gateway.settings
        if name is not None and not settings.multi_model:
            raise ApiError(404, "/models/{name}/invoke needs a multi-model endpoint (SAGEMAKER_MULTI_MODEL=true)")
        model = name or req.get_header(TARGET_MODEL)
        target = self.gateway.target(req.get_header(CUSTOM_ATTRIBUTES), model, req.get_header(TARGET_VARIANT))
        front.start_invocation(req.context, target)
        running = self._async_request(req.get_header(async_inference.ASYNC_ID))
        body: handlers.Body
        if running is None:
            body = read_body(req, settings.max_payload_bytes)
        else:  # the dispatcher running an async request: its input may be up to 1 GB, its deadline its own
            target = dataclasses.replace(target, timeout=float(running.invocation_timeout))
            body = spool_body(req, async_inference.MAX_INPUT_BYTES, settings.max_payload_bytes,
                              settings.run_dir / "async" / "spool")  # fmt: skip
        timings: RequestTimings = req.context.timings
        reply: Reply = b""
        accept = req.get_header(self.ACCEPT)
        try:
            reply, content_type = self.traffic.answer(target, body, req.content_type, accept, timings,
                                                      req.get_header(ENABLE_EXPLANATIONS),
                                                      req.get_header(INFERENCE_ID))  # fmt: skip
            if not isinstance(reply, bytes):
                reply = started(reply, closing=None if isinstance(body, bytes) else body)
        finally:
            if isinstance(reply, bytes) and not isinstance(body, bytes):
                body.close()  # a stream closes the spooled input when it ends
        resp.set_header(SERVED_BY, target.model)  # which model (or variant) answered
        resp.set_header(VARIANT, "compiled" if target.model.endswith(COMPILED_SUFFIX) else "default")
        resp.set_header(INVOKED_VARIANT, target.variant)
        self.answer(resp, reply, content_type)

    def _async_request(self, inference_id: str | None) -> AsyncRequest | None:
        """The async request this call runs, when the dispatcher makes it (the id must be running in the queue)."""
        if inference_id is None or self.queue is None:
            return None
        return self.queue.running(inference_id)

    def answer(self, resp: falcon.Response, reply: Reply, content_type: str) -> None:
        resp.content_type = content_type
        if isinstance(reply, bytes):
            resp.data = reply
        else:
            resp.stream = reply  # no Content-Length: chunked


class InvocationsResponseStream(Invocations):
    """POST /endpoints/{endpoint}/invocations-response-stream (InvokeEndpointWithResponseStream): the answer as
    event stream PayloadParts, one per chunk the handler streams (one for a whole answer), and a ModelStreamError
    event when the handler fails mid-stream. The model's content type is in X-Amzn-SageMaker-Content-Type."""

    ACCEPT = "X-Amzn-SageMaker-Accept"

    def answer(self, resp: falcon.Response, reply: Reply, content_type: str) -> None:
        resp.content_type = eventstream.CONTENT_TYPE
        resp.set_header("X-Amzn-SageMaker-Content-Type", content_type)
        resp.stream = EventReply(reply)


def started(chunks: Iterator[bytes], closing: IO[bytes] | None) -> StreamedReply:
    """The stream, run to its first chunk now (its errors so far are the request's)."""
    try:
        first = next(chunks, None)
    except BaseException:
        chunks.close()  # type: ignore[attr-defined]
        if closing is not None:
            closing.close()
        raise
    return StreamedReply(first, chunks, closing)


class ClosingReply:
    """A streamed answer whose end runs callbacks (the request's metrics and log line), once: the WSGI server
    calls `close()` when the last chunk has gone or the client went away, even before the first chunk."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []

    def on_close(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def close(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


class StreamedReply(ClosingReply):
    """A streamed answer as the WSGI server iterates it. Closing it closes the handler's generator, which
    cancels the runtime call, and `closing`, the spooled input."""

    def __init__(self, first: bytes | None, chunks: Iterator[bytes], closing: IO[bytes] | None) -> None:
        super().__init__()
        self.first, self.chunks, self.closing = first, chunks, closing

    def __iter__(self) -> StreamedReply:
        return self

    def __next__(self) -> bytes:
        if self.first is not None:
            first, self.first = self.first, None
            return first
        return next(self.chunks)

    def close(self) -> None:
        self.first = None
        try:
            self.chunks.close()  # type: ignore[attr-defined]
            if self.closing is not None:
                self.closing.close()
        finally:
            super().close()


class EventReply(ClosingReply):
    """The answer as event stream messages: each chunk as PayloadParts of at most PART_BYTES (botocore refuses
    larger event payloads), a ModelStreamError when the model fails mid-stream. `close()` closes the answer."""

    PART_BYTES = 1 << 20

    def __init__(self, reply: Reply) -> None:
        super().__init__()
        self.reply = reply
        self.events = self._events()

    def _events(self) -> Iterator[bytes]:
        chunks = [self.reply] if isinstance(self.reply, bytes) else self.reply
        try:
            for chunk in chunks:
                for at in range(0, max(len(chunk), 1), self.PART_BYTES):
                    yield eventstream.payload_part(chunk[at : at + self.PART_BYTES])
        except ApiError as exc:
            log.warning("stream cut by the model: %s", exc.message)
            code = "ModelInvocationTimeExceeded" if exc.status == 504 else "ModelError"
            yield eventstream.model_stream_error(exc.message, code)

    def __iter__(self) -> EventReply:
        return self

    def __next__(self) -> bytes:
        return next(self.events)

    def close(self) -> None:
        try:
            self.events.close()
            if not isinstance(self.reply, bytes):
                self.reply.close()  # type: ignore[attr-defined]
        finally:
            super().close()


class AsyncInvocations:
    """POST /endpoints/{endpoint}/async-invocations (InvokeEndpointAsync): checked, queued on disk, answered 202.

    server.async_dispatcher runs it later through /invocations and writes the answer where the headers say."""

    def __init__(self, gateway: Gateway, queue: AsyncQueue | None) -> None:
        self.gateway = gateway
        self.queue = queue

    def on_post(self, req: falcon.Request, resp: falcon.Response, endpoint: str) -> None:
        request = async_inference.parse(req.get_header, self.gateway.settings)
        req.context.model = self.gateway.target(request.custom_attributes).model  # an unknown model fails now
        assert self.queue is not None  # parse() refuses when async inference is not configured
        if not self.queue.submit(request):
            raise ApiError(409, f"InferenceId {request.inference_id!r} is already queued or running")
        resp.status = 202
        resp.media = {"InferenceId": request.inference_id}
        resp.set_header(async_inference.OUTPUT_LOCATION, request.output_location)
        resp.set_header(async_inference.FAILURE_LOCATION, request.failure_location)


class Models:
    """Multi-model endpoint management: POST/GET /models, GET/DELETE /models/{name}."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _require_mme(self) -> None:
        self.gateway.require_multi_model("model management")

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._require_mme()
        size = req.get_param_as_int("page_size", min_value=1, max_value=1000) or req.get_param_as_int(
            "limit", min_value=1, max_value=1000
        )
        token = req.get_param("next_page_token")
        resp.media = self.gateway.list_models(size or 100, token)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._require_mme()
        body = json_body(read_body(req, self.gateway.settings.max_payload_bytes))
        if not isinstance(body, dict) or not body.get("model_name") or not body.get("url"):
            raise ApiError(400, 'the body must be {"model_name": ..., "url": ...}')
        req.context.model = body["model_name"]
        resp.media = self.gateway.load_model(str(body["model_name"]), str(body["url"]))

    def on_get_one(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self._require_mme()
        resp.media = self.gateway.describe(name)

    def on_delete_one(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self._require_mme()
        req.context.model = name
        resp.media = self.gateway.unload_model(name)


class OpenApi:
    """GET /openapi.json: the front API's OpenAPI 3 document (server/openapi.json; a test keeps it true)."""

    def __init__(self) -> None:
        self.document = (importlib.resources.files("server") / "openapi.json").read_bytes()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data, resp.content_type = self.document, falcon.MEDIA_JSON


class Metrics:
    def __init__(self, gateway: Gateway, queue: AsyncQueue | None) -> None:
        self.gateway = gateway
        self.queue = queue

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = metrics.render(self.gateway.table(), self.queue.stats() if self.queue else None)
        resp.content_type = metrics.CONTENT_TYPE


OPEN_PATHS = ("/ping", "/v2/health/live", "/v2/health/ready", "/openapi.json")  # health and the API: no token


class BearerAuth:
    """With SAGESTACK_AUTH_TOKEN set, every route but /ping needs `Authorization: Bearer <token>` (compared in
    constant time); /ping stays open for the platform's health checks."""

    def __init__(self, token: str) -> None:
        self.expected = f"Bearer {token}".encode()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path in OPEN_PATHS:
            return
        given = (req.get_header("Authorization") or "").encode("latin-1", "replace")
        if not hmac.compare_digest(given, self.expected):
            raise ApiError(401, "missing or wrong bearer token (Authorization: Bearer <SAGESTACK_AUTH_TOKEN>)",
                           {"WWW-Authenticate": 'Bearer realm="sagestack"'})  # fmt: skip


class RequestMetrics:
    """Counts and times every request by model and route; gives each its id and, for invocations, a log line."""

    def __init__(self, access_log: bool) -> None:
        self.access_log = access_log

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        header = req.get_header
        rid = front.begin(req.context, header(request_log.REQUEST_ID), header(request_log.REQUEST_START))
        resp.set_header(request_log.REQUEST_ID, rid)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, ok: bool) -> None:
        """Counted now, or for a streamed answer when its last chunk has gone (or the client went away)."""
        stream = resp.stream
        if isinstance(stream, ClosingReply):
            stream.on_close(lambda: self._finish(req, resp))
        else:
            self._finish(req, resp)

    def _finish(self, req: falcon.Request, resp: falcon.Response) -> None:
        code = int(str(resp.status).split()[0]) if not isinstance(resp.status, int) else resp.status
        front.finish(req.context, req.uri_template or "unmatched", code, self.access_log)


def _api_error(req: falcon.Request, resp: falcon.Response, exc: ApiError, params: dict[str, Any]) -> None:
    resp.status = exc.status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = _error_body(exc.message)
    for name, value in exc.headers.items():
        resp.set_header(name, value)


def _client_error(req: falcon.Request, resp: falcon.Response, exc: ClientError, params: dict[str, Any]) -> None:
    """The handler kit's errors (codecs, Accept, JSON limits) carry their own status."""
    _api_error(req, resp, ApiError(exc.status_code, str(exc)), params)


def _http_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError, params: dict[str, Any]) -> None:
    resp.status = exc.status
    resp.content_type = falcon.MEDIA_JSON
    message = exc.description or exc.title
    if isinstance(exc, falcon.HTTPNotFound) and not exc.description:
        message = f"Not Found: {req.path}"
    resp.data = _error_body(message)
    for name, value in (exc.headers or {}).items():
        resp.set_header(name, value)


def _unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
    log.exception("unexpected error on %s %s", req.method, req.path)
    resp.status = 500
    resp.content_type = falcon.MEDIA_JSON
    resp.data = _error_body(f"internal error: {type(exc).__name__}: {exc}")


class GatewayApp(falcon.App):
    """falcon.App carrying the settings and gateway it was made with, for the worker that serves it."""

    def __init__(self, settings: Settings, gateway: Gateway, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.gateway = gateway  # OIP v2's gRPC service (server.v2_grpc) serves over the same one


def create_app(settings: Settings | str | None = None) -> GatewayApp:
    """The gateway app. gunicorn calls `create_app('<run_dir>/settings.json')`: the supervisor's validated
    settings, not the environment again. `app.settings` tells the worker (h1c_worker) the same values."""
    if not isinstance(settings, Settings):
        settings = Settings.load(settings) if settings else Settings.from_env()
    gateway = Gateway(settings)
    queue = AsyncQueue(settings.async_queue_file) if settings.async_enabled else None
    middleware: list[Any] = [RequestMetrics(settings.access_log)]
    if settings.auth_token:
        middleware.append(BearerAuth(settings.auth_token))
    app = GatewayApp(settings, gateway, middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_error_handler(ApiError, _api_error)
    app.add_error_handler(ClientError, _client_error)
    app.add_route("/ping", Ping(gateway))
    traffic = Traffic(gateway)
    invocations = Invocations(gateway, queue, traffic)
    app.add_route("/invocations", invocations)
    app.add_route("/endpoints/{endpoint}/invocations", invocations)
    app.add_route("/endpoints/{endpoint}/async-invocations", AsyncInvocations(gateway, queue))
    streamed = InvocationsResponseStream(gateway, queue, traffic)
    app.add_route("/endpoints/{endpoint}/invocations-response-stream", streamed)
    app.add_route("/models/{name}/invoke", invocations)
    models = Models(gateway)
    app.add_route("/models", models)
    app.add_route("/models/{name}", models, suffix="one")
    app.add_route("/metrics", Metrics(gateway, queue))
    app.add_route("/execution-parameters", ExecutionParameters(gateway))
    app.add_route("/openapi.json", OpenApi())
    v1_api.add_routes(app, gateway)
    v2_api.add_routes(app, gateway)
    v2_repository.add_routes(app, gateway)
    samples_api.add_routes(app, gateway)
    for module in owners.installed(ROUTE_MODULES):  # an image without a family lacks its routes
        module.add_routes(app, gateway)
    return app
