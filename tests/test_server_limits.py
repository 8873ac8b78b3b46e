"""service.server against real sockets: a uvicorn server with GuardedH11Protocol in a thread, a tiny ASGI app,
raw clients; plus the bound, fd-limit and throttled-log rules on their own."""

from __future__ import annotations

import asyncio
import logging
import pickle
import resource
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

from service import server
from service.logs import uvicorn_log_config
from service.server import ConnectionLimits, GuardedH11Protocol, ServerConfig, Throttled
from service.settings import Settings
from tests.slow_clients import free_port

REQUEST = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body; /slow answers after a second (a request in flight); everything answers 200 ok."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def serving(limits: ConnectionLimits, keep_alive: int = 5) -> Iterator[tuple[int, uvicorn.Server]]:
    """A server on a socket bound like `--workers` binds it (proto 0), stopped on exit."""
    config = ServerConfig(app, limits=limits, http=GuardedH11Protocol, host="127.0.0.1", port=0,
                          timeout_keep_alive=keep_alive, lifespan="off", log_config=None, log_level="warning")
    sock = config.bind_socket()
    uv_server = uvicorn.Server(config)
    thread = threading.Thread(target=uv_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv_server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1], uv_server
    finally:
        uv_server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def connect(port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    return client


def closed_after(client: socket.socket, limit: float = 5.0) -> tuple[bytes, float]:
    """Everything the server sent until it closed the connection, and how long that took."""
    started, received = time.monotonic(), b""
    client.settimeout(limit)
    try:
        while chunk := client.recv(4096):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received, time.monotonic() - started


def test_close_client_when_head_incomplete_after_header_timeout() -> None:
    with serving(ConnectionLimits(header_timeout=0.5)) as (port, _):
        slow = connect(port)
        slow.sendall(b"GET /ok HTTP/1.1\r\nHost")
        received, seconds = closed_after(slow)
        assert received == b""
        assert 0.3 < seconds < 2.0


def test_close_idle_client_after_header_timeout() -> None:
    """A client that connects and sends nothing is closed too (the timer starts at accept)."""
    with serving(ConnectionLimits(header_timeout=0.5)) as (port, _):
        received, seconds = closed_after(connect(port))
        assert received == b""
        assert seconds < 2.0


def test_answer_prompt_request_despite_short_header_timeout_then_keep_alive_closes() -> None:
    with serving(ConnectionLimits(header_timeout=0.5), keep_alive=1) as (port, _):
        client = connect(port)
        time.sleep(0.2)
        client.sendall(REQUEST)
        received, seconds = closed_after(client)
        assert received.startswith(b"HTTP/1.1 200")
        assert received.endswith(b"ok")
        assert 0.8 < seconds < 3.0  # closed by the 1 s keep-alive timeout, not earlier


def test_answer_408_when_body_stalls_past_body_timeout() -> None:
    with serving(ConnectionLimits(header_timeout=5, body_timeout=0.5)) as (port, _):
        client = connect(port)
        client.sendall(b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        received, seconds = closed_after(client)
        assert received.startswith(b"HTTP/1.1 408")
        assert 0.3 < seconds < 2.0


def test_keep_body_open_while_chunks_keep_arriving() -> None:
    """The body clock restarts on every chunk: a slow but moving body is read to the end."""
    with serving(ConnectionLimits(header_timeout=5, body_timeout=0.6)) as (port, _):
        client = connect(port)
        client.sendall(b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\n")
        for byte in b"abcd":
            time.sleep(0.3)
            client.sendall(bytes([byte]))
        received, _ = closed_after(client)
        assert received.startswith(b"HTTP/1.1 200")


def test_evict_oldest_waiting_connection_when_bound_reached() -> None:
    with serving(ConnectionLimits(max_connections=2, header_timeout=30)) as (port, _):
        oldest, second = connect(port), connect(port)
        time.sleep(0.2)
        newcomer = connect(port)
        newcomer.sendall(REQUEST.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        assert closed_after(newcomer)[0].startswith(b"HTTP/1.1 200")
        assert closed_after(oldest, 2)[1] < 1.0  # evicted
        second.settimeout(0.3)
        with pytest.raises(TimeoutError):
            second.recv(1)  # still open


def test_refuse_with_503_when_every_connection_is_busy() -> None:
    with serving(ConnectionLimits(max_connections=2, header_timeout=30)) as (port, _):
        busy = [connect(port), connect(port)]
        for client in busy:
            client.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        received, seconds = closed_after(connect(port))
        assert received.startswith(b"HTTP/1.1 503")
        assert seconds < 1.0
        for client in busy:
            assert client.recv(4096).startswith(b"HTTP/1.1 200")


def test_set_tcp_nodelay_on_accepted_sockets_of_a_shared_listener() -> None:
    """Issue 14: `--workers` listens on a socket bound with proto 0, which asyncio leaves without TCP_NODELAY."""
    with serving(ConnectionLimits()) as (port, uv_server):
        client = connect(port)
        time.sleep(0.2)
        (protocol,) = uv_server.server_state.connections
        assert isinstance(protocol, GuardedH11Protocol)
        sock = protocol.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        client.close()


@pytest.mark.parametrize(("configured", "budget", "expected"), [
    (1000, 1 << 20, 1000),  # a large budget: the setting
    (1000, 1024, 768),  # a quarter of the budget stays with the rest of the process
    (1000, 200, 136),  # at least FD_RESERVE_MIN stays
    (10, 1024, 10),
    (1000, 50, 1),  # never zero
])
def test_bound_connections_by_setting_and_fd_budget(configured: int, budget: int, expected: int) -> None:
    assert server.connection_bound(configured, budget) == expected


@pytest.mark.parametrize(("budget", "expected"), [(512, 32), (1024, 64), (200, 16), (1 << 20, 2048), (64, 16)])
def test_accept_in_batches_that_fit_the_reserve(budget: int, expected: int) -> None:
    assert server.accept_backlog(budget) == expected


def test_raise_soft_fd_limit_to_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        assert server.raise_fd_limit(ceiling=4096) == min(hard, 4096)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(hard, 4096)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_log_failed_accepts_once_per_interval_with_count(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    monkeypatch.setattr(server, "accept_failures", Throttled(logging.WARNING, "accept failed", clock=lambda: now[0]))
    loop = asyncio.new_event_loop()
    context = {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files")}
    with caplog.at_level(logging.WARNING, logger="textback.server"):
        for second in range(130):  # asyncio retries a failed accept every second
            now[0] = float(second)
            server.loop_exception_handler(loop, context)
    loop.close()
    counts = [record.fields["count"] for record in caplog.records]  # type: ignore[attr-defined]
    assert counts == [1, 60, 60]


def test_pass_other_loop_errors_to_asyncio(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        server.loop_exception_handler(loop, {"message": "something else broke"})
    loop.close()
    assert [record.getMessage() for record in caplog.records] == ["something else broke"]


def test_build_config_from_settings() -> None:
    settings = Settings(max_connections=500, header_timeout_seconds=4, body_timeout_seconds=6, keep_alive_seconds=2)
    config = server.server_config("service.asgi:app", host="127.0.0.1", port=8000, workers=2, settings=settings,
                                  fd_budget=1024, log_config={"version": 1, "disable_existing_loggers": False})
    assert config.limits == ConnectionLimits(max_connections=500, header_timeout=4, body_timeout=6)
    assert config.http is GuardedH11Protocol
    assert (config.timeout_keep_alive, config.workers, config.log_level, config.backlog) == (2, 2, None, 64)
    default = server.server_config("service.asgi:app", host="127.0.0.1", port=8000, workers=1, settings=settings,
                                   fd_budget=1024)
    assert default.log_config == uvicorn_log_config(settings.log_level, access_log=settings.access_log)


def test_carry_limits_into_spawned_worker_processes() -> None:
    """`--workers N` pickles the config into each spawned process: the limits and the protocol travel with it."""
    limits = ConnectionLimits(max_connections=7, header_timeout=1.5, body_timeout=2.5)
    config = ServerConfig("service.asgi:app", limits=limits, http=GuardedH11Protocol, workers=2, log_config=None)
    copy = pickle.loads(pickle.dumps(config))  # noqa: S301 - our own object
    assert (copy.limits, copy.http) == (limits, GuardedH11Protocol)
    loop = copy.get_loop_factory()()
    assert loop.get_exception_handler() is server.loop_exception_handler
    loop.close()


def test_run_exits_3_when_a_worker_process_fails_to_start() -> None:
    """`--workers N`: uvicorn's supervisor stops when a worker exits 3 (the app refused its configuration), and
    the runner exits 3 too, so a process manager sees the failure instead of a clean stop."""
    with pytest.raises(SystemExit) as stopped:
        server.run("tests.failing_app:app", host="127.0.0.1", port=free_port(), workers=2, settings=Settings())
    assert stopped.value.code == 3
