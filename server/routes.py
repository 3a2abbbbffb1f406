"""The routing table: which models are served, by which runtime instances, in which state.

The supervisor owns it and rewrites `routes.json` atomically on every change; each gateway
worker re-reads it when the file changes. So all gunicorn workers agree on what is loaded,
also under multi-model load/unload, without talking to each other.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

STARTING, READY, DOWN = "starting", "ready", "down"


@dataclass
class InstanceRoute:
    id: str
    grpc_port: int
    rest_port: int
    state: str = STARTING
    pid: int | None = None


@dataclass
class ModelRoute:
    name: str
    base_path: str
    kind: str
    versions: list[int]
    code_dir: str | None = None
    instances: list[InstanceRoute] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return any(i.state == READY for i in self.instances)


@dataclass
class VariantRoute:
    name: str
    model: str
    weight: float


@dataclass
class EndpointRoute:
    """One endpoint's production variants (a request is split by weight) and its shadow, if any."""

    name: str
    variants: list[VariantRoute]
    shadow: VariantRoute | None = None
    shadow_percentage: float = 0.0


@dataclass
class RouteTable:
    models: dict[str, ModelRoute] = field(default_factory=dict)
    default_model: str | None = None
    multi_model: bool = False
    # Models that could not start under SAGESTACK_FAIL_ON_MODEL_ERROR=false: name -> why (backend, module).
    failed: dict[str, str] = field(default_factory=dict)
    # Raised by the supervisor on every write; a worker waiting for a restart asks for a version after its own.
    version: int = 0
    # Endpoints with more than one variant (server.variants): the configured one, and each compiled twin.
    endpoints: dict[str, EndpointRoute] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> RouteTable:
        raw = json.loads(path.read_text())
        models = {
            name: ModelRoute(**{**m, "instances": [InstanceRoute(**i) for i in m["instances"]]})
            for name, m in raw["models"].items()
        }
        rest = {key: raw[key] for key in ("default_model", "multi_model", "failed", "version") if key in raw}
        endpoints = {name: _endpoint(e) for name, e in raw.get("endpoints", {}).items()}
        return cls(models, **rest, endpoints=endpoints)


def _endpoint(raw: dict) -> EndpointRoute:
    shadow = VariantRoute(**raw["shadow"]) if raw.get("shadow") else None
    variants = [VariantRoute(**v) for v in raw["variants"]]
    return EndpointRoute(raw["name"], variants, shadow, raw.get("shadow_percentage", 0.0))


class RouteReader:
    """A gateway worker's view of the table, refreshed when the file's mtime changes.

    The file is looked at no more than every `max_age` seconds (a request asks several times;
    a stat each time was a measurable share of a trivial request), unless `fresh` is asked for.
    """

    def __init__(self, path: Path, max_age: float = 0.02) -> None:
        self.path = path
        self.max_age = max_age
        self._stamp: tuple[int, int] | None = None
        self._checked = -1.0
        self._table = RouteTable()

    def table(self, fresh: bool = False) -> RouteTable:
        now = time.monotonic()
        if not fresh and now - self._checked < self.max_age:
            return self._table
        self._checked = now
        try:
            st = self.path.stat()
            stamp = (st.st_ino, st.st_mtime_ns)  # every write is a new file (os.replace): two in one tick differ
        except FileNotFoundError:
            return self._table
        if stamp != self._stamp:
            self._table = RouteTable.read(self.path)
            self._stamp = stamp
        return self._table
