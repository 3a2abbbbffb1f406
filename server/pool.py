"""The gateway's side of the runtime pool: binary gRPC calls spread over a model's instances.

Each call goes to the ready instance with the fewest requests outstanding from this worker
(ties rotate). An instance that is UNAVAILABLE (refused the connection, or died with the call in
flight) is skipped and the call goes to the next one; each process (instance and pid) is tried at
most once per call. When no instance is left, the call waits for the routing table to change (the
supervisor's control socket answers when it does: no polling) until a restarted instance is READY,
within the call's deadline and SAGESTACK_RESTART_WAIT_SECONDS. So a restart loses no request:
Predict, Classify, Regress and GetModelMetadata have no side effects, and a call is re-sent only to
another process. Channels are made lazily, after gunicorn forks, and remade when an instance restarts.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from server import control
from server.protos import PREDICT_STREAM, get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc
from server.routes import READY, InstanceRoute, ModelRoute, RouteReader
from server.tensors import Signature

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
]
SKIP_SECONDS = 1.0


class UnknownModel(LookupError):
    pass


class PoolUnavailable(RuntimeError):
    """No instance of the model could take the call."""


class Instance:
    def __init__(self, route: InstanceRoute) -> None:
        self.route = route
        self.outstanding = 0
        self.skip_until = 0.0
        self._stub: prediction_service_pb2_grpc.PredictionServiceStub | None = None
        self._channel: grpc.Channel | None = None

    @property
    def stub(self) -> prediction_service_pb2_grpc.PredictionServiceStub:
        if self._stub is None:
            self._channel = grpc.insecure_channel(f"127.0.0.1:{self.route.grpc_port}", options=CHANNEL_OPTIONS)
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        return self._stub

    def method(self, name: str) -> Callable[..., Any]:
        """A PredictionService method of the stub, or PredictStream (which returns an iterator of responses)."""
        stub = self.stub
        if name == "PredictStream":
            assert self._channel is not None
            return self._channel.unary_stream(
                PREDICT_STREAM,
                request_serializer=predict_pb2.PredictRequest.SerializeToString,
                response_deserializer=predict_pb2.PredictResponse.FromString,
            )
        return getattr(stub, name)

    def usable(self, now: float) -> bool:
        return self.route.state == READY and now >= self.skip_until

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = None


# wait(seconds) -> whether the routing table changed within them (and was re-read).
Waiter = Callable[[float], bool]


class ModelPool:
    def __init__(self, route: ModelRoute, wait: Waiter, wait_seconds: float) -> None:
        self.route = route
        self.instances: dict[str, Instance] = {}
        self._rotation = itertools.count()
        self.wait = wait
        self.wait_seconds = wait_seconds
        self.update(route)

    def update(self, route: ModelRoute) -> None:
        self.route = route
        fresh = {}
        for r in route.instances:
            old = self.instances.pop(r.id, None)
            if old is not None and old.route.pid == r.pid and old.route.grpc_port == r.grpc_port:
                old.route = r
                fresh[r.id] = old
            else:
                if old is not None:
                    old.close()  # a restarted process: start over with a new channel
                fresh[r.id] = Instance(r)
        for gone in self.instances.values():
            gone.close()
        self.instances = fresh

    def pick(self, exclude: set[tuple[str, int | None]]) -> Instance | None:
        now = time.monotonic()
        ready = [i for i in self.instances.values() if (i.route.id, i.route.pid) not in exclude and i.usable(now)]
        if not ready:
            return None
        start = next(self._rotation) % len(ready)
        rotated = ready[start:] + ready[:start]
        return min(rotated, key=lambda i: i.outstanding)

    def call(self, method: str, request: Any, timeout: float) -> Any:
        """`method` on the best instance within `timeout`, waiting out a restart if every instance is down."""
        result, _ = self._on_instance(lambda inst, left: inst.method(method)(request, timeout=left), timeout)
        return result

    def stream(self, request: Any, timeout: float) -> Iterator[Any]:
        """PredictStream's responses. The first is awaited here, so an instance that is down is passed over as in
        call(); the instance counts the stream as outstanding until it ends. Closing the iterator cancels it."""

        def start(inst: Instance, left: float) -> tuple[Any, Any]:
            responses = inst.method("PredictStream")(request, timeout=left)
            return responses, next(responses, None)

        (responses, first), inst = self._on_instance(start, timeout, hold=True)
        return _held(responses, first, inst)

    def _on_instance(self, attempt: Callable[[Instance, float], Any], timeout: float, hold: bool = False) -> Any:
        """(attempt(instance, seconds left), instance) on the best instance; with `hold`, the instance keeps the
        call as outstanding after it returns (the caller gives it back)."""
        started = time.monotonic()
        deadline = started + timeout
        wait_until = min(deadline, started + self.wait_seconds)
        tried: set[tuple[str, int | None]] = set()
        last: grpc.RpcError | None = None
        while True:
            inst = self.pick(tried)
            if inst is None:
                left = wait_until - time.monotonic()
                if left <= 0 or not self.wait(left):
                    break
                continue  # the table changed: a restarted instance may be READY
            inst.outstanding += 1
            give_back = True
            try:
                result = attempt(inst, max(deadline - time.monotonic(), 0.001))
                give_back = not hold
                return result, inst
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                inst.skip_until = time.monotonic() + SKIP_SECONDS
                tried.add((inst.route.id, inst.route.pid))
                last = exc
            finally:
                if give_back:
                    inst.outstanding -= 1
        detail = f": {last.details()}" if last is not None else ""
        waited = time.monotonic() - started
        raise PoolUnavailable(f"no instance of model '{self.route.name}' became available in {waited:.1f} s{detail}")


def _held(responses: Any, first: Any, inst: Instance) -> Iterator[Any]:
    try:
        if first is not None:
            yield first
            yield from responses
    finally:
        responses.cancel()
        inst.outstanding -= 1


@dataclass(frozen=True)
class VersionSignatures:
    version: int
    signatures: dict[str, Signature]


class Runtimes:
    """All model pools of this worker, kept in step with the routing table."""

    def __init__(self, routes_file: Path, control_socket: Path, wait_seconds: float) -> None:
        self.reader = RouteReader(routes_file)
        self.control_socket = control_socket
        self.wait_seconds = wait_seconds
        self.pools: dict[str, ModelPool] = {}
        self._table = None
        self._metadata: dict[tuple[str, int], VersionSignatures] = {}

    def wait_for_change(self, seconds: float) -> bool:
        """Block (cooperatively, under gevent) until the supervisor writes a newer table, then re-read it."""
        known = self.table(fresh=True).version
        version = control.wait_routes(self.control_socket, known, seconds)
        if version is None:
            time.sleep(min(seconds, 0.1))  # no supervisor to ask (a worker outside it): look again shortly
        return self.table(fresh=True).version > known

    def table(self, fresh: bool = False):
        table = self.reader.table(fresh)
        if table is not self._table:
            for name in list(self.pools):
                if name not in table.models:
                    for inst in self.pools.pop(name).instances.values():
                        inst.close()
                    self._metadata = {k: v for k, v in self._metadata.items() if k[0] != name}
            for name, route in table.models.items():
                if name in self.pools:
                    self.pools[name].update(route)
                else:
                    self.pools[name] = ModelPool(route, self.wait_for_change, self.wait_seconds)
            self._table = table
        return table

    def pool(self, name: str) -> ModelPool:
        self.table()
        try:
            return self.pools[name]
        except KeyError:
            raise UnknownModel(name) from None

    def signatures(self, name: str, version: int | None, timeout: float) -> VersionSignatures:
        key = (name, version or 0)
        cached = self._metadata.get(key)
        if cached is None:
            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            request.model_spec.name = name
            if version:
                request.model_spec.version.value = version
            response = self.pool(name).call("GetModelMetadata", request, timeout)
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(sig_map)
            sigs = {k: Signature.from_def(k, v) for k, v in sig_map.signature_def.items()}
            cached = VersionSignatures(response.model_spec.version.value, sigs)
            self._metadata[key] = cached
        return cached
