"""The PostgreSQL pool's size is the operator's (TEXTBACK_DB_POOL_SIZE, TEXTBACK_DB_MAX_OVERFLOW,
TEXTBACK_DB_POOL_TIMEOUT_SECONDS): the context's engine is built with them, a process never holds more
connections than they allow, and a transaction that cannot get one in time fails as an unavailable database
(a webhook is then spooled and answered) instead of waiting past Twilio's 15 s."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from service import db
from service.replay import database_unavailable
from service.settings import Settings


def _server_connections(engine: Engine, application: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"),
                                {"name": application}).scalar_one())


@pytest.fixture
def pg(postgres_url: str | None) -> str:
    if postgres_url is None:
        pytest.skip("TEXTBACK_TEST_POSTGRES_URL is not set")
    return postgres_url


@pytest.fixture
def small_pool(pg: str) -> Iterator[Engine]:
    """textback's engine with one connection and one more under load, waiting 0.3 s at most; its connections
    carry an application name so the server can count them."""
    sep = "&" if "?" in pg else "?"
    engine = db.make_engine(f"{pg}{sep}application_name=textback-pool-test", pool_size=1, max_overflow=1,
                            pool_timeout=0.3)
    yield engine
    engine.dispose()


def test_settings_pool_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings(_env_file=None)
    assert (defaults.db_pool_size, defaults.db_max_overflow, defaults.db_pool_timeout_seconds) == (10, 20, 10.0)
    monkeypatch.setenv("TEXTBACK_DB_POOL_SIZE", "3")
    monkeypatch.setenv("TEXTBACK_DB_MAX_OVERFLOW", "0")
    monkeypatch.setenv("TEXTBACK_DB_POOL_TIMEOUT_SECONDS", "2.5")
    chosen = Settings(_env_file=None)
    assert (chosen.db_pool_size, chosen.db_max_overflow, chosen.db_pool_timeout_seconds) == (3, 0, 2.5)


@pytest.mark.parametrize(("name", "value"), [("TEXTBACK_DB_POOL_SIZE", "0"), ("TEXTBACK_DB_POOL_SIZE", "many"),
                                             ("TEXTBACK_DB_MAX_OVERFLOW", "-1"),
                                             ("TEXTBACK_DB_POOL_TIMEOUT_SECONDS", "0")])
def test_settings_pool_bad_value_refused_naming_it(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    assert name.removeprefix("TEXTBACK_").lower() in str(caught.value)


@pytest.mark.parametrize("settings_env", [{"db_pool_size": 2, "db_max_overflow": 3, "db_pool_timeout_seconds": 4.0}])
def test_build_context_engine_uses_pool_settings(ctx, settings_env: dict[str, object]) -> None:
    pool = ctx.engine.pool
    if ctx.engine.dialect.name != "postgresql":
        assert ctx.engine.dialect.name == "sqlite"  # a file: SQLite has no server connections to bound
        return
    assert (pool.size(), pool._max_overflow, pool._timeout) == (2, 3, 4.0)  # type: ignore[attr-defined]


def test_pool_never_holds_more_connections_than_allowed(small_pool: Engine, pg: str) -> None:
    """Three transactions at once on a pool of 1 + 1: two run, the third waits and then fails."""
    held = [small_pool.connect(), small_pool.connect()]
    try:
        for conn in held:
            conn.execute(text("SELECT 1"))
        watcher = db.make_engine(pg)
        try:
            assert _server_connections(watcher, "textback-pool-test") == 2
        finally:
            watcher.dispose()
        started = time.monotonic()
        with pytest.raises(PoolTimeoutError) as caught:
            small_pool.connect()
        waited = time.monotonic() - started
    finally:
        for conn in held:
            conn.close()
    assert 0.25 <= waited < 5
    assert database_unavailable(caught.value)  # a webhook is spooled and answered, as for a database outage


def test_pool_waiting_transaction_gets_connection_given_back(small_pool: Engine) -> None:
    """A transaction that waits is served as soon as another gives its connection back (within the timeout)."""
    held = [small_pool.connect(), small_pool.connect()]
    for conn in held:
        conn.execute(text("SELECT 1"))
    released = threading.Timer(0.1, held[0].close)
    released.start()
    try:
        with small_pool.connect() as conn:
            assert conn.execute(text("SELECT 2")).scalar_one() == 2
    finally:
        released.join()
        held[1].close()
