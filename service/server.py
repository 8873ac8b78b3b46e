"""The HTTP server: uvicorn (h11), configured in one place, held against slow and idle clients.

uvicorn on its own holds a connection for as long as the client keeps it open before finishing its request: one
that sends nothing, or a header byte a second, is kept forever, each holding a file descriptor; with enough of
them accept() fails with EMFILE and asyncio logs a traceback for every failed accept. Here:

- a bound on open connections per process (`TEXTBACK_MAX_CONNECTIONS`, and never more than the file-descriptor
  budget allows): at it, the oldest connection with no request in flight (a slow or idle client) is closed to
  make room; if every connection is busy with a request, the new one is answered 503 and closed at once;
- a header read timeout (`TEXTBACK_HEADER_TIMEOUT_SECONDS`): a client that has not sent its whole request line
  and headers that long after connecting (or after the first byte of its next request) is closed;
- a body read timeout (`TEXTBACK_BODY_TIMEOUT_SECONDS`): a body that stalls that long gets 408 and is closed;
- uvicorn's keep-alive idle timeout (`TEXTBACK_KEEP_ALIVE_SECONDS`) between requests;
- at start-up the soft open-files limit is raised to the hard one; an EMFILE that still happens is logged once
  a minute with a count, not once per accept.

`run()` is the only caller of uvicorn: `textback serve` with one process or with `--workers N`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import h11
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess

from service.logs import log, uvicorn_log_config

if TYPE_CHECKING:
    from service.settings import Settings

logger = logging.getLogger("textback.server")

FD_RESERVE_MIN = 64  # descriptors kept for everything but client connections (database, log, spool, HTTP clients)
MAX_NOFILE = 1 << 20  # never ask for more than this, even when the hard limit is unlimited
LOG_INTERVAL_SECONDS = 60.0
BUSY = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nretry-after: 1\r\n\r\n"
TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


@dataclass(frozen=True)
class ConnectionLimits:
    """What one server process allows a client connection (see the module docstring)."""

    max_connections: int = 1000
    header_timeout: float = 10.0
    body_timeout: float = 15.0


def raise_fd_limit(ceiling: int = MAX_NOFILE) -> int:
    """Raise this process's soft RLIMIT_NOFILE toward the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # a container may forbid it: keep what we have, the bound below follows it
    return ceiling if soft == resource.RLIM_INFINITY else soft


