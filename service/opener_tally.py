"""The openers tally: an upper bound on the platform's openers in the breaker's window, read in a few rows.

The circuit breaker compares the platform's openers in its window (10 minutes by default) with its limit. Its
exact count (service.sending.gates.count_columns) stops at the limit, which keeps it cheap with the shipped
limit of 100; a network large enough to raise the limit pays the count's whole window on every missed call
(~0.6 ms of PostgreSQL per 1,000 openers in it; benchmarks/README.md). The count is only compared with the
limit, and only shown once it reaches it ("100 or more"), so an upper bound below the limit settles the same
decision: the exact count runs only when the bound reaches the limit.

The bound is this table: openers created per minute, in SHARDS rows per minute (by the text's id, so concurrent
transactions rarely update the same row), kept by a database trigger AFTER INSERT on outboundmessage, so no
path that stores an opener can miss it. It counts every borrower opener stored, whatever its status then or
later, and keeps counting rows deleted since (retention, a forget): it is never below the exact count, only
above it. Reading the window sums at most (window minutes + 1) x SHARDS rows.

Fail closed: a database whose trigger is missing (tables made from the models, not by the migrations) would
have an empty tally, and an empty tally would never trip the breaker. `in_force` is checked at start-up and
the exact count is kept (with a warning) unless the trigger is there.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection, Engine

from service.logs import log
from service.models import UTCDateTime

if TYPE_CHECKING:
    from service.context import AppContext

logger = logging.getLogger("textback.gates")

SHARDS = 8
TRIGGER = "tally_opener"
FUNCTION = "textback_tally_opener"

# How far back the tally is kept (and rebuilt by the migration): the breaker uses it only for windows up to a
# day (`in_use`), and the worker prunes what is older.
KEEP = timedelta(days=2)
MAX_WINDOW_MINUTES = 24 * 60


def _minute_sql(dialect: str, column: str) -> str:
    """The tally's minute of a timestamp column, in SQL (what `minute_of` computes in Python): the trigger's and
    the backfill's one definition, so the two always file an opener under the same minute."""
    if dialect == "postgresql":
        return f"floor(extract(epoch FROM {column}) / 60)::bigint"
    return f"CAST(strftime('%s', {column}) AS INTEGER) / 60"


def _sqlite_trigger() -> str:
    minute = _minute_sql("sqlite", "NEW.created_at")
    return f"""
CREATE TRIGGER IF NOT EXISTS {TRIGGER} AFTER INSERT ON outboundmessage
WHEN NEW.purpose = 'opener' AND NEW.audience = 'borrower'
BEGIN
  INSERT OR IGNORE INTO openertally (minute, shard, n) VALUES ({minute}, NEW.id % {SHARDS}, 0);
  UPDATE openertally SET n = n + 1 WHERE minute = {minute} AND shard = NEW.id % {SHARDS};
END
"""  # noqa: S608 - constants


def _postgres_function() -> str:
    return f"""
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO openertally (minute, shard, n)
    VALUES ({_minute_sql("postgresql", "NEW.created_at")}, NEW.id % {SHARDS}, 1)
    ON CONFLICT (minute, shard) DO UPDATE SET n = openertally.n + 1;
  RETURN NULL;
END
$$
"""  # noqa: S608 - constants


_POSTGRES_TRIGGER = f"""
CREATE TRIGGER {TRIGGER} AFTER INSERT ON outboundmessage FOR EACH ROW
WHEN (NEW.purpose = 'opener' AND NEW.audience = 'borrower') EXECUTE FUNCTION {FUNCTION}()
"""


def install(conn: Connection) -> None:
    """Create the trigger (and on PostgreSQL its function) on `conn`'s database; the table must exist. Idempotent."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(_postgres_function()))
        conn.execute(text(f"DROP TRIGGER IF EXISTS {TRIGGER} ON outboundmessage"))
        conn.execute(text(_POSTGRES_TRIGGER))
    else:
        conn.execute(text(_sqlite_trigger()))


def backfill(conn: Connection, *, now: datetime | None = None) -> None:
    """Tally the openers already stored (the last KEEP), replacing what the tally says of those minutes: run
    with the trigger installed in the same transaction (on PostgreSQL its creation holds off inserts until the
    commit), so no opener is missed or counted twice."""
    since = (now or datetime.now(UTC)) - KEEP
    cutoff = minute_of(since)
    conn.execute(text("DELETE FROM openertally WHERE minute >= :cutoff"), {"cutoff": cutoff})
    minute = _minute_sql(conn.dialect.name, "created_at")
    conn.execute(text(
        f"INSERT INTO openertally (minute, shard, n) SELECT {minute}, id % {SHARDS}, count(*) "  # noqa: S608
        "FROM outboundmessage WHERE purpose = 'opener' AND audience = 'borrower' AND created_at >= :since "
        f"GROUP BY {minute}, id % {SHARDS}"
        ).bindparams(bindparam("since", type_=UTCDateTime())), {"since": since})
    _delete_before(conn, cutoff)


def uninstall(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"DROP TRIGGER IF EXISTS {TRIGGER} ON outboundmessage"))
        conn.execute(text(f"DROP FUNCTION IF EXISTS {FUNCTION}()"))
    else:
        conn.execute(text(f"DROP TRIGGER IF EXISTS {TRIGGER}"))


def in_force(engine: Engine) -> bool:
    """The trigger exists on outboundmessage, so the tally is kept (else the breaker must count exactly)."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            query = text("SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                         "WHERE c.relname = 'outboundmessage' AND t.tgname = :name AND NOT t.tgisinternal "
                         "AND c.relnamespace = to_regnamespace(current_schema())")
        else:
            query = text("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = :name "
                         "AND tbl_name = 'outboundmessage'")
        found = bool(conn.execute(query, {"name": TRIGGER}).scalar_one())
    if not found:
        log(logger, logging.WARNING, "openers tally trigger missing; the circuit breaker counts every opener in "
            "its window (run `textback db upgrade`)", trigger=TRIGGER)
    return found


def in_use(ctx: AppContext) -> bool:
    """The breaker reads the tally first: its trigger is in force (checked at start-up) and the window is one
    the tally keeps."""
    return ctx.opener_tally and ctx.sending_policy.caps.breaker_window_minutes <= MAX_WINDOW_MINUTES


def minute_of(moment: datetime) -> int:
    """The tally's minute for a moment (minutes since the epoch, UTC), as the trigger computes it."""
    return int(moment.timestamp()) // 60


def _delete_before(conn: Connection, cutoff: int) -> int:
    result = conn.execute(text("DELETE FROM openertally WHERE minute < :cutoff"), {"cutoff": cutoff})
    return int(result.rowcount or 0)


def prune(engine: Engine, *, now: datetime, keep: timedelta) -> int:
    """Delete the minutes older than `keep` (never read again: the window is shorter); the rows deleted."""
    with engine.begin() as conn:
        return _delete_before(conn, minute_of(now - keep))
