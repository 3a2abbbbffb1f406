"""The Open Inference Protocol (KServe v2) over REST, on the same port as /invocations.

Routes: GET /v2/health/live (the process is up), GET /v2/health/ready (every model is ready, as /ping), GET /v2
(server metadata), GET /v2/models/{m}[/versions/{v}] (metadata from the runtime's signature), GET .../ready and
POST .../infer. A v2 request is tensors, so it goes straight to the model's signature through the gateway
(batching, variants, metrics and the access log as for /invocations); a model's inference.py is not run. Errors
are `{"error": "..."}`. The tensors' encoding is server.v2_protocol's.
"""

from __future__ import annotations

from typing import Any

import falcon

from server import front, v2_protocol
from server.errors import bad_request
from server.gateway import Gateway, Target
from server.request_log import RequestTimings
from server.v2_protocol import HEADER_LENGTH, V2Error
from server.variants import INVOKED_VARIANT

EXTENSIONS = ["binary_tensor_data"]


class Live:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"live": True}


class Ready:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        ready, _ = self.gateway.ready()
        resp.status = 200 if ready else 503
        resp.media = {"ready": ready}


class Server:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = server_metadata()


def metadata(gateway: Gateway, target: Target) -> dict[str, Any]:
    """A model's v2 metadata, from its runtime's signature (REST's and gRPC's alike)."""
    route = gateway.table().models[target.model]
    sig = gateway.signature(target, None)
    return {
        "name": target.model,
        "versions": [str(v) for v in route.versions],
        "platform": route.kind,
        "inputs": [v2_protocol.tensor_metadata(spec) for spec in sig.inputs.values()],
        "outputs": [v2_protocol.tensor_metadata(spec) for spec in sig.outputs.values()],
    }


def server_metadata() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("sagestack")
    except PackageNotFoundError:
        ours = "0"
    return {"name": "sagestack", "version": ours, "extensions": EXTENSIONS}


class Metadata(front.ModelResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, model: str, version: str | None = None) -> None:
        resp.media = metadata(self.gateway, self.target(req, model, version, load=False))


class ModelReady(front.ModelResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, model: str, version: str | None = None) -> None:
        target = self.target(req, model, version, load=False)
        ready = self.gateway.table().models[target.model].ready
        resp.status = 200 if ready else 503
        resp.media = {"name": target.model, "ready": ready}


def infer(gateway: Gateway, target: Target, request: v2_protocol.InferRequest, timings: RequestTimings
          ) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """Checks the inputs against the model's signature and runs it: the answering version and its outputs (REST's
    and gRPC's infer alike)."""
    with timings.phase("input"):
        sig = gateway.signature(target, None)
        unknown = sorted(set(request.inputs) - set(sig.inputs))
        if unknown:
            raise V2Error(f"model '{target.model}' has no input {', '.join(map(repr, unknown))} (inputs: "
                          f"{', '.join(sorted(sig.inputs))})")  # fmt: skip
    with timings.phase("runtime"):
        outputs = gateway.predict_arrays(target, request.inputs, sig.name)
    version = str(target.version or max(gateway.table().models[target.model].versions))
    return version, outputs


class Infer(front.ModelResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, model: str, version: str | None = None) -> None:
        target = self.target(req, model, version)
        front.start_invocation(req.context, target)
        body = front.read_body(req, self.gateway.settings.max_payload_bytes)
        timings = req.context.timings
        try:
            with timings.phase("input"):
                request = v2_protocol.parse(body, req.get_header(HEADER_LENGTH))
            answered, outputs = infer(self.gateway, target, request, timings)
            with timings.phase("output"):
                answer, header = v2_protocol.answer(target.model, answered, request, outputs)
        except V2Error as exc:
            raise bad_request(str(exc)) from None
        resp.set_header(INVOKED_VARIANT, target.variant)
        resp.data = answer
        if header is None:
            resp.content_type = falcon.MEDIA_JSON
        else:
            resp.content_type = "application/octet-stream"
            resp.set_header(HEADER_LENGTH, str(header))


def add_routes(app: falcon.App, gateway: Gateway) -> None:
    app.add_route("/v2/health/live", Live())
    app.add_route("/v2/health/ready", Ready(gateway))
    app.add_route("/v2", Server())
    metadata, ready, infer = Metadata(gateway), ModelReady(gateway), Infer(gateway)
    for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        app.add_route(base, metadata)
        app.add_route(base + "/ready", ready)
        app.add_route(base + "/infer", infer)
