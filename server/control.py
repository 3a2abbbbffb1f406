"""The supervisor's control socket: how gateway workers ask it to load or unload a model, and wait for a change.

Plain HTTP/1.1 with JSON over a unix socket in the run directory. Only the supervisor starts and
stops runtime processes; every gunicorn worker then sees the result through the routing table.
`GET /routes?after=N&timeout=T` answers when the table's version passes N (a restarted runtime is
READY, say), so a worker that has no instance to call waits for that event instead of polling.
`GET /variants` and `POST /variants/weights` are `sagestack variants`: the endpoints' variants, and new weights.
`POST /models/{name}/versions` serves a model's version folders as they are now (a trained version added).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from server.jsonhttp import JsonHandler

Reply = tuple[int, dict[str, Any]]


class ControlServer:
    def __init__(
        self,
        path: Path,
        load: Callable[[str, str], Reply],
        unload: Callable[[str], Reply],
        wait_routes: Callable[[int, float], int],
        variants: Callable[[dict[str, Any] | None], Reply] | None = None,
        refresh_versions: Callable[[str], Reply] | None = None,
    ) -> None:
        """`variants(None)` lists the endpoints' variants; `variants({"endpoint", "weights"})` sets weights.
        `refresh_versions(name)` serves the version folders a model has now (`POST /models/{name}/versions`)."""
        path.unlink(missing_ok=True)

        class Handler(JsonHandler):
            def address_string(self) -> str:
                return "control"

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/variants" and variants is not None:
                    return self.send_json(*variants(None))
                if url.path != "/routes":
                    return self.send_json(404, {"error": f"unknown control path {self.path}"})
                query = parse_qs(url.query)
                try:
                    after = int(query.get("after", ["0"])[0])
                    timeout = min(float(query.get("timeout", ["0"])[0]), 600.0)
                except ValueError:
                    return self.send_json(400, {"error": "after and timeout must be numbers"})
                self.send_json(200, {"version": wait_routes(after, max(timeout, 0.0))})

            def do_POST(self) -> None:
                body = json.loads(self.read_body() or b"{}")
                if self.path == "/models":
                    return self.send_json(*load(str(body.get("model_name")), str(body.get("url"))))
                if self.path == "/variants/weights" and variants is not None:
                    return self.send_json(*variants(body))
                match = re.fullmatch(r"/models/([^/]+)/versions", self.path)
                if match and refresh_versions is not None:
                    return self.send_json(*refresh_versions(match[1]))
                self.send_json(404, {"error": f"unknown control path {self.path}"})

            def do_DELETE(self) -> None:
                match = re.fullmatch(r"/models/([^/]+)", self.path)
                if match:
                    return self.send_json(*unload(match[1]))
                self.send_json(404, {"error": f"unknown control path {self.path}"})

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(str(path), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="control", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket (the control socket, gunicorn's socket)."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def request(path: Path, method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 600) -> Reply:
    conn = UnixConnection(path, timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, url, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def wait_routes(path: Path, after: int, seconds: float) -> int | None:
    """The routing table's version once it passes `after`, or after `seconds`; None if the supervisor is gone."""
    try:
        status, body = request(path, "GET", f"/routes?after={after}&timeout={seconds:.3f}", timeout=seconds + 5)
    except OSError:
        return None
    return body.get("version") if status == 200 else None
