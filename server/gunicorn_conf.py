"""gunicorn hooks (the arguments themselves come from server.settings via the supervisor)."""

from __future__ import annotations

import json
import os
import signal
import threading

GRPC_GRACE_SECONDS = 5.0


def json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's own replies to requests it cannot parse (a control character in a header, say), in JSON
    like every other error of the stack, instead of its HTML page."""
    from gunicorn import util

    body = json.dumps({"error": f"{reason}: {mesg}" if mesg else reason}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
    util.write_nonblock(sock, head.encode("latin-1") + body)


def one_write_response_class() -> type:
    """gunicorn's Response, sending the header in the same `sendall` as the first body bytes.

    gunicorn writes the header, then the body, in two sends. A worker killed between them leaves
    nginx holding a header it has already passed on, so it cannot try the request on another worker
    and the client gets a cut-off response. Held back until the body comes, the header and a
    whole-body response (every Falcon reply) go out in one sendall: for a reply that fits the socket's
    send buffer (every JSON answer here), one send, so nginx gets all of it or nothing. A larger body
    still takes several sends, and a kill between them still cuts it off."""
    from gunicorn.http import wsgi

    class OneWriteResponse(wsgi.Response):
        _held = b""

        def send_headers(self) -> None:
            if self.headers_sent:
                return
            lines = self.default_headers() + [f"{k}: {v}\r\n" for k, v in self.headers]
            self._held = ("".join(lines) + "\r\n").encode("latin-1")
            self.headers_sent = True

        def _flush_held(self) -> None:
            held, self._held = self._held, b""
            if held:
                self.sock.sendall(held)

        def _emit_body(self, data: bytes) -> None:
            if self._held and not self.chunked:
                held, self._held = self._held, b""
                self.sock.sendall(held + data)
                return
            self._flush_held()
            super()._emit_body(data)

        def sendfile(self, respiter) -> bool:
            self.send_headers()
            self._flush_held()  # the file goes out by sendfile(2), after the header
            return super().sendfile(respiter)

        def close(self) -> None:
            self.send_headers()
            self._flush_held()
            super().close()

    return OneWriteResponse


def post_fork(server, worker) -> None:
    from gunicorn import util
    from gunicorn.http import wsgi

    util.write_error = json_error  # the workers look it up on every error
    wsgi.Response = one_write_response_class()  # wsgi.create looks it up on every request
    # grpcio inside gevent workers must cooperate with the gevent hub, or a call blocks the worker.
    if worker.__class__.__name__.startswith("Gevent"):
        from grpc.experimental import gevent as grpc_gevent

        grpc_gevent.init_gevent()


def post_worker_init(worker) -> None:
    """With SAGESTACK_GRPC_PORT set, this worker serves OIP v2 over gRPC too, over its app's gateway. On SIGTERM
    it stops taking gRPC calls at once, as nginx and gunicorn stop taking HTTP ones, and the calls in flight get
    GRPC_GRACE_SECONDS, inside the drain, to finish."""
    app = worker.wsgi
    if getattr(app, "settings", None) is None or not app.settings.grpc_port:
        return
    from server import v2_grpc

    grpc_server = worker.grpc_server = v2_grpc.serve(app.gateway)
    http_exit = worker.handle_exit

    def handle_exit(sig, frame) -> None:
        # Off the signal handler: stop() takes the gRPC server's lock (a green thread in gevent workers).
        threading.Thread(target=grpc_server.stop, args=(GRPC_GRACE_SECONDS,), daemon=True).start()
        http_exit(sig, frame)

    signal.signal(signal.SIGTERM, handle_exit)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn sets it: no system call cut short


def worker_exit(server, worker) -> None:
    """Waits for the gRPC calls still in flight (GRPC_GRACE_SECONDS at most since SIGTERM)."""
    grpc_server = getattr(worker, "grpc_server", None)
    if grpc_server is not None:
        grpc_server.stop(GRPC_GRACE_SECONDS).wait()


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
