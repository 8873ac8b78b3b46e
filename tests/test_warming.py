"""While `textback serve` warms up, its bound port answers every request at once with 503 (/health: starting);
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
    ("GET", "/health", {"status": "starting"}),
    ("HEAD", "/health", None),
    ("GET", "/ready", {"status": "not ready", "checks": {"warm_up": "running"}}),
    ("POST", "/twilio/voice", {"status": "not ready", "checks": {"warm_up": "running"}}),
    ("GET", "/api/leads", {"status": "not ready", "checks": {"warm_up": "running"}}),
])
def test_answer_probe_while_warming_up(bound, method: str, path: str, status: object) -> None:
    """Every request is answered at once with 503: /health says starting, so a load balancer pointed at it
    sends no traffic before the app serves."""
    with warming.answering(bound):
        response = httpx.request(method, url(bound, path), timeout=10)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    if status is None:
        assert response.content == b""
    else:
        assert response.json() == status


def test_hand_socket_over_with_waiting_connections_after_warm_up(bound) -> None:
    with warming.answering(bound):
        assert httpx.get(url(bound, "/health"), timeout=10).status_code == 503
    # Warm: the responder accepts no more; a client connecting now waits in the backlog for the app's accept.
    client = socket.create_connection(bound.getsockname(), timeout=10)
    with client:
        client.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        conn, _ = bound.accept()  # the app's turn (uvicorn accepts on this same socket)
        with conn:
            assert conn.recv(1024).startswith(b"GET /health")


def test_refuse_start_when_reply_rules_do_not_load(settings, tmp_path) -> None:
    """warm_up loads the reply rules before the app serves: a rule yielding to a rule that does not exist stops
    start-up with the file's name, rather than failing every reply after /health said 200."""
    import shutil

    from service.context import build_context
    from service.errors import PolicyError
    from tests.helpers import POLICIES

    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    rule = copy / "inbound" / "loan-equity-out.yaml"
    rule.write_text(rule.read_text().replace("yields_to: [loan-refinance, loan-home-equity]",
                                             "yields_to: [no-such-rule]"))
    context = build_context(settings.model_copy(update={"policies_dir": copy}))
    try:
        with pytest.raises(PolicyError, match="no-such-rule"):
            context.warm_up()
    finally:
        context.close()
