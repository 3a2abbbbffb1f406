"""TF Serving's REST API on the front, as the SageMaker TFS container passes it through: `POST
/v1/models/{m}[/versions/{v}]:predict|classify|regress` and `GET /v1/models/{m}[/versions/{v}]` (model status).

The body is TF Serving's (`instances`, `inputs`, `examples`, `signature_name`), answered as TF Serving answers it,
through the gateway like /invocations (batching, variants, metrics, the access log). It is a tensor protocol: a
model's inference.py is not run.
"""

from __future__ import annotations

import falcon

from server import front
from server.errors import bad_request
from server.gateway import METHODS, Gateway
from server.handler_kit import json_body
from server.variants import INVOKED_VARIANT


class Status(front.ModelResource):
    """GET /v1/models/{m}[/versions/{v}]: TF Serving's GetModelStatus."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, model: str, version: str | None = None) -> None:
        target = self.target(req, model, version, load=False)
        route = self.gateway.table().models[target.model]
        state = "AVAILABLE" if route.ready else "LOADING"
        versions = [target.version] if target.version else sorted(route.versions, reverse=True)
        resp.media = {"model_version_status": [
            {"version": str(v), "state": state, "status": {"error_code": "OK", "error_message": ""}} for v in versions
        ]}  # fmt: skip


class Method(front.ModelResource):
    """POST /v1/models/{m}[/versions/{v}]:{predict|classify|regress}."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, model: str, verb: str,
                version: str | None = None) -> None:  # fmt: skip
        if verb not in METHODS:
            raise bad_request(f"':{verb}' is not a TF Serving method (one of {', '.join(METHODS)})")
        target = self.target(req, model, version, verb)
        front.start_invocation(req.context, target)
        request = json_body(front.read_body(req, self.gateway.settings.max_payload_bytes))
        if not isinstance(request, dict):
            raise bad_request('the body must be a JSON object: {"instances": [...]}, {"inputs": ...} or {"examples"}')
        with req.context.timings.phase("runtime"):
            result, _ = self.gateway.run_rest(target, request)
        resp.set_header(INVOKED_VARIANT, target.variant)
        resp.media = result


def add_routes(app: falcon.App, gateway: Gateway) -> None:
    status, method = Status(gateway), Method(gateway)
    for base in ("/v1/models/{model}", "/v1/models/{model}/versions/{version}"):
        app.add_route(base, status)
        app.add_route(base + ":{verb}", method)
