"""Our gunicorn hooks against gunicorn's own request parser and response writer."""

from __future__ import annotations

import socket

import pytest
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser
from gunicorn.http.wsgi import create

from server.gunicorn_conf import one_write_response_class


class SendLog:
    """A real socket end whose sends are counted: the number of writes is what the test is about."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.sends = sock, []

    def sendall(self, data: bytes) -> None:
        self.sends.append(bytes(data))
        self.sock.sendall(data)

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


def _respond(headers: list[tuple[str, str]], chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    client, server = socket.socketpair()
    with client, server:
        client.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        cfg = Config()
        req = next(iter(RequestParser(cfg, server, ("unix", 0))))
        sock = SendLog(server)
        resp, _ = create(req, sock, ("unix", 0), "unix", cfg, response_class=one_write_response_class())
        resp.start_response("200 OK", headers)
        for chunk in chunks:
            resp.write(chunk)
        resp.close()
        server.shutdown(socket.SHUT_WR)
        received = b"".join(iter(lambda: client.recv(65536), b""))
    return sock.sends, received


def test_the_header_goes_out_with_the_body_in_one_send():
    sends, received = _respond([("Content-Type", "application/json"), ("Content-Length", "11")], [b'{"ok":true}'])
    assert len(sends) == 1
    head, body = received.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 11" in head and body == b'{"ok":true}'


@pytest.mark.parametrize("chunks", [[], [b""]], ids=["no-body", "empty-body"])
def test_a_response_without_body_bytes_still_sends_its_header(chunks):
    sends, received = _respond([("Content-Length", "0")], chunks)
    assert len(sends) == 1 and received.startswith(b"HTTP/1.1 200 OK\r\n") and received.endswith(b"\r\n\r\n")


def test_a_streamed_response_keeps_its_chunk_framing():
    _, received = _respond([("Content-Type", "text/plain")], [b"one", b"two"])
    head, body = received.split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"
