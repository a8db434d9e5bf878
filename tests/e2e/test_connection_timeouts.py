"""Slow and idle clients are timed out (runtime.connections), on real sockets against a real server process."""

from __future__ import annotations

import json
import select
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

LIMITS = "runtime:\n  connections: {header_timeout: 1s, body_timeout: 2s, keep_alive_timeout: 3s}\n"
HANG = 30.0
"""Far beyond every limit above: a socket still open after it means the server holds slow clients forever."""
PARSERS = [pytest.param((), id="httptools"), pytest.param(("httptools",), id="h11")]


@pytest.fixture
def server(request: pytest.FixtureRequest, start_server: Any, tmp_path: Path, test_home: Path) -> Any:
    """A server with short limits; `blocked` hides httptools so uvicorn's h11 protocol serves."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "model-mappings.yaml").write_text(LIMITS)
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(test_home / "cache", target_is_directory=True)
    return start_server(home, "--config", str(config), block_modules=request.param)


def connect(server: Any) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=HANG)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; a socket timeout (a hang) fails the test."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


@pytest.mark.parametrize("server", PARSERS, indirect=True)
def test_a_connection_that_sends_half_a_request_line_or_nothing_is_closed(server: Any) -> None:
    half, silent = connect(server), connect(server)
    half.sendall(b"GET /heal")
    assert read_until_closed(half) == b""
    assert read_until_closed(silent) == b""
    again = connect(server)  # a later request's head is bounded too, not only a connection's first
    again.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\nGET /hea")
    answer = read_until_closed(again)
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.count(b"HTTP/1.1") == 1


@pytest.mark.parametrize("server", PARSERS, indirect=True)
def test_a_body_sent_byte_by_byte_too_slowly_gets_408_and_the_connection_closes(server: Any) -> None:
    body = json.dumps({"model": "all-minilm-l6-v2", "input": "x" * 40}).encode()
    sock = connect(server)
    head = f"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
    sock.sendall(head.encode() + b"\r\n\r\n")
    for byte in body:  # one byte each half second: the 2s body_timeout passes long before the end
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        if select.select([sock], [], [], 0.5)[0]:  # the server answered
            break
    answer = read_until_closed(sock)
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout", answer
    error = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
    assert error["type"] == "invalid_request_error"
    assert "body_timeout" in error["message"]


@pytest.mark.parametrize("server", PARSERS, indirect=True)
def test_normal_requests_and_kept_alive_connections_are_unaffected(server: Any) -> None:
    with httpx.Client(base_url=server.url, timeout=300) as client:
        first = client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": ["hello"]})
        assert first.status_code == 200, first.text
        time.sleep(1.5)  # idle between requests past header_timeout but within keep_alive_timeout
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["role"] == "assistant"
    sock = connect(server)
    body = json.dumps({"model": "all-minilm-l6-v2", "input": "hello"}).encode()
    sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n")
    time.sleep(0.3)  # a head and a body in pieces, each within its limit
    sock.sendall(f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body[:10])
    time.sleep(0.3)
    sock.sendall(body[10:])
    assert read_until_closed(sock).startswith(b"HTTP/1.1 200")


def test_past_max_connections_a_request_gets_503_at_once_and_then_is_served(
    start_server: Any, tmp_path: Path, test_home: Path
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "model-mappings.yaml").write_text("runtime:\n  connections: {header_timeout: 60s, max_connections: 3}\n")
    server = start_server(test_home, "--config", str(config))
    idle = [connect(server) for _ in range(3)]
    refused = httpx.get(f"{server.url}/health", timeout=HANG)
    assert refused.status_code == 503
    assert refused.headers["connection"] == "close"
    for sock in idle:
        sock.close()
    time.sleep(0.5)  # the server sees the closes
    assert httpx.get(f"{server.url}/health", timeout=HANG).status_code == 200
