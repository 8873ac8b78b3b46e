"""One lock per phone number that makes an opt-out final the moment it commits, in its whole scope.

The lock is keyed by the borrower's number alone, not by (broker, number): an opt-out recorded with one broker
may cover other brokers' texts (the scope of policies/sending/opt_out.yaml), so a STOP committing for broker A
is final for a send from broker B of the same brokerage too. Whether a number is opted out for a broker is one
SQL statement (`opt_out_state`), read afresh under the lock.

Every change to a number's opt-out state takes the lock exclusively, until its transaction ends
(`lock_for_change`). Every automated text to a borrower takes it shared across its request to Twilio and reads
the opt-out again under it (`hold_for_send`). So a text either reached Twilio before the opt-out committed, or
its sender sees the opt-out and drops it: no text is requested after an opt-out's transaction committed. Two
changes to one number (START and STOP at once, two STOPs) run one after the other, each reading what the other
committed: the final state is the one of the request that committed last, and one confirmation goes out.

PostgreSQL: transaction-level advisory locks on a 64-bit hash of the number computed by the server (`_pg_key`,
so a send can lock the number of the row it is about to claim without reading the row first),
`pg_advisory_xact_lock` in the changing transaction and `pg_advisory_xact_lock_shared` on a connection the send
holds for the length of its request (released by the transaction's end, so a crash or an exception never leaks
one). A send usually takes it before its claim (`hold_row_for_send`): the claim's own opt-out condition
(`opted_out_clause`) is then the read under the lock, and a send is three statements (lock, claim, outcome).

SQLite (one host by nature): `fcntl.flock` on one of 256 lock files next to the database file
(`<database>.locks/NN.lock`, the bucket a hash of the number), shared or exclusive, from any process. Ordering
keeps it deadlock-free: an exclusive file lock is only taken inside a transaction that already holds SQLite's
write lock (every transaction here begins IMMEDIATE), and a send holding a shared file lock never waits for the
write lock (it reads the opt-out in a deferred, read-only transaction and writes only after releasing).

A send waits at most `send_wait` for the shared lock and is retried later when it cannot have it; a change waits
at most `change_wait` (longer than any send's request can hold the lock) and then goes ahead regardless, with
an error logged: an opt-out is never lost to a lock.

Size: the lock's two sides, on both databases, the one opt-out statement and the early lock a send takes before
its claim belong together (one guarantee, one key); splitting them would spread the argument across modules.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    case,
    event,
    false,
    func,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Mapped, aliased
from sqlmodel import col

from service.errors import NumberBusy
from service.logs import log
from service.models import (
    ALLOWED_AFTER_OPTOUT,
    Audience,
    Broker,
    MessageStatus,
    OptOut,
    OutboundMessage,
    UTCDateTime,
)
from service.phones import mask
from service.sending.opt_out_policy import DEFAULT_SCOPE, Scope

if TYPE_CHECKING:
    from sqlmodel import Session

    from service.settings import Settings

logger = logging.getLogger("textback.optout_lock")

BUCKETS = 256
_HELD = "optout_locks"  # session.info key: file locks this session's transaction holds


def send_wait(settings: Settings) -> float:
    """How long a send waits for its number's lock (a change holds it for one short webhook transaction)."""
    return settings.send_timeout_seconds


def change_wait(settings: Settings) -> float:
    """How long an opt-out change waits for sends in flight (each holds the lock for at most its request)."""
    return 2 * settings.send_timeout_seconds + 5


