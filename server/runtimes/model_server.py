"""One model-server API, whatever the backend (as TF Serving keeps it): the runtime process's entry point.

`python -m server.runtimes.model_server --settings_file=F --port=G --rest_api_port=R --model_config_file=C ...`
serves the models named in a TF Serving model config file on gRPC (grpc_api.py) and REST (rest.py), and takes
new model lists as TF Serving does (ModelService.HandleReloadConfigRequest). It takes `tensorflow_model_server`'s
own flags, so the supervisor launches it and the real binary the same way; the batching settings come validated
from the supervisor's settings file. Each model's `model_platform` names its backend, a key of
server.runtimes.RUNTIMES (`--runtime` for those that name none); a backend only loads one version directory into
a `Servable` (servable.py), everything else lives in the store (store.py).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

from google.protobuf import text_format

from server.protos import model_server_config_pb2
from server.runtimes.batching import Batching
from server.runtimes.grpc_api import grpc_server
from server.runtimes.servable import Backend, BackendFactory, RuntimeOptions
from server.runtimes.store import ModelStore, log
from server.settings import Settings


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="TF-Serving-compatible model server")
    p.add_argument("--runtime", default="tensorflow", help="the backend of models whose config names no platform")
    p.add_argument("--settings_file", type=Path, help="the supervisor's validated settings (default: SageMaker's)")
    p.add_argument("--port", type=int, default=8500)
    p.add_argument("--rest_api_port", type=int, default=0)
    p.add_argument("--model_config_file")
    p.add_argument("--model_name", default="default")
    p.add_argument("--model_base_path")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0)
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0)
    p.add_argument("--enable_batching", nargs="?", const="true", default="false")
    p.add_argument("--per_process_gpu_memory_fraction", type=float, default=0.0)
    p.add_argument("--grpc_max_threads", type=int, default=16)
    args, unknown = p.parse_known_args(argv)
    if unknown:
        log(f"ignoring flags this server does not implement: {unknown}")
    if not args.model_config_file and not args.model_base_path:
        p.error("--model_config_file or --model_base_path is required")
    return args


def load_config(args: argparse.Namespace) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    if args.model_config_file:
        text_format.Parse(Path(args.model_config_file).read_text(), config)
    else:
        cfg = config.model_config_list.config.add(name=args.model_name, base_path=args.model_base_path)
        cfg.model_platform = args.runtime
    return config


class Backends:
    """The backend for each model kind, made from RUNTIMES[kind].factory on first use (its heavy imports with it)."""

    def __init__(self, options: RuntimeOptions) -> None:
        self.options = options
        self.made: dict[str, Backend] = {}

    def __call__(self, kind: str) -> Backend:
        if kind not in self.made:
            self.made[kind] = backend_factory(kind)(self.options)
        return self.made[kind]


def serve(argv: list[str]) -> None:
    """Listen on gRPC (and REST), load every configured version with its backend, serve until SIGTERM."""
    args = parse_args(argv)
    settings = Settings.load(args.settings_file) if args.settings_file else Settings.from_env({})
    batching = args.enable_batching.lower() == "true"
    batcher = Batching.from_settings(settings) if batching else None
    options = RuntimeOptions(
        intra_op_threads=args.tensorflow_intra_op_parallelism,
        inter_op_threads=args.tensorflow_inter_op_parallelism,
        max_batch_size=settings.max_batch_size if batching else 0,
    )
    store = ModelStore(Backends(options), batcher, args.runtime)
    server = grpc_server(store, args.grpc_max_threads)
    # Listen first (status says LOADING meanwhile), then load: the supervisor can watch progress.
    if server.add_insecure_port(f"127.0.0.1:{args.port}") == 0:
        raise SystemExit(f"cannot bind gRPC port {args.port}")
    server.start()
    rest = None
    if args.rest_api_port:
        from server.runtimes.rest import rest_handler

        rest = ThreadingHTTPServer(("127.0.0.1", args.rest_api_port), rest_handler(store))
        rest.daemon_threads = True
        threading.Thread(target=rest.serve_forever, daemon=True).start()
    store.load_config(load_config(args))

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log(f"serving gRPC on {args.port}, REST on {args.rest_api_port or '-'}")
    stop.wait()
    log("stopping: finishing in-flight requests")
    server.stop(grace=10).wait()
    if rest is not None:
        rest.shutdown()


def backend_factory(kind: str) -> BackendFactory:
    """RUNTIMES[kind].factory, "module:function", imported now (the backend's heavy imports come with it)."""
    from server.runtimes import RUNTIMES

    if kind not in RUNTIMES:
        raise ValueError(f"unknown runtime {kind!r} (known: {', '.join(sorted(RUNTIMES))})")
    module, _, function = RUNTIMES[kind].factory.partition(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> None:
    serve(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
