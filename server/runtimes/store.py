"""The models one runtime process serves: version folders, load states, warm-up, and calls into servables.

Both front ends (gRPC in grpc_api.py, REST in rest.py) resolve and run through one ModelStore. Each model names
its backend as its config's `model_platform` (a key of server.runtimes.RUNTIMES), so one process can serve the
models of several backends that share a framework.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from server.modeldir import version_dirs
from server.protos import get_model_status_pb2, meta_graph_pb2, model_server_config_pb2
from server.runtimes.batching import Batching
from server.runtimes.servable import DEFAULT_SIGNATURE, Backend, NotFound, Servable
from server.tensors import Signature, TensorError, check_shape

State = get_model_status_pb2.ModelVersionStatus.State


@dataclass
class ModelVersion:
    version: int
    path: Path
    state: int = State.START
    error: str = ""
    servable: Servable | None = None


@dataclass
class Model:
    name: str
    kind: str
    base_path: Path
    versions: dict[int, ModelVersion] = field(default_factory=dict)

    def get(self, version: int | None) -> ModelVersion:
        if version is None or version == 0:
            ready = [v for v in self.versions.values() if v.state == State.AVAILABLE]
            if not ready:
                raise NotFound(f"model '{self.name}' has no available version")
            return max(ready, key=lambda v: v.version)
        mv = self.versions.get(version)
        if mv is None or mv.state != State.AVAILABLE:
            raise NotFound(f"model '{self.name}' has no available version {version}")
        return mv


def select_versions(available: dict[int, Path], policy: Any) -> dict[int, Path]:
    kind = policy.WhichOneof("policy_choice") if policy is not None else None
    if kind == "all":
        return available
    if kind == "specific":
        wanted = set(policy.specific.versions)
        return {v: p for v, p in available.items() if v in wanted}
    n = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions else 1
    return {v: available[v] for v in sorted(available)[-n:]}


class ModelStore:
    """`backend(kind)` gives the backend for a model kind (made once, on first use: its imports come with it);
    `default_kind` serves the models whose config names no platform."""

    def __init__(
        self, backend: Callable[[str], Backend], batcher: Batching | None = None, default_kind: str = "tensorflow"
    ) -> None:
        self.backend = backend
        self.batcher = batcher
        self.default_kind = default_kind
        self.models: dict[str, Model] = {}
        self._config_lock = threading.Lock()

    def load_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Serve exactly the configured models, as TF Serving's reload does: new ones load (and are warmed) before
        this returns, removed ones are dropped, and the ones that stay are left as they are."""
        with self._config_lock:
            wanted = {cfg.name: cfg for cfg in config.model_config_list.config}
            for name in [n for n in self.models if n not in wanted]:
                del self.models[name]  # in-flight calls keep their servable until they finish
                log(f"model '{name}' unloaded")
            for name, cfg in wanted.items():
                kind, base = cfg.model_platform or self.default_kind, Path(cfg.base_path)
                known = self.models.get(name)
                chosen = select_versions(version_dirs(base), cfg.model_version_policy)
                if known is not None and (known.kind, known.base_path) == (kind, base):
                    self._refresh_versions(known, chosen)
                    continue
                model = Model(name, kind, base)
                for version, path in sorted(chosen.items()):
                    model.versions[version] = ModelVersion(version, path)
                if known is None:
                    self.models[name] = model  # status shows it LOADING; only AVAILABLE versions are served
                for mv in model.versions.values():
                    self._load(model, mv)
                self.models[name] = model
                if not chosen:
                    log(f"model '{name}': no numeric version directory under {base}")

    def _refresh_versions(self, model: Model, chosen: dict[int, Path]) -> None:
        """A model that stays: versions added to its folder since load (loaded and warmed first), and versions taken
        away, as TF Serving's file-system poll sees them. The versions that stay are left as they are."""
        versions = {v: mv for v, mv in model.versions.items() if v in chosen}
        for version, path in sorted(chosen.items()):
            if version not in versions:
                versions[version] = mv = ModelVersion(version, path)
                self._load(model, mv)
        gone = sorted(set(model.versions) - set(versions))
        model.versions = versions  # one swap: readers see the old or the new set; in-flight calls keep theirs
        for version in gone:
            log(f"model '{model.name}' version {version} unloaded")

    def _load(self, model: Model, mv: ModelVersion) -> None:
        name = model.name
        mv.state = State.LOADING
        started = time.monotonic()
        try:
            mv.servable = self.backend(model.kind)(mv.path)
            warmup(mv.servable)
        except Exception as exc:  # a broken version must not take the others down
            missing = isinstance(exc, ModuleNotFoundError)
            why = f"the Python module '{exc.name}' is not installed" if missing else type(exc).__name__  # type: ignore[attr-defined]
            mv.state, mv.error = State.END, f"{why}: {exc}"
            log(f"model '{name}' version {mv.version} failed to load: {mv.error}")
            return
        mv.state = State.AVAILABLE
        took = time.monotonic() - started
        log(f"model '{name}' version {mv.version} AVAILABLE (loaded and warmed in {took:.2f}s)")

    def model(self, name: str) -> Model:
        try:
            return self.models[name]
        except KeyError:
            raise NotFound(f"model '{name}' is not served here") from None

    def resolve(self, name: str, version: int | None, signature: str | None) -> tuple[ModelVersion, Signature]:
        mv = self.model(name).get(version)
        assert mv.servable is not None
        sig_name = signature or DEFAULT_SIGNATURE
        sig = mv.servable.signatures.get(sig_name)
        if sig is None:
            raise NotFound(f"model '{name}' version {mv.version} has no signature '{sig_name}'")
        return mv, sig

    def run(self, mv: ModelVersion, sig: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check(sig, inputs)
        assert mv.servable is not None
        if self.batcher is not None and not getattr(mv.servable, "batches_itself", False):
            return self.batcher.run(mv.servable, sig.name, inputs)
        return mv.servable.run(sig.name, inputs)

    def run_stream(
        self, mv: ModelVersion, sig: Signature, inputs: dict[str, np.ndarray]
    ) -> Iterator[dict[str, np.ndarray]]:
        """The outputs in parts, from a servable that streams (see Servable); else the whole outputs as one."""
        self._check(sig, inputs)
        stream = getattr(mv.servable, "run_stream", None)
        if stream is None:
            return iter([self.run(mv, sig, inputs)])
        return stream(sig.name, inputs)

    @staticmethod
    def _check(sig: Signature, inputs: dict[str, np.ndarray]) -> None:
        for key in inputs:
            if key not in sig.inputs:
                raise TensorError(f"unknown input '{key}'; signature '{sig.name}' takes {list(sig.inputs)}")
        missing = [k for k in sig.inputs if k not in inputs]
        if missing:
            raise TensorError(f"missing input(s) {missing} for signature '{sig.name}'")
        for key, value in inputs.items():  # the graph never sees a shape it does not declare (some kernels crash)
            if sig.inputs[key].shape is not None:
                check_shape(key, value.shape, sig.inputs[key].shape)

    def classify_or_regress(
        self, mv: ModelVersion, sig: Signature, examples: Iterable[Any], method: str
    ) -> dict[str, np.ndarray]:
        if sig.method != method:
            raise TensorError(f"signature '{sig.name}' is a {sig.method.rsplit('/', 1)[-1]} signature, not {method}")
        if len(sig.inputs) != 1:
            raise TensorError(f"signature '{sig.name}' must take exactly one serialized-example input")
        serialized = np.array([e.SerializeToString() for e in examples], dtype=object)
        return self.run(mv, sig, {next(iter(sig.inputs)): serialized})


def warmup(servable: Servable) -> None:
    """Run each signature once so the first real request does not pay for tracing/allocation.

    A servable with `warmup_inputs` (signature -> inputs) supplies real requests, like TF Serving's
    assets.extra/tf_serving_warmup_requests; other signatures get zeros of their declared shapes.
    """
    own = getattr(servable, "warmup_inputs", {})
    for sig in servable.signatures.values():
        inputs = dict(own.get(sig.name, {}))
        for name, spec in sig.inputs.items():
            if name in inputs:
                continue
            shape = tuple(1 if d < 0 else d for d in (spec.shape or (1,)))
            if spec.np_dtype is np.object_:
                shape = (0, *shape[1:]) if shape else (0,)
                inputs[name] = np.empty(shape, dtype=object)
            else:
                inputs[name] = np.zeros(shape, dtype=spec.np_dtype)
        try:
            servable.run(sig.name, inputs)
        except Exception as exc:  # synthetic inputs may not suit every signature
            log(f"warm-up of signature '{sig.name}' skipped: {type(exc).__name__}: {str(exc)[:200]}")


def signature_def(sig: Signature) -> meta_graph_pb2.SignatureDef:
    out = meta_graph_pb2.SignatureDef(method_name=sig.method)
    for target, specs in ((out.inputs, sig.inputs), (out.outputs, sig.outputs)):
        for key, spec in specs.items():
            info = target[key]
            info.name = f"{key}:0"
            info.dtype = spec.dtype
            if spec.shape is None:
                info.tensor_shape.unknown_rank = True
            else:
                for d in spec.shape:
                    info.tensor_shape.dim.add(size=d)
    return out


def log(message: str) -> None:
    print(f"[model_server] {message}", file=sys.stderr, flush=True)
