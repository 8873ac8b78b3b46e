"""Outages on demand, for the outage and crash tests and benchmarks/bench_outage.py: a context pointed at a
database that refuses every connection, and a loopback host that accepts connections and never answers (a
database or an LLM API gone silent)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType

from service.context import AppContext
from service.db import make_engine

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/unreachable"  # nothing listens on port 1: refused at once


@contextmanager
def engine_at(ctx: AppContext, url: str) -> Iterator[None]:
    """Point the service's engine at `url` for the block, then back at the real database."""
    good = ctx.engine
    ctx.engine = make_engine(url)
    try:
        yield
    finally:
        ctx.engine.dispose()
        ctx.engine = good


def database_down(ctx: AppContext) -> AbstractContextManager[None]:
    """The database refuses every connection for the block."""
    return engine_at(ctx, UNREACHABLE)


class SilentListener:
    """A loopback TCP port that accepts connections and never says a word, until closed."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._server.settimeout(0.1)
        self.port: int = self._server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()
        self._server.close()

    def __enter__(self) -> SilentListener:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
