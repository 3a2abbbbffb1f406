"""gunicorn worker class `gevent_h1c`: gunicorn's gevent worker with a lean HTTP/1.1 connection loop.

gunicorn's gevent worker spends ~140 us of Python per request on a trivial WSGI app here (its
Request/Response objects, the body readers, the access-log clock). Behind the stack's nginx that is
as much as our whole app. This worker keeps everything of gunicorn's except the per-connection loop:
the arbiter, heartbeat, graceful shutdown, max_requests, hooks such as post_fork, and gevent's
StreamServer. The loop has gunicorn's optional C parser (gunicorn_h1c, picohttpparser) build the
WSGI environ, reads the body by Content-Length (or chunked), buffers the response and sends it in one
write. A response without a Content-Length (a handler that streams) goes out with chunked transfer
encoding, a chunk as the app yields it. An async request's input (the dispatcher's call, up to 1 GB) is
read from the socket as the app reads it, not buffered. Left out on purpose: gunicorn's access log (the
stack configures none; a configured one is ignored with a warning), the pre/post_request hooks and HTTP/2.
"""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

import gevent
import gunicorn_h1c
from gunicorn.workers.ggevent import GeventWorker

from server.async_inference import MAX_INPUT_BYTES

MAX_HEAD_BYTES = 64 * 1024  # request line + headers; nginx's own proxy buffers are far smaller
RECV_BYTES = 256 * 1024
CHUNK_LINE_BYTES = 4096  # a chunk-size line with its extensions
HEX_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")  # RFC 9112 chunk-size: HEXDIG only
NO_BODY_STATUSES = ("1", "204", "304")


