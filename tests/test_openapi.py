"""The OpenAPI 3 document of the front API: it lists exactly the app's routes, it is served, and schemathesis
finds no 5xx and no answer outside it (status, content type, schema) against the live stack."""

from __future__ import annotations

import json

import pytest
import requests
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

from bench.stack import ROOT, start_stack
from server.app import create_app
from server.settings import Settings

DOCUMENT = ROOT / "server" / "openapi.json"
schema = schemathesis.openapi.from_path(str(DOCUMENT))
METHODS = ("get", "post", "put", "delete", "patch")


def app_routes(tmp_path) -> dict[str, set[str]]:
    """uri template -> the HTTP methods its resource answers (Falcon's own OPTIONS left out)."""
    app = create_app(Settings.from_env({"SAGESTACK_RUN_DIR": str(tmp_path), "SAGESTACK_PROJECTS_DIR": str(tmp_path)}))

    def walk(nodes):
        for node in nodes:
            if node.resource is not None:
                yield node.uri_template, {
                    method.lower() for method, responder in node.method_map.items()
                    if method != "OPTIONS" and responder.__name__ != "method_not_allowed"
                }  # fmt: skip
            yield from walk(node.children)

    return dict(walk(app._router._roots))


def test_the_document_lists_exactly_the_apps_routes(tmp_path):
    document = json.loads(DOCUMENT.read_text())
    documented = {path: {m for m in ops if m in METHODS} for path, ops in document["paths"].items()}
    assert documented == app_routes(tmp_path)


@pytest.fixture(scope="module")
def stack(model_dir, tmp_path_factory):
    stack = start_stack(model_dir, tmp_path_factory.mktemp("openapi"),
                        SAGESTACK_PROJECTS_DIR=str(tmp_path_factory.mktemp("projects")))  # fmt: skip
    yield stack
    assert stack.stop() == 0


def test_the_document_is_served(stack):
    r = requests.get(stack.url + "/openapi.json", timeout=5)
    assert r.status_code == 200 and r.json() == json.loads(DOCUMENT.read_text())


@schema.parametrize()
def test_the_live_stack_keeps_to_the_document(case, stack):
    """Every check but positive-data acceptance: a body the schema allows may still not fit the model (its
    signature, a decodable image), which only the model can say, with a 4xx that names why."""
    case.call_and_validate(base_url=stack.url, timeout=60, excluded_checks=[positive_data_acceptance])
