"""TF Serving's REST API on a runtime (`/v1/models/{name}[/versions/{v}][:predict|:classify|:regress|/metadata]`).

The gateway talks gRPC; REST is there for handlers that call `context.rest_uri`, SageMaker-style,
and for people poking at a runtime with curl.
"""

from __future__ import annotations

import json
import re
import traceback
from typing import Any

import numpy as np

from server.jsonhttp import JsonHandler
from server.runtimes.servable import CLASSIFY, REGRESS, NotFound, Overloaded, first_line, is_client_error
from server.runtimes.store import ModelStore, State, signature_def
from server.tensors import TensorError, columnar, examples_to_protos, predictions, request_to_arrays

_REST_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?(?P<rest>/metadata|:\w+)?$")


def rest_handler(store: ModelStore) -> type[JsonHandler]:
    class Handler(JsonHandler):
        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def _dispatch(self, verb: str) -> None:
            match = _REST_PATH.match(self.path.split("?", 1)[0])
            body = self.read_body()
            if match is None:
                return self.send_json(404, {"error": f"unknown path {self.path}"})
            name, rest = match["name"], match["rest"] or ""
            version = int(match["version"]) if match["version"] else None
            try:
                if verb == "GET" and rest == "":
                    return self.send_json(200, self._status(name, version))
                if verb == "GET" and rest == "/metadata":
                    return self.send_json(200, self._metadata(name, version))
                if verb == "POST" and rest in (":predict", ":classify", ":regress"):
                    return self.send_json(200, self._infer(name, version, rest[1:], json.loads(body or b"{}")))
                return self.send_json(404, {"error": f"unsupported {verb} {self.path}"})
            except NotFound as exc:
                return self.send_json(404, {"error": str(exc)})
            except Overloaded as exc:
                return self.send_json(503, {"error": str(exc)})
            except Exception as exc:
                if is_client_error(exc):
                    return self.send_json(400, {"error": first_line(exc)})
                traceback.print_exc()
                return self.send_json(500, {"error": f"{type(exc).__name__}: {first_line(exc)}"})

        def _status(self, name: str, version: int | None) -> dict[str, Any]:
            model = store.model(name)
            statuses = [
                {
                    "version": str(mv.version),
                    "state": State.Name(mv.state),
                    "status": {"error_code": "UNKNOWN" if mv.error else "OK", "error_message": mv.error},
                }
                for mv in sorted(model.versions.values(), key=lambda v: -v.version)
                if version is None or mv.version == version
            ]
            if not statuses:
                raise NotFound(f"model '{name}' has no version {version}")
            return {"model_version_status": statuses}

        def _metadata(self, name: str, version: int | None) -> dict[str, Any]:
            from google.protobuf import json_format

            mv = store.model(name).get(version)
            assert mv.servable is not None
            sigs = {k: json_format.MessageToDict(signature_def(s)) for k, s in mv.servable.signatures.items()}
            return {
                "model_spec": {"name": name, "signature_name": "", "version": str(mv.version)},
                "metadata": {"signature_def": {"signature_def": sigs}},
            }

        def _infer(self, name: str, version: int | None, method: str, body: dict[str, Any]) -> Any:
            if not isinstance(body, dict):
                raise TensorError("the request body must be a JSON object")
            mv, sig = store.resolve(name, version, body.get("signature_name"))
            if method == "predict":
                arrays, row = request_to_arrays(body, sig)
                outputs = store.run(mv, sig, arrays)
                return {"predictions": predictions(outputs)} if row else {"outputs": columnar(outputs)}
            examples = examples_to_protos(body.get("examples"))
            outputs = store.classify_or_regress(mv, sig, examples, CLASSIFY if method == "classify" else REGRESS)
            return {"results": rest_results(method, outputs)}

    return Handler


def rest_results(method: str, outputs: dict[str, np.ndarray]) -> list[Any]:
    """TF Serving REST shapes: classify -> [[[label, score], ...], ...]; regress -> [value, ...]."""
    if method == "regress":
        values = outputs["outputs"]
        return values.reshape(len(values), -1)[:, 0].tolist()
    scores, classes = outputs.get("scores"), outputs.get("classes")
    ref = scores if scores is not None else classes
    results = []
    for i in range(len(ref)):
        row_scores = scores[i].reshape(-1).tolist() if scores is not None else None
        row_classes = classes[i].reshape(-1).tolist() if classes is not None else None
        width = len(row_scores if row_scores is not None else row_classes)
        row = []
        for j in range(width):
            label = row_classes[j] if row_classes is not None else str(j)
            label = label.decode() if isinstance(label, bytes) else label
            row.append([label, row_scores[j]] if row_scores is not None else [label])
        results.append(row)
    return results