class HTTPError(Exception):
    """A request this loop refuses before the app sees it; the connection closes after the reply."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class Connection:
    """One client socket: read a request, run the app, write the reply, until either side closes."""

    def __init__(self, worker: GeventH1cWorker, sock: Any, server: tuple[str, str], peer: tuple[str, str]) -> None:
        self.worker, self.sock, self.server, self.peer = worker, sock, server, peer
        self.buffer = bytearray()

    def serve(self) -> None:
        while True:
            try:
                environ = self.read_request()
            except HTTPError as e:
                self.send(
                    e.status, [("Content-Type", "application/json")], json.dumps({"error": str(e)}).encode(), False
                )
                return
            if environ is None:
                return
            if not self.respond(environ):
                return

    def _fill(self) -> bool:
        data = self.sock.recv(RECV_BYTES)
        self.buffer += data
        return bool(data)

    def read_request(self) -> dict[str, Any] | None:
        """The next request's environ with its body in wsgi.input; None when the client closed between requests."""
        while True:
            try:
                environ = gunicorn_h1c.parse_to_wsgi_environ(self.buffer, self.server, self.peer)
                break
            except gunicorn_h1c.IncompleteError:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    raise HTTPError("431 Request Header Fields Too Large", "request headers are too large") from None
                if not self._fill():
                    return None
            except (gunicorn_h1c.LimitRequestHeaders, gunicorn_h1c.LimitRequestLine) as e:
                raise HTTPError("431 Request Header Fields Too Large", f"request head is too large: {e}") from None
            except gunicorn_h1c.ParseError as e:
                raise HTTPError("400 Bad Request", f"malformed HTTP request: {e}") from None
        del self.buffer[: environ.pop("_consumed")]
        if environ.get("HTTP_EXPECT", "").lower() == "100-continue":
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        wsgi_input: io.IOBase
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            body = self._read_chunked()
            environ["CONTENT_LENGTH"] = str(len(body))
            wsgi_input = io.BytesIO(body)
        elif "HTTP_X_SAGESTACK_ASYNC_ID" in environ:  # the app checks the id against the queue before it reads
            n = _content_length(environ.get("CONTENT_LENGTH"))
            if n > MAX_INPUT_BYTES:
                raise HTTPError("413 Payload Too Large", f"async input of {n} bytes exceeds 1 GB")
            wsgi_input = SocketBody(self, n)
        else:
            wsgi_input = io.BytesIO(
                self._read_exactly(self._check_size(_content_length(environ.get("CONTENT_LENGTH"))))
            )
        path = environ["PATH_INFO"]
        if "%" in path:
            environ["PATH_INFO"] = unquote(path, "latin-1")
        environ.update(
            {
                "wsgi.input": wsgi_input,
                "wsgi.errors": sys.stderr,
                "wsgi.version": (1, 0),
                "wsgi.multithread": True,
                "wsgi.multiprocess": self.worker.cfg.workers > 1,
                "wsgi.run_once": False,
                "wsgi.input_terminated": True,
                "SCRIPT_NAME": "",
            }
        )
        return environ

    def _check_size(self, n: int) -> int:
        """Refuse a body above SAGEMAKER_MAX_PAYLOAD_IN_MB before reading it (nginx refuses it first when in front)."""
        if n > self.worker.max_body_bytes:
            raise HTTPError("413 Payload Too Large", f"request body of {n} bytes exceeds SAGEMAKER_MAX_PAYLOAD_IN_MB")
        return n

    def _read_exactly(self, n: int) -> bytes:
        if len(self.buffer) >= n:
            body = bytes(self.buffer[:n])
            del self.buffer[:n]
            return body
        parts, have = [bytes(self.buffer)], len(self.buffer)
        self.buffer.clear()
        while have < n:
            data = self.sock.recv(max(RECV_BYTES, n - have))
            if not data:
                raise HTTPError("400 Bad Request", f"request body ended after {have} of {n} bytes")
            parts.append(data)
            have += len(data)
        body = b"".join(parts)
        self.buffer += body[n:]
        return body[:n]

    def _read_line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > CHUNK_LINE_BYTES or not self._fill():
                raise HTTPError(
                    "400 Bad Request", "malformed chunked request body (a chunk line is unended or too long)"
                )
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def _read_chunked(self) -> bytes:
        parts, total = [], 0
        while True:
            size_field = self._read_line().split(b";", 1)[0].rstrip(b" \t")
            if not HEX_SIZE.fullmatch(size_field):  # int(x, 16) would also take 0x1f, 1_f, +1f and spaces
                raise HTTPError("400 Bad Request", f"bad chunk size {size_field[:20]!r}")
            size = int(size_field, 16)
            if size == 0:
                while self._read_line():  # trailer fields, then the empty line
                    pass
                return b"".join(parts)
            total = self._check_size(total + size)
            parts.append(self._read_exactly(size))
            if self._read_line():
                raise HTTPError("400 Bad Request", "chunk data is longer than its size")

    def respond(self, environ: dict[str, Any]) -> bool:
        """Run the app on one request and send its reply; whether the connection stays open."""
        worker = self.worker
        worker.nr += 1
        if worker.nr >= worker.max_requests and worker.alive:
            worker.log.info("Autorestarting worker after current request.")
            worker.alive = False
        reply: list[Any] = []
        body: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
            if exc_info is not None and reply:
                raise exc_info[1].with_traceback(exc_info[2])
            reply[:] = [status, headers]
            return body.append

        try:
            result: Iterable[bytes] = worker.wsgi(environ, start_response)
            if reply and _streams(reply[1], result, environ):
                return self.stream(environ, reply[0], reply[1], result)
            try:
                body.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except (gevent.GreenletExit, SystemExit):
            return False
        except Exception:
            worker.log.exception("Error handling request %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"])
            error = json.dumps({"error": "internal server error in the gunicorn worker"}).encode()
            self.send("500 Internal Server Error", [("Content-Type", "application/json")], error, False)
            return False
        status, headers = reply
        keep_alive = self._keep_alive(environ, headers)
        return self.send(status, headers, b"".join(body), keep_alive, head=environ["REQUEST_METHOD"] == "HEAD")

    def _keep_alive(self, environ: dict[str, Any], headers: list[tuple[str, str]]) -> bool:
        """Whether the connection may take another request after this reply."""
        worker = self.worker
        if not (worker.alive and worker.cfg.keepalive > 0 and _wants_keep_alive(environ)):
            return False
        if any(name.lower() == "connection" and value.lower() == "close" for name, value in headers):
            return False
        unread = environ["wsgi.input"]
        return not (isinstance(unread, SocketBody) and unread.left)  # unread body bytes: the connection is spent

    def stream(self, environ: dict[str, Any], status: str, headers: list[tuple[str, str]], result: Any) -> bool:
        """Send a reply without Content-Length chunk by chunk as the app yields them. A failure part-way cuts
        the body short (no last chunk) and closes the connection; so does a client that went away."""
        worker = self.worker
        keep_alive = self._keep_alive(environ, headers)
        try:
            self.sock.sendall(self.head(status, [*headers, ("Transfer-Encoding", "chunked")], keep_alive))
            for chunk in result:
                if chunk:
                    self.sock.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            self.sock.sendall(b"0\r\n\r\n")
        except OSError:
            return False
        except Exception:
            worker.log.exception("stream cut short: %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"])
            return False
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return keep_alive

    def send(
        self, status: str, headers: list[tuple[str, str]], body: bytes, keep_alive: bool, head: bool = False
    ) -> bool:
        no_body = head or status.startswith(NO_BODY_STATUSES)
        if not status.startswith(NO_BODY_STATUSES) and not any(n.lower() == "content-length" for n, _ in headers):
            headers = [*headers, ("Content-Length", str(len(body)))]
        head_bytes = self.head(status, headers, keep_alive)
        self.sock.sendall(head_bytes if no_body else head_bytes + body)
        return keep_alive

    @staticmethod
    def head(status: str, headers: list[tuple[str, str]], keep_alive: bool) -> bytes:
        lines = [f"HTTP/1.1 {status}", *(f"{n}: {v}" for n, v in headers if n.lower() != "connection")]
        lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class SocketBody(io.RawIOBase):
    """A request body of `n` bytes, read from the connection as the app reads it (an async input of up to 1 GB
    never sits whole in the worker)."""

    def __init__(self, conn: Connection, n: int) -> None:
        self.conn, self.left = conn, n

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all that is left with -1), short only at the body's end, as a file reads."""
        want = self.left if size < 0 else min(size, self.left)
        out = bytearray(want)
        view, got = memoryview(out), 0
        while got < want:
            got += self.readinto(view[got:])
        return bytes(out)

    def readinto(self, into: Any) -> int:
        if self.left == 0:
            return 0
        if not self.conn.buffer and not self.conn._fill():
            raise HTTPError("400 Bad Request", f"request body ended with {self.left} bytes to come")
        take = min(len(into), self.left, len(self.conn.buffer))
        into[:take] = self.conn.buffer[:take]
        del self.conn.buffer[:take]
        self.left -= take
        return take


