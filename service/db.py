"""The database: engine construction (SQLite by default, PostgreSQL too), sessions, schema creation (by the
migrations, service.migrations), and opening an existing database for the commands that only read one (audit
export, privacy)."""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import IntegrityError, InvalidatePoolError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session, create_engine

from service import models  # noqa: F401 - models registers the tables on SQLModel.metadata

if TYPE_CHECKING:
    from service.migrations.runner import Upgrade


def normalize_url(url: str) -> str:
    """Accept plain postgresql:// URLs and use the psycopg 3 driver for them."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def display_url(url: str) -> str:
    """The database URL for a message or a checklist line: the driver textback uses, the password hidden."""
    return make_url(normalize_url(url)).render_as_string(hide_password=True)


_turn = threading.local()


@contextmanager
def urgent_writes() -> Iterator[None]:
    """This thread's SQLite writes go before other writers of the process that are waiting (a send must not
    wait behind a queue of webhooks: the borrower is waiting for it). No effect on PostgreSQL."""
    before = getattr(_turn, "urgent", False)
    _turn.urgent = True
    try:
        yield
    finally:
        _turn.urgent = before


@dataclass(frozen=True)
class WriteTurns:
    """What this process's SQLite writers have done with the write turn since the engine was made: turns
    taken, seconds the turn was held (from taking it to the transaction's end) and seconds writers waited for
    it. On one SQLite file every write waits for the one before: held seconds per second near 1 mean the
    write lock, not the CPU, bounds how much the process handles (service.metrics exports these)."""

    turns: int
    held_seconds: float
    waited_seconds: float


class _Writers:
    """This process's turn at SQLite's one write lock: one writer at a time, urgent ones (`urgent_writes`)
    first, the next one woken the moment a transaction ends. Left to SQLite, a writer that finds the lock taken
    sleeps in its busy handler, up to 100 ms at a time, before trying again: under load a webhook or a send
    waited a second or more behind a lock that was free. Other processes (a CLI command) still meet at SQLite's
    busy timeout, and so does a writer here that has waited as long as that (`take` gives up: never forever).
    It keeps the turn's totals (`totals`): two clock reads and two additions a turn, under its own lock."""

    def __init__(self) -> None:
        # Reentrant: a connection the garbage collector finalizes is rolled back (giving its turn back) in
        # whichever thread the collector runs, possibly one inside `take` already.
        self._mutex = threading.RLock()
        self._urgent = threading.Condition(self._mutex)
        self._normal = threading.Condition(self._mutex)
        self._held = False
        self._holder: weakref.ref[sqlite3.Connection] | None = None
        self._urgent_waiting = 0
        self._taken_at = 0.0
        self._turns = 0
        self._held_seconds = 0.0
        self._waited_seconds = 0.0

    def take(self, conn: sqlite3.Connection, timeout: float) -> bool:
        urgent = getattr(_turn, "urgent", False)
        asked = time.monotonic()
        deadline = asked + timeout
        with self._mutex:
            if urgent:
                self._urgent_waiting += 1
            try:
                while self._held or (not urgent and self._urgent_waiting):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        if self._held and self._holder is not None and self._holder() is None:
                            self._end_turn()  # its connection is gone without ending the transaction
                            break
                        self._waited_seconds += time.monotonic() - asked
                        self._wake_next()  # a wake-up this waiter may have taken goes to the next one
                        return False
                    (self._urgent if urgent else self._normal).wait(left)
                self._held, self._holder = True, weakref.ref(conn)
                self._taken_at = time.monotonic()
                self._waited_seconds += self._taken_at - asked
                return True
            finally:
                if urgent:
                    self._urgent_waiting -= 1

    @property
    def held(self) -> bool:
        return self._held

    def waiting(self) -> int:
        """Writers of this process waiting for their turn."""
        with self._mutex:
            return self._urgent_waiting + len(self._normal._waiters)  # type: ignore[attr-defined]

    def give_back(self) -> None:
        with self._mutex:
            if self._held:
                self._end_turn()
            self._held, self._holder = False, None
            self._wake_next()

    def _end_turn(self) -> None:
        self._turns += 1
        self._held_seconds += time.monotonic() - self._taken_at

    def totals(self) -> WriteTurns:
        with self._mutex:
            return WriteTurns(self._turns, self._held_seconds, self._waited_seconds)

    def _wake_next(self) -> None:
        if self._held:
            return
        if self._urgent_waiting:
            self._urgent.notify()
        else:
            self._normal.notify()


class _WriterConnection(sqlite3.Connection):
    """A SQLite connection that takes this process's writers' turn (`_Writers`) before BEGIN IMMEDIATE and gives
    it back when its transaction ends (COMMIT, ROLLBACK, or the connection closed)."""

    writers: _Writers
    writing = False

    def enter(self) -> None:
        if not self.writing:
            self.writing = self.writers.take(self, WRITER_WAIT_SECONDS)

    def leave(self) -> None:
        if self.writing:
            self.writing = False
            self.writers.give_back()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.leave()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.leave()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.leave()


# Each SQLite engine's writers (make_engine), for write_turns.
_ENGINE_WRITERS: weakref.WeakKeyDictionary[Engine, _Writers] = weakref.WeakKeyDictionary()


def write_turns(engine: Engine) -> WriteTurns | None:
    """The totals of `engine`'s SQLite write turn in this process; None for PostgreSQL (no such turn)."""
    writers = _ENGINE_WRITERS.get(engine)
    return None if writers is None else writers.totals()


WRITER_WAIT_SECONDS = 30.0  # as PRAGMA busy_timeout
# How long a new connection waits to put the database in WAL mode while another process holds it (a migration
# at start-up: service.migrations.runner waits as long for its lock).
WAL_WAIT_SECONDS = 600.0


def _wal(cur: sqlite3.Cursor) -> None:
    """PRAGMA journal_mode=WAL, waiting out another process's write lock. A database not in WAL mode yet (one
    made by an older release, or restored from a dump) needs it to itself to change mode, and the process that
    migrates it at start-up holds its write lock for the whole migration: each attempt waits busy_timeout (30 s),
    then it is tried again, up to WAL_WAIT_SECONDS, instead of failing the process that starts beside it."""
    deadline = time.monotonic() + WAL_WAIT_SECONDS
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20, pool_timeout: float = 10.0) -> Engine:
    """The engine for `url`. On PostgreSQL, a pool of `pool_size` connections kept open and `max_overflow` more
    opened under load; a checkout waits `pool_timeout` seconds at most (settings: TEXTBACK_DB_POOL_SIZE,
    TEXTBACK_DB_MAX_OVERFLOW, TEXTBACK_DB_POOL_TIMEOUT_SECONDS). SQLite ignores them."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # The write turn is given back in the DBAPI connection's commit(), rollback() and close(): never create
        # this engine with skip_autocommit_rollback, which would skip the rollback on a connection's return.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30,
                                                  "factory": _WriterConnection})
        writers = _Writers()  # one per engine: its connections are this process's writers
        _ENGINE_WRITERS[engine] = writers

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
            # The sqlite3 driver opens transactions lazily (only before a write), so a SAVEPOINT can start and
            # RELEASE commit one on its own. Take transaction control ourselves (SQLAlchemy's documented
            # recipe): every transaction is a real BEGIN, and IMMEDIATE so concurrent writers queue up instead
            # of failing on a read-then-write upgrade. A webhook is then all or nothing on SQLite too.
            dbapi_conn.isolation_level = None
            if isinstance(dbapi_conn, _WriterConnection):
                dbapi_conn.writers = writers
            cur = dbapi_conn.cursor()
            _wal(cur)
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # A connection marked read-only (the opt-out re-check under a send's number lock) reads a WAL
            # snapshot without queueing for the write lock: see service/optout_lock.py.
            if conn.get_execution_options().get("sqlite_read_only"):
                conn.exec_driver_sql("BEGIN")
                return
            dbapi: object = conn.connection.dbapi_connection
            if isinstance(dbapi, _WriterConnection):
                dbapi.enter()
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                if isinstance(dbapi, _WriterConnection):
                    dbapi.leave()
                raise

        return engine
    # A database host that stops answering must fail a webhook within Twilio's 15 s (it is then spooled and
    # answered from memory), not after the operating system's TCP timeout of minutes.
    connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": 5}
    # A checkout that waits past `pool_timeout` fails as an unavailable database (service.replay): well inside
    # Twilio's 15 s, so the webhook is spooled and answered rather than timed out.
    engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout,
                           connect_args=connect_args)
    ping_when_idle(engine)
    return engine


PING_AFTER_IDLE_SECONDS = 5.0
_forced_ping = threading.local()


def ping_next_checkout() -> None:
    """Ping the next connection this thread checks out, however briefly it sat idle: before a write that must
    not fail after a wait outside the database (a send's outcome, after the Twilio request)."""
    _forced_ping.on = True


def ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection on checkout only when it sat idle for PING_AFTER_IDLE_SECONDS or more (what
    `pool_pre_ping` does on every checkout: a round trip and ~0.1-0.2 ms of CPU per transaction, four of them
    per missed call). A dead one is replaced before use and the pool renewed, as with pre-ping; a send pings
    before writing its outcome (`ping_next_checkout`). A connection that dies while in steady use fails the
    one operation that finds it (SQLAlchemy then renews the whole pool), and that work is not lost: a webhook
    is spooled and answered, a reply stays queued for its retry."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: object, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry, _proxy: object) -> None:
        idle_since = record.info.pop("idle_since", None)
        forced, _forced_ping.on = getattr(_forced_ping, "on", False), False
        if idle_since is None or (not forced and time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS):
            return  # new, or back from use moments ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            if engine.dialect.is_disconnect(exc, dbapi_conn, None):
                # As pre-ping does: every pooled connection from before is renewed, and this checkout retried.
                raise InvalidatePoolError(str(exc)) from exc
            raise


class MissingDatabase(Exception):
    """No textback database at the URL (no file, no tables, or it cannot be opened); the message says why."""


def open_database(url: str) -> Engine:
    """An engine on an existing textback database, for commands that read one (never creates it)."""
    parsed = make_url(normalize_url(url))
    sqlite = parsed.drivername.startswith("sqlite")
    if sqlite and (
        not parsed.database or parsed.database == ":memory:" or not Path(parsed.database).exists()
    ):
        raise MissingDatabase(f"no database at {parsed.database or url!r} (TEXTBACK_DATABASE_URL)")
    engine = make_engine(url)
    try:
        missing = [
            t
            for t in ("outboundmessage", "inboundmessage", "decision", "optoutevent", "callevent")
            if not inspect(engine).has_table(t)
        ]
    except Exception as exc:
        engine.dispose()
        raise MissingDatabase(f"cannot open the database: {type(exc).__name__}") from None
    if missing:
        engine.dispose()
        raise MissingDatabase(
            f"the database has no textback tables ({', '.join(missing)} missing); run textback serve once"
        )
    return engine


def create_schema(engine: Engine) -> Upgrade:
    """Create or upgrade the schema to this release's newest migration, under the migration lock (see
    service.migrations). A database made by a release before migrations is brought to the baseline first:
    missing tables, columns, unique constraints and indexes are added, and the report's cases are made from
    the lead history when their table is new. Nothing is dropped."""
    from service.migrations.runner import upgrade_database  # lazy: Alembic takes ~0.8 s to import

    return upgrade_database(engine)


def ping(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:  # readiness: any failure means not ready
        return False
    return True


def insert_once(session: Session, row: object) -> bool:
    """Insert `row` in a savepoint; False when a unique constraint says it is there already.

    This is how webhooks stay idempotent under concurrent duplicates: the database decides, not a
    check-then-insert."""
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A session for a long read (the report): on SQLite it reads a WAL snapshot with a plain BEGIN instead of
    queueing for the write lock, so webhooks never wait behind it; elsewhere an ordinary session. Never commits."""
    with engine.connect().execution_options(sqlite_read_only=True) as conn, Session(bind=conn) as session:
        try:
            yield session
        finally:
            session.rollback()
