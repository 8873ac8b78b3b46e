"""PostgreSQL connections are pinged on checkout only after sitting idle (service.db.ping_when_idle): a pool in
steady use pays no round trip per transaction, an idle connection whose server side died is replaced before use,
and one that dies in steady use fails a single operation, after which the pool is renewed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from service import db


@pytest.fixture
def engine(postgres_url: str | None, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Engine, list[Any]]]:
    """textback's engine on the run's PostgreSQL database, and the pings it sends (the dialect's real ping)."""
    if postgres_url is None:
        pytest.skip("TEXTBACK_TEST_POSTGRES_URL is not set")
    made = db.make_engine(postgres_url)
    pings: list[Any] = []
    real = made.dialect.do_ping

    def counted(dbapi_conn: Any) -> bool:
        pings.append(dbapi_conn)
        return real(dbapi_conn)

    monkeypatch.setattr(made.dialect, "do_ping", counted)
    yield made, pings
    made.dispose()


def backend_pid(engine: Engine) -> int:
    with engine.begin() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(postgres_url: str, pid: int) -> None:
    """End one server process from outside, as a server restart or an idle timeout does."""
    admin = create_engine(db.normalize_url(postgres_url))
    try:
        with admin.begin() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    finally:
        admin.dispose()


def test_checkout_connection_in_steady_use_sends_no_ping(engine) -> None:
    made, pings = engine
    pids = {backend_pid(made) for _ in range(20)}
    assert len(pids) == 1  # the same pooled connection, checked out twenty times
    assert pings == []


def test_checkout_idle_connection_dead_on_server_replaced_before_use(engine, postgres_url, monkeypatch) -> None:
    made, pings = engine
    first = backend_pid(made)
    terminate(postgres_url, first)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # the connection has now sat idle long enough
    second = backend_pid(made)  # no error: the ping found it dead and the pool connected again
    assert second != first
    assert len(pings) == 1


def test_checkout_idle_live_connection_pinged_and_kept(engine, monkeypatch) -> None:
    made, pings = engine
    first = backend_pid(made)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert backend_pid(made) == first
    assert len(pings) == 1


def test_checkout_connection_dead_in_steady_use_fails_once_then_pool_renewed(engine, postgres_url) -> None:
    made, pings = engine
    first = backend_pid(made)
    terminate(postgres_url, first)
    with pytest.raises(OperationalError) as info:
        backend_pid(made)
    assert info.value.connection_invalidated
    assert backend_pid(made) != first  # the next operation gets a new connection
    assert pings == []