def _streams(headers: list[tuple[str, str]], result: Iterable[bytes], environ: dict[str, Any]) -> bool:
    """Whether to send the reply chunked: the app gave no Content-Length and an iterator (not a list), and the
    client speaks HTTP/1.1 (an HTTP/1.0 reply is buffered, as before)."""
    if (
        isinstance(result, list | tuple)
        or environ["SERVER_PROTOCOL"] != "HTTP/1.1"
        or environ["REQUEST_METHOD"] == "HEAD"
    ):
        return False
    return not any(name.lower() == "content-length" for name, _ in headers)


def _content_length(value: str | None) -> int:
    if not value:
        return 0
    if not value.isdigit():
        raise HTTPError("400 Bad Request", f"bad Content-Length {value[:20]!r}")
    return int(value)


def _wants_keep_alive(environ: dict[str, Any]) -> bool:
    connection = environ.get("HTTP_CONNECTION", "").lower()
    if environ["SERVER_PROTOCOL"] == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


class GeventH1cWorker(GeventWorker):
    """`-k server.h1c_worker.GeventH1cWorker`; SAGEMAKER_GUNICORN_WORKER_CLASS=gevent_h1c selects it."""

    def run(self) -> None:
        from server.settings import Settings

        # The gateway app carries the supervisor's settings; any other WSGI app runs outside the supervisor,
        # where the environment is the only source.
        settings = getattr(self.wsgi, "settings", None)
        self.max_body_bytes = (settings if isinstance(settings, Settings) else Settings.from_env()).max_payload_bytes
        if self.cfg.accesslog:
            self.log.warning("the gevent_h1c worker writes no access log; --access-logfile is ignored")
        super().run()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        client.setblocking(1)
        client.settimeout(self.cfg.keepalive or None)  # how long an idle keep-alive connection is held
        name = listener.getsockname()
        server = (name[0], str(name[1])) if isinstance(name, tuple) else (str(name), "")
        peer = (addr[0], str(addr[1])) if isinstance(addr, tuple) else ("", "")
        try:
            Connection(self, client, server, peer).serve()
        except OSError:
            pass  # the peer went away or sat idle past keep-alive; nothing to answer
        finally:
            client.close()