def fd_reserve(fd_budget: int) -> int:
    """Descriptors never given to client connections: a quarter of the budget, at least FD_RESERVE_MIN."""
    return max(FD_RESERVE_MIN, fd_budget // 4)


def connection_bound(configured: int, fd_budget: int) -> int:
    """The connections one process keeps open: the setting, but never into the reserve, so accept() never runs
    out of descriptors."""
    return max(1, min(configured, fd_budget - fd_reserve(fd_budget)))


def accept_backlog(fd_budget: int) -> int:
    """The listen backlog, which is also how many connections asyncio accepts in one go before any of them
    reaches the bound check in connection_made (and a few such batches are in flight at once): a quarter of the
    reserve, so a burst cannot overrun the budget; at most 2048, uvicorn's default."""
    return max(8, min(2048, fd_reserve(fd_budget) // 4))


class Throttled:
    """A log line for a repeated event, at most once per interval, with how often it happened since the last."""

    def __init__(self, level: int, event: str, interval: float = LOG_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.level, self.event, self.interval, self.clock = level, event, interval, clock
        self.count = 0
        self.last: float | None = None

    def hit(self, **fields: object) -> bool:
        """Count one occurrence; log it (and the count) unless a line went out less than an interval ago."""
        self.count += 1
        now = self.clock()
        if self.last is not None and now - self.last < self.interval:
            return False
        log(logger, self.level, self.event, count=self.count, **fields)
        self.count, self.last = 0, now
        return True


over_limit = Throttled(logging.WARNING, "connection limit reached, every connection busy: new ones answered 503")
evictions = Throttled(logging.WARNING, "connection limit reached: closed the oldest connections waiting for a "
                                       "request head or idle between requests")
header_timeouts = Throttled(logging.INFO, "closed connections that did not send a request head in time")
body_timeouts = Throttled(logging.INFO, "closed connections whose request body stalled (408)")
accept_failures = Throttled(logging.WARNING, "accept() failed: out of file descriptors (raise the open-files "
                                             "limit or lower TEXTBACK_MAX_CONNECTIONS)")


def loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's handler, except that a failed accept (EMFILE and kin) is counted and logged once per interval:
    asyncio retries it every second, and logs a full traceback each time."""
    if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
        accept_failures.hit(error=str(context.get("exception")))
        return
    loop.default_exception_handler(context)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the connection bound, the header and body read timeouts and TCP_NODELAY.

    One read timer per connection: armed for the request head when the connection is made (and when the first
    bytes of a next request arrive), re-armed for the body on every chunk while the body is arriving, disarmed
    once the request is complete (the app's own time is not limited here). h11's `their_state` says which."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = config.limits if isinstance(config, ServerConfig) else ConnectionLimits()
        self.refused = False
        self.connected_at = 0.0
        self.read_timer: asyncio.TimerHandle | None = None
        self.read_timer_kind: Literal["header", "body"] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections and not self.evict_one():
            # Refused before anything is read or allocated: a few bytes and the descriptor is released.
            self.refused, self.transport = True, transport
            over_limit.hit(open=len(self.connections), max_connections=self.limits.max_connections)
            transport.write(BUSY)
            transport.close()
            return
        self.connected_at = time.monotonic()
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio sets it only on sockets whose proto is TCP; `--workers` shares a socket bound with proto 0.
            with contextlib.suppress(OSError):  # a client already gone
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.watch_reads()

    def evict_one(self) -> bool:
        """At the bound: close the oldest connection that has no request in flight (still waiting for a request
        head, or idle between requests), so a slow or idle client cannot keep a prompt one (a webhook) out.
        False if every connection is busy with a request: then the new one is refused."""
        waiting = [c for c in self.connections
                   if isinstance(c, GuardedH11Protocol) and not c.transport.is_closing() and c.between_requests()]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.connected_at)
        evictions.hit(open=len(self.connections), max_connections=self.limits.max_connections)
        oldest.transport.abort()  # its descriptor is released as soon as the loop runs connection_lost
        return True

    def between_requests(self) -> bool:
        return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if not self.refused:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.watch_reads()

    def watch_reads(self) -> None:
        """Arm, re-arm or disarm the read timer for where the client is in its request."""
        state = self.conn.their_state
        if self.transport.is_closing():
            self.disarm()
        elif state is h11.IDLE:  # no request yet, or its head still arriving: the head's deadline stands
            if self.read_timer_kind != "header":
                self.arm("header", self.limits.header_timeout)
        elif state is h11.SEND_BODY:  # every chunk of the body restarts its clock
            self.arm("body", self.limits.body_timeout)
        else:  # the request is complete (or the connection is closing): the app is answering
            self.disarm()

    def arm(self, kind: Literal["header", "body"], seconds: float) -> None:
        self.disarm()
        self.read_timer_kind = kind
        self.read_timer = self.loop.call_later(seconds, self.read_timed_out)

    def disarm(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
        self.read_timer, self.read_timer_kind = None, None

    def read_timed_out(self) -> None:
        kind, self.read_timer, self.read_timer_kind = self.read_timer_kind, None, None
        if self.transport.is_closing():
            return
        if kind == "header":
            # A head that never completed: nothing was started for it, so there is no one to answer.
            header_timeouts.hit(seconds=self.limits.header_timeout)
            self.transport.close()
        elif kind == "body":
            if self.flow.read_paused:  # the app has not read what it has yet: not the client's stall
                self.arm("body", self.limits.body_timeout)
                return
            body_timeouts.hit(seconds=self.limits.body_timeout)
            if self.cycle is not None and not self.cycle.response_started:
                self.transport.write(TIMEOUT)
            self.transport.close()  # the app's receive() then sees http.disconnect


class ServerConfig(uvicorn.Config):
    """uvicorn's Config carrying the connection limits (it is pickled into `--workers` processes with them), and
    a loop whose exception handler throttles failed-accept logs."""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = limits

    def get_loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop] | None:
        inner = super().get_loop_factory() or asyncio.new_event_loop

        def factory() -> asyncio.AbstractEventLoop:
            loop = inner()
            loop.set_exception_handler(loop_exception_handler)
            return loop

        return factory


def server_config(app: Any, *, host: str, port: int, workers: int, settings: Settings, fd_budget: int,
                  log_config: dict[str, Any] | None = None) -> ServerConfig:
    """The one uvicorn configuration: protocol, limits, timeouts, log level and log config."""
    limits = ConnectionLimits(max_connections=connection_bound(settings.max_connections, fd_budget),
                              header_timeout=settings.header_timeout_seconds,
                              body_timeout=settings.body_timeout_seconds)
    return ServerConfig(
        app, limits=limits, host=host, port=port, workers=workers,
        http=GuardedH11Protocol,
        timeout_keep_alive=settings.keep_alive_seconds,
        backlog=accept_backlog(fd_budget),
        # uvicorn's access and error lines through textback's JSON formatter, phones masked (service.logs); no
        # log_level, which would override the levels the config sets.
        log_config=(uvicorn_log_config(settings.log_level, access_log=settings.access_log)
                    if log_config is None else log_config),
    )


def run(app: Any, *, host: str, port: int, workers: int, settings: Settings,
        log_config: dict[str, Any] | None = None, sock: socket.socket | None = None,
        on_server: Callable[[uvicorn.Server], None] | None = None) -> None:
    """Serve `app` (an ASGI app, or an import string with `workers` > 1) until stopped: what `uvicorn.run` does
    for these two cases, with our configuration. Exits 3 (uvicorn's STARTUP_FAILURE) if the server never
    started, e.g. the port is in use; `log_config` is a logging.config.dictConfig dict (default: textback's JSON
    lines, service.logs.uvicorn_log_config). `sock`: one process, serving on that already bound socket (the one
    service.warming answered probes on during start-up). `on_server`: given the one-process server before it
    runs (setting its `should_exit` stops it gracefully)."""
    config = server_config(app, host=host, port=port, workers=workers, settings=settings,
                           fd_budget=raise_fd_limit(), log_config=log_config)
    server = uvicorn.Server(config)
    if on_server is not None and workers <= 1:
        on_server(server)
    supervisor = Multiprocess(config, sockets=[config.bind_socket()]) if workers > 1 else None
    try:
        if supervisor is not None:
            supervisor.run()
        else:
            server.run(sockets=[sock] if sock is not None else None)
    except KeyboardInterrupt:
        pass
    if supervisor is not None:
        # uvicorn's supervisor stops when a worker fails to start (the app refused its configuration) but returns
        # normally: the operator's process manager must see the failure.
        if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
            sys.exit(STARTUP_FAILURE)
    elif not server.started:
        sys.exit(STARTUP_FAILURE)
