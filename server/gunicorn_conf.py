"""gunicorn hooks (the arguments themselves come from server.settings via the supervisor)."""

from __future__ import annotations

import os


def post_fork(server, worker) -> None:
    # grpcio inside gevent workers must cooperate with the gevent hub, or a call blocks the worker.
    if worker.__class__.__name__.startswith("Gevent"):
        from grpc.experimental import gevent as grpc_gevent

        grpc_gevent.init_gevent()


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
