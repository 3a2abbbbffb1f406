"""The SageMaker TFS `inference.py` handler contract.

A model's `code/inference.py` defines either `handler(data, context)` or `input_handler(data,
context)` and/or `output_handler(response, context)`; each returns `(body, content_type)`
(input_handler returns the request for the model). `code/lib/` is put on sys.path and
`code/requirements.txt` is installed by the supervisor before workers start. Each model's handler keeps the
modules it imported from its own code/ (imported when the handler loads), so two models may carry different
versions of one library name.

Beyond SageMaker's contract (which sends input_handler's JSON to TF Serving's REST API), an
input_handler may return `{"inputs": {name: ndarray}}` to go to the runtime as binary tensors,
the response carries `.outputs` (name -> ndarray) besides `.content`, `context.predict()`
runs the model from `handler` without JSON, and `context.predict_stream()` gives its outputs in parts. A handler
(or output_handler) whose body is an iterator of chunks streams its answer. An optional `agreement(production,
shadow, content_type)` says how far a shadow variant's answer agrees with production's (0-1). A handler
exception with an integer `status_code` between 400 and 499 is the client's fault and becomes that status.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import numpy as np

from server.handler_kit import MAX_IMAGE_PIXELS


@dataclass
class Context:
    model_name: str
    model_version: str
    method: str
    rest_uri: str
    grpc_port: int
    custom_attributes: str
    request_content_type: str
    accept_header: str
    content_length: int
    # sagestack: run the model with binary tensors, e.g. from handler().
    predict: Callable[..., dict[str, np.ndarray]] = field(repr=False, default=None)  # type: ignore[assignment]
    # sagestack: the same, the outputs in parts as the model makes them (the music model: a token each);
    # for a handler that streams its answer. Closing the iterator stops the model.
    predict_stream: Callable[..., Iterator[dict[str, np.ndarray]]] = field(repr=False, default=None)  # type: ignore[assignment]
    request_id: str = ""  # X-Amzn-RequestId, as in the access log
    max_image_pixels: int = MAX_IMAGE_PIXELS  # SAGESTACK_MAX_IMAGE_PIXELS, for handler_kit.decode_image


class ModelResponse:
    """What output_handler gets: shaped like requests.Response, plus the decoded output arrays."""

    def __init__(self, result: dict[str, Any], outputs: dict[str, np.ndarray] | None = None) -> None:
        self.status_code = 200
        self.headers = {"Content-Type": "application/json"}
        self.outputs = outputs or {}
        self._result = result
        self._content: bytes | None = None

    @property
    def content(self) -> bytes:
        if self._content is None:
            self._content = json.dumps(self._result).encode()
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> dict[str, Any]:
        return self._result


@dataclass
class ModelHandlers:
    path: Path
    handler: Callable | None
    input_handler: Callable | None
    output_handler: Callable | None
    # sagestack: agreement(production, shadow, content_type) -> 0..1, how far a shadow variant's answer agrees.
    agreement: Callable[[bytes, bytes, str], float] | None = None


def load(model_name: str, code_dir: Path | None) -> ModelHandlers | None:
    """Import `code/inference.py` for one model, or None if the model has none."""
    if code_dir is None:
        return None
    path = code_dir / "inference.py"
    if not path.is_file():
        return None
    lib = code_dir / "lib"
    for entry in (str(code_dir), str(lib)):
        if Path(entry).is_dir() and entry not in sys.path:
            sys.path.insert(0, entry)
    module_name = f"sagestack_handlers.{model_name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    before = set(sys.modules)
    try:
        spec.loader.exec_module(module)
    finally:
        _forget_code_modules(code_dir, set(sys.modules) - before)
    return ModelHandlers(
        path,
        getattr(module, "handler", None),
        getattr(module, "input_handler", None),
        getattr(module, "output_handler", None),
        getattr(module, "agreement", None),
    )


def _forget_code_modules(code_dir: Path, imported: set[str]) -> None:
    """Take the modules a handler's load imported from its own code/ (code/lib/handler_kit.py, code/lib/<family>/...)
    out of sys.modules: its functions keep them, and the next model's `import handler_kit` gets that model's copy,
    not the first one loaded (models built by different versions carry different kits)."""
    root = code_dir.resolve()
    for name in imported:
        origin = getattr(sys.modules[name], "__file__", None)
        if origin and Path(origin).resolve().is_relative_to(root):
            del sys.modules[name]


Body = bytes | IO[bytes]  # a request body: bytes, or (an async request's input of up to 1 GB) a spooled file


def as_stream(body: Body) -> IO[bytes]:
    """Handlers read `data` as a stream, as they read Falcon's request stream in SageMaker."""
    if isinstance(body, bytes):
        return io.BytesIO(body)
    body.seek(0)
    return body


def whole(body: Body) -> bytes:
    """The body's bytes, for the paths that decode it whole (the default TF Serving path)."""
    return body if isinstance(body, bytes) else as_stream(body).read()


def length(body: Body) -> int:
    if isinstance(body, bytes):
        return len(body)
    return body.seek(0, io.SEEK_END)


def client_status(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) and 400 <= code < 500 else None
