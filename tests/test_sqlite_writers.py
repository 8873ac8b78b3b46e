"""SQLite writers of one process take the write lock in turn (service.db._Writers): sends first, the next
writer woken when a transaction ends, and a turn never kept by a connection that went back to the pool."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from service.db import make_engine, urgent_writes


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _writers(engine):
    with engine.connect() as conn:
        return conn.connection.dbapi_connection.writers


def test_take_write_turn_urgent_writer_before_earlier_waiting_writer(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (who TEXT)"))
    writers = _writers(engine)
    order: list[str] = []

    def write(who: str, urgent: bool) -> None:
        def body() -> None:
            with engine.begin() as conn:
                order.append(who)
                conn.execute(text("INSERT INTO t VALUES (:who)"), {"who": who})
        if urgent:
            with urgent_writes():
                body()
        else:
            body()

    holder = engine.connect()
    holder.begin()  # this process's turn and SQLite's write lock
    normal = threading.Thread(target=write, args=("webhook", False))
    normal.start()
    _wait_for(lambda: writers.waiting() == 1, "the webhook's writer to queue")
    urgent = threading.Thread(target=write, args=("send", True))
    urgent.start()
    _wait_for(lambda: writers.waiting() == 2, "the send's writer to queue")
    holder.commit()
    holder.close()
    normal.join(30)
    urgent.join(30)
    assert order == ["send", "webhook"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 2
    assert not writers.held
    engine.dispose()


def test_give_back_write_turn_when_connection_returns_mid_transaction(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    writers = _writers(engine)
    conn = engine.connect()
    conn.begin()
    conn.execute(text("CREATE TABLE t (x INTEGER)"))
    assert writers.held
    conn.close()  # back to the pool uncommitted: the pool's rollback ends the turn
    assert not writers.held
    with engine.begin() as again:
        assert again.execute(text("SELECT count(*) FROM sqlite_master WHERE name = 't'")).scalar() == 0
    assert not writers.held
    engine.dispose()


def test_read_only_connection_takes_no_write_turn(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    writers = _writers(engine)
    holder = engine.connect()
    holder.begin()
    with engine.connect().execution_options(sqlite_read_only=True) as reader:
        assert reader.execute(text("SELECT 1")).scalar() == 1  # a WAL snapshot, not a place in the queue
    assert writers.waiting() == 0
    holder.rollback()
    holder.close()
    assert not writers.held
    engine.dispose()


def test_take_write_turn_back_from_connection_gone_without_ending(tmp_path: Path) -> None:
    """A turn whose connection was dropped without COMMIT, ROLLBACK or close is taken back by the next writer
    once its wait is up, instead of every later writer waiting its full wait for ever."""
    import gc
    import sqlite3

    from service.db import _WriterConnection, _Writers

    writers = _Writers()
    lost = sqlite3.connect(tmp_path / "a.db", factory=_WriterConnection)
    assert writers.take(lost, timeout=1.0)
    del lost
    gc.collect()
    later = sqlite3.connect(tmp_path / "b.db", factory=_WriterConnection)
    assert writers.take(later, timeout=0.05)
    assert writers.held
    assert writers.totals().turns == 1  # the lost holder's turn ended: counted once
    writers.give_back()
    assert not writers.held
    writers.give_back()  # a second give-back (nothing held) counts nothing
    assert writers.totals().turns == 2
    later.close()


def test_give_up_write_turn_wait_while_holder_still_open(tmp_path: Path) -> None:
    import sqlite3

    from service.db import _WriterConnection, _Writers

    writers = _Writers()
    holder = sqlite3.connect(tmp_path / "a.db", factory=_WriterConnection)
    assert writers.take(holder, timeout=1.0)
    other = sqlite3.connect(tmp_path / "b.db", factory=_WriterConnection)
    assert not writers.take(other, timeout=0.05)  # falls back to SQLite's own busy timeout
    assert writers.totals().turns == 0  # queued, then gave up: its wait counts, no turn
    assert writers.totals().waited_seconds >= 0.05
    writers.give_back()
    assert writers.take(other, timeout=0.05)
    writers.give_back()
    holder.close()
    other.close()


def test_count_write_turn_held_and_waited_seconds(tmp_path: Path) -> None:
    """`write_turns` adds up each turn from its taking to the transaction's end, and the time a writer queued
    for it; a read-only connection takes no turn and counts nothing."""
    from service.db import write_turns

    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    before = write_turns(engine)
    assert before is not None
    assert before.turns == 1
    writers = _writers(engine)
    holder = engine.connect()
    holder.begin()

    def insert() -> None:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))

    queued = threading.Thread(target=insert)
    queued.start()
    _wait_for(lambda: writers.waiting() == 1, "the second writer to queue")
    time.sleep(0.2)
    holder.commit()
    holder.close()
    queued.join(30)
    with engine.connect().execution_options(sqlite_read_only=True) as reader:
        assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 1
    after = write_turns(engine)
    assert after is not None
    assert after.turns - before.turns == 2  # the holder's and the queued writer's; not the reader's
    assert after.held_seconds - before.held_seconds >= 0.2
    assert after.waited_seconds - before.waited_seconds >= 0.2  # the second writer queued for the 0.2 s
    assert not writers.held
    engine.dispose()


def test_report_no_write_turns_for_postgresql() -> None:
    from service.db import write_turns

    engine = make_engine("postgresql://textback@127.0.0.1:1/none")  # never connected
    assert write_turns(engine) is None
    engine.dispose()
