"""The gevent_h1c gunicorn worker's HTTP/1.1 loop, on raw sockets (nginx normally smooths what clients send)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.stack import free_port

ECHO_APP = Path(__file__).resolve().parent / "fixtures" / "wsgi_echo"


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "--chdir", str(ECHO_APP), "--bind", f"127.0.0.1:{port}",
            "--worker-class", "server.h1c_worker.GeventH1cWorker", "--workers", "1", "--keep-alive", "5",
            "--graceful-timeout", "5", "--log-level", "warning", "echo_app:app"]  # fmt: skip
    env = {**os.environ, "SAGEMAKER_MAX_PAYLOAD_IN_MB": "3"}
    proc = subprocess.Popen(argv, cwd=Path(__file__).resolve().parent.parent, env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0


def exchange(port: int, raw: bytes, replies: int = 1) -> list[tuple[str, dict[str, str], bytes]]:
    """Send raw bytes, read `replies` responses (by Content-Length), then whatever follows until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        data, out = b"", []
        while len(out) < replies:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                assert chunk, f"connection closed after {len(out)} replies: {data!r}"
                data += chunk
            head, data = data.split(b"\r\n\r\n", 1)
            status, *lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
            n = int(headers.get("content-length", 0))
            while len(data) < n:
                data += sock.recv(65536)
            if status.startswith("HTTP/1.1 100"):
                continue
            out.append((status, headers, data[:n]))
            data = data[n:]
        return out


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def test_keep_alive_serves_pipelined_requests_in_order(port):
    raw = post("/a?x=1", b'{"instances": [1]}') + post("/b", b"") + b"GET /c HTTP/1.1\r\nHost: t\r\n\r\n"
    replies = exchange(port, raw, 3)
    assert [json.loads(body)["path"] for _, _, body in replies] == ["/a", "/b", "/c"]
    status, headers, body = replies[0]
    assert status == "HTTP/1.1 200 OK" and headers["connection"] == "keep-alive"
    assert json.loads(body) == {"method": "POST", "path": "/a", "query": "x=1", "content_length": "18",
                                "body": '{"instances": [1]}', "custom": None}  # fmt: skip


def test_chunked_body_and_expect_continue(port):
    raw = (b"POST /invocations HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
           b"X-Amzn-SageMaker-Custom-Attributes: tfs-model-name=m\r\n\r\n"
           b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n")  # fmt: skip
    ((status, _, body),) = exchange(port, raw)
    reply = json.loads(body)
    assert status.startswith("HTTP/1.1 200") and reply["body"] == "hello world" and reply["content_length"] == "11"
    assert reply["custom"] == "tfs-model-name=m"


def test_percent_encoded_path_is_decoded(port):
    ((_, _, body),) = exchange(port, b"GET /endpoints/my%20ep/invocations HTTP/1.1\r\nHost: t\r\n\r\n")
    assert json.loads(body)["path"] == "/endpoints/my ep/invocations"


def test_large_body_arrives_whole(port):
    payload = bytes(range(256)) * 8192  # 2 MiB, many recv calls
    ((_, _, body),) = exchange(port, post("/big", payload))
    assert json.loads(body)["body"].encode("latin-1") == payload


@pytest.mark.parametrize(
    ("raw", "status", "names"),
    [
        (b"GARBAGE\r\n\r\n", "400", "malformed HTTP request"),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n", "400", "Content-Length"),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400", "chunk size"),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0x4\r\nabcd\r\n0\r\n\r\n",
            "400",
            "chunk size",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n+4\r\nabcd\r\n0\r\n\r\n",
            "400",
            "chunk size",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0_4\r\nabcd\r\n0\r\n\r\n",
            "400",
            "chunk size",
        ),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + b"4;" + b"x" * 5000, "400", "too long"),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 70000 + b"\r\n\r\n", "431", "too large"),
        (b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n", "500", "internal server error"),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4000000\r\n\r\n", "413", "SAGEMAKER_MAX_PAYLOAD_IN_MB"),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3d0900\r\n", "413", "exceeds"),
    ],
)
def test_bad_requests_get_a_json_error_and_the_connection_closes(port, raw, status, names):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):  # the worker closes after the error, so this ends
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(f"HTTP/1.1 {status}".encode()) and b"Connection: close" in head
    assert names in json.loads(body)["error"]


def test_http10_and_connection_close_end_the_connection(port):
    for raw in (b"GET /x HTTP/1.0\r\n\r\n", b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(raw)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert b"Connection: close" in data and json.loads(data.split(b"\r\n\r\n", 1)[1])["path"] == "/x"


def test_a_body_cut_short_does_not_hurt_the_worker(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly-this")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400") and b"after 9 of 100 bytes" in data
    ((status, _, _),) = exchange(port, b"GET /still-up HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status.startswith("HTTP/1.1 200")
