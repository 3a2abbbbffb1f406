"""Triton's model repository extension over the multi-model endpoint: `POST /v2/repository/index`,
`POST /v2/repository/models/{m}/load` and `.../unload` (and their gRPC RPCs, through server.v2_grpc).

The repository is the model directory (SAGESTACK_MODEL_DIR, /opt/ml/model). The index lists every loaded model,
one entry a version, and with SAGEMAKER_MULTI_MODEL=true every model of the directory not loaded yet
(`UNAVAILABLE`, reason `unloaded`, as Triton lists them). Load takes a model of the directory by name, as a
request naming a target model does on first use; unload unloads a loaded model wherever it came from. Load and
unload need a multi-model endpoint, as `POST /models` does (a 404 otherwise); the index answers on any endpoint.
A model that is already loaded is left as it is (Triton would reload it). Load parameters (Triton's `config` and
`file:` overrides) are refused with a 400: a model's files come from the directory.
"""

from __future__ import annotations

from typing import Any

import falcon

from server.errors import ApiError, bad_request
from server.front import read_body
from server.gateway import Gateway
from server.handler_kit import json_body
from server.modeldir import model_names

READY, UNAVAILABLE = "READY", "UNAVAILABLE"


def index(gateway: Gateway, ready_only: bool = False) -> list[dict[str, str]]:
    """Triton's RepositoryIndex: {"name", "version", "state", "reason"} per loaded version, then the rest."""
    table = gateway.table()
    entries = []
    for name, route in sorted(table.models.items()):
        reason = "" if route.ready else "instances " + ", ".join(i.state for i in route.instances)
        state = READY if route.ready else UNAVAILABLE
        entries += [{"name": name, "version": str(v), "state": state, "reason": reason} for v in route.versions]
    entries += [{"name": n, "version": "", "state": UNAVAILABLE, "reason": why} for n, why in table.failed.items()]
    if table.multi_model:
        listed = set(table.models) | set(table.failed)
        entries += [
            {"name": name, "version": "", "state": UNAVAILABLE, "reason": "unloaded"}
            for name in model_names(gateway.settings.model_dir)
            if name not in listed
        ]
    return [e for e in entries if e["state"] == READY] if ready_only else entries


def load(gateway: Gateway, name: str, parameters: dict[str, Any]) -> None:
    gateway.require_multi_model("Triton's repository load")
    if parameters:
        raise bad_request(f"load parameters {sorted(parameters)} are not taken: model '{name}' loads from the "
                          f"model directory {gateway.settings.model_dir}")  # fmt: skip
    if name in gateway.table().models:
        return
    try:
        gateway.load_from_model_dir(name)
    except ApiError as exc:
        if exc.status != 409:  # loaded, or being loaded, by another request meanwhile: what was asked for
            raise


def unload(gateway: Gateway, name: str) -> None:
    gateway.require_multi_model("Triton's repository unload")
    gateway.unload_model(name)


def _body(req: falcon.Request, gateway: Gateway) -> dict[str, Any]:
    """The optional JSON object of a repository request (Triton sends none, or `{}`)."""
    raw = read_body(req, gateway.settings.max_payload_bytes)
    if not raw.strip():
        return {}
    doc = json_body(raw)
    if not isinstance(doc, dict):
        raise bad_request("the body must be a JSON object")
    return doc


class Index:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        ready = _body(req, self.gateway).get("ready", False)
        if not isinstance(ready, bool):
            raise bad_request(f"'ready' must be true or false, got {ready!r}")
        resp.media = index(self.gateway, ready)


class Load:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def on_post(self, req: falcon.Request, resp: falcon.Response, model: str) -> None:
        req.context.model = model
        parameters = _body(req, self.gateway).get("parameters") or {}
        if not isinstance(parameters, dict):
            raise bad_request("'parameters' must be a JSON object")
        load(self.gateway, model, parameters)


class Unload:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def on_post(self, req: falcon.Request, resp: falcon.Response, model: str) -> None:
        req.context.model = model
        _body(req, self.gateway)  # Triton's `unload_dependents` changes nothing here: there are no ensembles
        unload(self.gateway, model)


def add_routes(app: falcon.App, gateway: Gateway) -> None:
    app.add_route("/v2/repository/index", Index(gateway))
    app.add_route("/v2/repository/models/{model}/load", Load(gateway))
    app.add_route("/v2/repository/models/{model}/unload", Unload(gateway))
