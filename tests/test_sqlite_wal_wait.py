"""A new SQLite connection waits out another process's write lock to put the database in WAL mode (a database
from an older release being migrated at start-up by the process beside it), instead of failing after one
busy_timeout: each attempt waits busy_timeout, then it is tried again up to db.WAL_WAIT_SECONDS."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from service import db


@pytest.fixture
def held(tmp_path: Path):
    """A database in rollback-journal mode and a connection holding its write lock (EXCLUSIVE), released by
    calling the returned function (from any thread)."""
    path = tmp_path / "old.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO t VALUES (1)")

    def release() -> None:
        holder.execute("COMMIT")

    yield path, release
    holder.close()


def test_wal_single_attempt_fails_while_another_holds_the_lock(held) -> None:
    """The case itself: one PRAGMA gives up after its busy timeout."""
    path, _release = held
    conn = sqlite3.connect(path, timeout=0.1)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        conn.execute("PRAGMA journal_mode=WAL")
    conn.close()


def test_wal_waits_for_lock_released_after_busy_timeouts(held) -> None:
    path, release = held
    timer = threading.Timer(0.6, release)  # several busy timeouts (0.1 s each) later
    timer.start()
    conn = sqlite3.connect(path, timeout=0.1)
    started = time.monotonic()
    try:
        db._wal(conn.cursor())
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        timer.join()
        conn.close()
    assert time.monotonic() - started >= 0.5


def test_wal_gives_up_after_wal_wait_seconds(held, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _release = held
    monkeypatch.setattr(db, "WAL_WAIT_SECONDS", 0.3)
    conn = sqlite3.connect(path, timeout=0.1)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        db._wal(conn.cursor())
    conn.close()
    assert 0.3 <= time.monotonic() - started < 5
