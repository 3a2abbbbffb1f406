"""gunicorn hooks (the arguments themselves come from server.settings via the supervisor)."""

from __future__ import annotations

import json
import os


def json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own replies to requests it cannot parse (a control character in a header, say), in JSON
    like every other error of the stack, instead of its HTML page."""
    from gunicorn import util

    body = json.dumps({"error": f"{reason}: {mesg}" if mesg else reason}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
    util.write_nonblock(sock, head.encode("latin-1") + body)


def post_fork(server, worker) -> None:
    from gunicorn import util

    util.write_error = json_error  # the workers look it up on every error
    # grpcio inside gevent workers must cooperate with the gevent hub, or a call blocks the worker.
    if worker.__class__.__name__.startswith("Gevent"):
        from grpc.experimental import gevent as grpc_gevent

        grpc_gevent.init_gevent()


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