def number_key(phone: str) -> int:
    """A signed 64-bit key for the number (SQLite: its lock file's bucket). The number alone: one lock covers
    every broker's texts to it, whatever the opt-out scope."""
    digest = hashlib.blake2b(f"{_KEY_PREFIX}{phone}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


_KEY_PREFIX = "textback-optout:"


def _pg_key(phone: ColumnElement[str] | Mapped[str]) -> ColumnElement[int]:
    """The number's advisory-lock key on PostgreSQL (a bigint), computed by the server from any expression of
    the number: a bound parameter, or the to_phone column of the text a send is about to claim. The number
    alone: one lock covers every broker's texts to it, whatever the opt-out scope."""
    return func.hashtextextended(literal(_KEY_PREFIX, String) + phone, 0, type_=BigInteger)


_PHONE_KEY = _pg_key(bindparam("phone", type_=String))
_TRY_EXCLUSIVE = select(func.pg_try_advisory_xact_lock(_PHONE_KEY))
_WAIT_EXCLUSIVE = select(func.pg_advisory_xact_lock(_PHONE_KEY))
_TRY_SHARED = select(func.pg_try_advisory_xact_lock_shared(_PHONE_KEY))
_WAIT_SHARED = select(func.pg_advisory_xact_lock_shared(_PHONE_KEY))


@dataclass(frozen=True)
class OptOutState:
    """The opt-out row that decides whether a broker may text a number, with the broker it was recorded with."""

    opted_out: bool
    source: str  # keyword:STOP | twilio:STOP | plain_words | llm | error:21610 | ...
    said_at: datetime  # when the deciding word was said (the row's last change on a row from before said_at)
    broker_id: int
    broker_name: str
    brokerage: str
    twilio_number: str
    scope: Scope

    @property
    def carrier_block(self) -> bool:
        return self.source.startswith(CARRIER_SOURCE)


CARRIER_SOURCE = "error:"  # a carrier's block of one sending number (Twilio 21610): never the borrower's word


def _deciding(scope: Scope, broker_id: ColumnElement[int] | Mapped[int], phone: ColumnElement[str] | Mapped[str]
              ) -> Select[bool, str, datetime, int, str, str, str]:
    """The deciding row among the number's opt-out rows within the scope, for any expressions of the broker and
    the number (bound parameters in `_state_query`, a text's own columns in `opted_out_clause`).

    Counted: the broker's own row (whatever its source), and in scope `brokerage` or `all` the other brokers'
    rows in the scope that record the borrower's words (not a carrier block, which stops its own number only).
    The same brokerage is the stored Broker.brokerage_key (computed in Python: opt_out_policy.brokerage_key).
    Deciding: the broker's own carrier block first (its `carrier_blocked_at`, or a row from before that column
    whose source is one), reported as opted out by the carrier whatever the row's word says; else the latest
    word (said_at, or updated_at on an older row; the newer row id breaks a tie)."""
    row, owner, me = aliased(OptOut, name="optout_row"), aliased(Broker, name="owner"), aliased(Broker, name="me")
    # The broker asked about is joined (`me`), and every condition compares its id: SQLite refuses an outer
    # column in a correlated subquery's ORDER BY (the claim's WHERE), and accepts it in a join's ON.
    own = col(row.broker_id) == col(me.id)
    carrier_source = col(row.source).like(f"{CARRIER_SOURCE}%")
    own_block = and_(own, or_(col(row.carrier_blocked_at).is_not(None), and_(col(row.opted_out), carrier_source)))
    said = func.coalesce(col(row.said_at), col(row.updated_at), type_=UTCDateTime())
    columns = (
        or_(own_block, col(row.opted_out)),
        case((own_block, func.coalesce(col(row.carrier_block), col(row.source))), else_=col(row.source)),
        case((own_block, func.coalesce(col(row.carrier_blocked_at), said, type_=UTCDateTime())), else_=said),
        col(row.broker_id), col(owner.name), col(owner.brokerage), col(owner.twilio_number),
    )
    query = (select(*columns).join(owner, col(owner.id) == col(row.broker_id)).join(me, col(me.id) == broker_id)
             .where(col(row.phone) == phone))
    if scope == "broker":
        query = query.where(own)
    else:
        word = ~carrier_source
        if scope == "brokerage":
            same = col(me.brokerage_key) == col(owner.brokerage_key)  # never true for a NULL (unsynced) key
            query = query.where(or_(own, and_(word, same)))
        else:
            query = query.where(or_(own, word))
    return query.order_by(case((own_block, 1), else_=0).desc(), said.desc(), col(row.id).desc()).limit(1)


@cache
def _state_query(scope: Scope) -> Select[bool, str, datetime, int, str, str, str]:
    """The one statement: the deciding row (`_deciding`) for bound `broker_id` and `phone`, or none.
    Built once per scope (the statement's Python construction costs more than SQLite's answer), run with both."""
    return _deciding(scope, bindparam("broker_id", type_=Integer), bindparam("phone", type_=String))


@cache
def opted_out_clause(scope: Scope) -> ColumnElement[bool]:
    """Whether a text's own recipient is opted out for its broker under `scope`, as a condition on the
    outboundmessage row being updated (the claim's WHERE): the same deciding row as `opt_out_state`."""
    deciding = _deciding(scope, col(OutboundMessage.broker_id), col(OutboundMessage.to_phone))
    first = deciding.with_only_columns(deciding.selected_columns[0]).scalar_subquery()
    return func.coalesce(first, false())


def opt_out_state(conn: Connection | Session, broker_id: int, phone: str, scope: Scope = DEFAULT_SCOPE
                  ) -> OptOutState | None:
    """What decides whether `broker_id` may text `phone` under `scope`, read afresh in ONE statement (columns,
    never an object a session cached); None when the number never said an opt-out word in the scope."""
    found = conn.execute(_state_query(scope), {"broker_id": broker_id, "phone": phone}).first()
    if found is None:
        return None
    opted_out, source, said_at, owner_id, name, brokerage, number = found
    return OptOutState(bool(opted_out), source, said_at, owner_id, name, brokerage, number, scope)


def is_opted_out(conn: Connection | Session, broker_id: int, phone: str, scope: Scope = DEFAULT_SCOPE) -> bool:
    """Whether `broker_id` may not text `phone` under the opt-out scope: one statement, read afresh."""
    state = opt_out_state(conn, broker_id, phone, scope)
    return state is not None and state.opted_out


# --------------------------------------------------------------------------------------------- SQLite files


def _lock_dir(engine: Engine) -> Path:
    database = engine.url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        return _beside(database, os.getcwd())
    # An in-memory database lives in one process: a private directory serves it.
    return Path(tempfile.gettempdir()) / f"textback-locks-{os.getpid()}-{id(engine)}"


@lru_cache(maxsize=64)
def _beside(database: str, cwd: str) -> Path:
    """The lock folder beside a database file, resolved once per path and working directory (resolving walks
    every component with a system call, and every send asked)."""
    path = Path(cwd, database).resolve()
    return path.parent / f"{path.name}.locks"


def _lock_file(engine: Engine, key: int) -> Path:
    directory = _lock_dir(engine)
    if directory not in _made:
        directory.mkdir(parents=True, exist_ok=True)
        _made.add(directory)
    return directory / f"{key % BUCKETS:02x}.lock"


_made: set[Path] = set()  # lock folders this process made or found (_flock makes one again if it went away)


def _flock(path: Path, mode: int, wait: float) -> int | None:
    """An open descriptor holding `mode` on `path`, or None when `wait` seconds passed first."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:  # its folder was removed since this process made it
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        else:
            return fd


def _release(fd: int) -> None:
    with suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _release_session_locks(session: Session, transaction: object) -> None:
    if getattr(transaction, "parent", None) is not None:
        return  # a savepoint ended; the transaction (and its locks) goes on
    for fd in session.info.pop(_HELD, {}).values():
        _release(fd)


# --------------------------------------------------------------------------------------------- the two sides


def lock_for_change(session: Session, broker_id: int, phone: str, *, wait: float) -> None:
    """Take the number's lock exclusively until the session's transaction ends (re-entrant within it).
    `broker_id` only names the change in a log line: the lock is the number's, for every broker."""
    connection = session.connection()  # on SQLite: BEGIN IMMEDIATE, the write lock before the file lock
    if connection.dialect.name == "postgresql":
        if connection.execute(_TRY_EXCLUSIVE, {"phone": phone}).scalar():
            return
        try:
            with session.begin_nested():
                session.execute(text("SELECT set_config('lock_timeout', :t, true)"), {"t": f"{int(wait * 1000)}ms"})
                session.execute(_WAIT_EXCLUSIVE, {"phone": phone})
                session.execute(text("SELECT set_config('lock_timeout', '0', true)"))
        except OperationalError:
            log(logger, logging.ERROR, "opt-out applied without its number lock (a send held it too long)",
                phone=mask(phone), broker_id=broker_id, waited_s=wait)
        return
    held: dict[int, int] = session.info.setdefault(_HELD, {})
    key = number_key(phone)
    bucket = key % BUCKETS
    if bucket in held:
        return
    if not event.contains(session, "after_transaction_end", _release_session_locks):
        event.listen(session, "after_transaction_end", _release_session_locks)
    bind = session.get_bind()  # the engine (a session bound to a connection: that connection's engine)
    engine = bind if isinstance(bind, Engine) else bind.engine
    fd = _flock(_lock_file(engine, key), fcntl.LOCK_EX, wait)
    if fd is None:
        log(logger, logging.ERROR, "opt-out applied without its number lock (a send held it too long)",
            phone=mask(phone), broker_id=broker_id, waited_s=wait)
        return
    held[bucket] = fd


@contextmanager
def hold_for_send(engine: Engine, broker_id: int, phone: str, *, wait: float,
                  scope: Scope = DEFAULT_SCOPE) -> Iterator[bool]:
    """Hold the number's lock shared for the body of the `with`; yields whether the number is opted out now for
    `broker_id` under the opt-out `scope` (the sending policy's, `SendingPolicy.opt_out_scope`).

    Raises NumberBusy when the lock cannot be had within `wait` seconds. The body must not write to the
    database nor change an opt-out (that takes the lock exclusively): record the outcome after the `with`."""
    if engine.dialect.name == "postgresql":
        try:
            conn = engine.connect()  # held for the request: the lock lives in its transaction
        except SQLAlchemyError as exc:  # the pool is exhausted or the database is away: try again later
            raise NumberBusy("no connection for the number's opt-out lock") from exc
        with conn:
            try:
                if not conn.execute(_TRY_SHARED, {"phone": phone}).scalar():
                    conn.execute(text("SELECT set_config('lock_timeout', :t, true)"), {"t": f"{int(wait * 1000)}ms"})
                    conn.execute(_WAIT_SHARED, {"phone": phone})
            except OperationalError as exc:
                raise NumberBusy("the number's opt-out lock is held") from exc
            try:
                yield is_opted_out(conn, broker_id, phone, scope)
            finally:
                conn.rollback()  # ends the transaction: releases the lock
        return
    fd = _flock(_lock_file(engine, number_key(phone)), fcntl.LOCK_SH, wait)
    if fd is None:
        raise NumberBusy("the number's opt-out lock is held")
    try:
        try:
            with engine.connect().execution_options(sqlite_read_only=True) as conn:
                opted_out = is_opted_out(conn, broker_id, phone, scope)
                conn.rollback()
        except SQLAlchemyError as exc:
            raise NumberBusy("the opt-out could not be read under the lock") from exc
        yield opted_out
    finally:
        _release(fd)


class EarlyHold:
    """The shared lock of a text's number, taken before its claim (`hold_row_for_send`); `locked` while held."""

    def __init__(self, conn: Connection | None = None) -> None:
        self._conn = conn

    @property
    def locked(self) -> bool:
        return self._conn is not None

    def release(self) -> None:
        """End the lock's transaction (idempotent): before the outcome is written, and at the latest on exit."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.rollback()
        except SQLAlchemyError:
            conn.invalidate()  # a broken connection: closing it ends its transaction and the lock with it
        finally:
            conn.close()


def _row_lock_query() -> Select[bool | None]:
    """Lock, shared and without waiting, the number of the text with id :id when it is a text the opt-out stops
    (and due for the plain claim: pending, outcome known); NULL when it needs no lock."""
    needs = and_(col(OutboundMessage.audience) == Audience.borrower,
                 col(OutboundMessage.purpose).not_in(ALLOWED_AFTER_OPTOUT),
                 col(OutboundMessage.status) == MessageStatus.pending, col(OutboundMessage.unknown_outcome).is_(False))
    locked = func.pg_try_advisory_xact_lock_shared(_pg_key(col(OutboundMessage.to_phone)))
    return select(case((needs, locked), else_=None)).where(col(OutboundMessage.id) == bindparam("id", type_=Integer))


_ROW_LOCK = _row_lock_query()


def _pool_has_room(engine: Engine) -> bool:
    """Whether the pool's steady connections are not all checked out: a send taking its lock early holds two
    connections for a moment (the lock's and the claim's), so under a crowd of sends it takes one, as before."""
    checkedout, size = getattr(engine.pool, "checkedout", None), getattr(engine.pool, "size", None)
    return not (callable(checkedout) and callable(size)) or checkedout() < size()


@contextmanager
def hold_row_for_send(engine: Engine, msg_id: int) -> Iterator[EarlyHold]:
    """PostgreSQL: take the shared lock of text `msg_id`'s number BEFORE its claim, in one statement that never
    waits, so the claim's opt-out condition (`opted_out_clause`, a fresh statement) is the read under the lock
    and no separate read is needed. Yields a hold that is `locked` only when it got the lock; otherwise (SQLite,
    a text that needs no lock, a lock held by a change, no connection) nothing is held and the send takes the
    lock after its claim as ever (`hold_for_send`). Released on `release()` or on exit, whichever comes first."""
    hold = EarlyHold()
    if engine.dialect.name != "postgresql" or not _pool_has_room(engine):
        yield hold
        return
    try:
        conn = engine.connect()
    except SQLAlchemyError:  # the slow path says what is wrong (NumberBusy, a retry) as ever
        yield hold
        return
    try:
        got = conn.execute(_ROW_LOCK, {"id": msg_id}).scalar()
    except SQLAlchemyError:
        got = None
    hold = EarlyHold(conn)
    if not got:
        hold.release()
    try:
        yield hold
    finally:
        hold.release()


# --------------------------------------------------------------------------------------------- the reason


def _said(source: str) -> str:
    """The word a row records, as a reviewer reads it."""
    kind, _, word = source.partition(":")
    if kind in {"keyword", "twilio"} and word:
        return word
    return {"plain_words": "an opt-out in plain words", "llm": "an opt-out the LLM read"}.get(source, source)


def describe(state: OptOutState) -> str:
    """Why a text is suppressed, naming the scope and where the opt-out came from (numbers masked), e.g.
    "opted out (brokerage scope: STOP to Dana Whitfield of Summit Home Loans at +1*******00 on 2026-12-03)"."""
    where = f"{state.broker_name} of {state.brokerage} at {mask(state.twilio_number)} on {state.said_at:%Y-%m-%d}"
    if state.carrier_block:
        return f"opted out (carrier block: Twilio error {state.source.partition(':')[2]} on {where})"
    return f"opted out ({state.scope} scope: {_said(state.source)} to {where})"
