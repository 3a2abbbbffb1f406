"""The supervisor's control socket: how gateway workers ask it to load or unload a model.

Plain HTTP/1.1 with JSON over a unix socket in the run directory. Only the supervisor starts and
stops runtime processes; every gunicorn worker then sees the result through the routing table.
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

from server.jsonhttp import JsonHandler

Reply = tuple[int, dict[str, Any]]


class ControlServer:
    def __init__(self, path: Path, load: Callable[[str, str], Reply], unload: Callable[[str], Reply]) -> None:
        path.unlink(missing_ok=True)

        class Handler(JsonHandler):
            def address_string(self) -> str:
                return "control"

            def do_POST(self) -> None:
                body = json.loads(self.read_body() or b"{}")
                if self.path == "/models":
                    return self.send_json(*load(str(body.get("model_name")), str(body.get("url"))))
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


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def request(path: Path, method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 600) -> Reply:
    conn = _UnixConnection(path, timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, url, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()
