"""While `textback serve` warms up, its bound port answers /health (up) and refuses the rest with 503 (not ready);
once warm, the same socket, with the connections waiting on it, goes to the app (service.warming)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from service import warming


@pytest.fixture
def bound() -> Iterator[socket.socket]:
    sock = warming.bind("127.0.0.1", 0, 16)
    yield sock
    sock.close()


def url(sock: socket.socket, path: str) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}{path}"


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/health", 200),
    ("HEAD", "/health", 200),
    ("GET", "/ready", 503),
    ("POST", "/twilio/voice", 503),
    ("GET", "/api/leads", 503),
])
def test_answer_probe_while_warming_up(bound, method: str, path: str, status: int) -> None:
    with warming.answering(bound):
        response = httpx.request(method, url(bound, path), timeout=10)
    assert response.status_code == status
    if status == 503:
        assert response.headers["retry-after"] == "1"
        assert response.json() == {"status": "not ready", "checks": {"warm_up": "running"}}


def test_hand_socket_over_with_waiting_connections_after_warm_up(bound) -> None:
    with warming.answering(bound):
        assert httpx.get(url(bound, "/health"), timeout=10).status_code == 200
    # Warm: the responder accepts no more; a client connecting now waits in the backlog for the app's accept.
    client = socket.create_connection(bound.getsockname(), timeout=10)
    with client:
        client.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        conn, _ = bound.accept()  # the app's turn (uvicorn accepts on this same socket)
        with conn:
            assert conn.recv(1024).startswith(b"GET /health")
