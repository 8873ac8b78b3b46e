"""Running the migrations: `upgrade_database` (start-up and `textback db upgrade`), `schema_status` (`textback db
current`, read-only commands), and the Alembic configuration made in code from this package's folder.

One transaction does it all, under a lock, so processes starting together take turns and the later ones find
the database at head: on PostgreSQL `pg_advisory_xact_lock` (DDL is transactional there), on SQLite the
database's own write lock (BEGIN IMMEDIATE, waited for again after busy_timeout until LOCK_WAIT_SECONDS).
On SQLite foreign keys are off meanwhile (a table rebuilt by a batch operation or the baseline adoption is
dropped and renamed under its children), and checked once the schema changed."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from service import cases
from service.errors import MigrationRefused
from service.logs import log
from service.migrations.baseline import BASELINE_REVISION, baseline_metadata
from service.migrations.legacy import adopt

logger = logging.getLogger("textback.migrations")

HERE = Path(__file__).resolve().parent
LOCK_KEY = 0x74657874_6261636B  # "textback": the advisory lock every textback process takes to migrate
LOCK_WAIT_SECONDS = 600.0  # SQLite: how long a process waits for another's migration before giving up


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, in code: this package's folder as the script location (works from a wheel)."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("version_locations", str(HERE / "versions"))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migration revisions in {HERE / 'versions'}")
    return head


@dataclass
class SchemaStatus:
    """Where a database is: its revision (None: not managed yet), this release's head, whether it holds
    textback tables made before migrations (then the first upgrade adopts them)."""

    current: str | None
    head: str
    legacy: bool

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


@dataclass
class Upgrade:
    """What upgrade_database did: from which revision (None: none) to which, and the baseline adoption."""

    before: str | None
    after: str
    created_tables: list[str] = field(default_factory=list)  # by the adoption of a pre-migration database
    changed_tables: list[str] = field(default_factory=list)
    cases_made: int | None = None  # the report's cases made from history (the adoption created their table)

    @property
    def changed(self) -> bool:
        return self.before != self.after or bool(self.created_tables or self.changed_tables)


@functools.cache
def _baseline_tables() -> frozenset[str]:
    return frozenset(t.name for t in baseline_metadata().sorted_tables)  # built once: 23 tables take ~50 ms


def _textback_tables(conn: Connection) -> frozenset[str]:
    return _baseline_tables() & set(sa.inspect(conn).get_table_names())


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def schema_status(engine: Engine) -> SchemaStatus:
    with engine.connect() as conn:
        current = _current(conn)
        legacy = current is None and bool(_textback_tables(conn))
    return SchemaStatus(current=current, head=head_revision(), legacy=legacy)


def _begin_locked(conn: Connection) -> None:
    """Begin the migration transaction holding the migration lock (waits for another process's migration)."""
    if conn.dialect.name != "sqlite":
        conn.begin()
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        return
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            conn.begin()  # BEGIN IMMEDIATE (service.db): the write lock, waited for up to busy_timeout
            return
        except OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            conn.rollback()


def _migrate(conn: Connection) -> Upgrade:
    before = _current(conn)
    head = head_revision()
    result = Upgrade(before=before, after=head)
    tables = _textback_tables(conn)
    if before is not None and not tables:
        # Version recorded but every table gone (dropped by hand, or a test's drop_all): made again from nothing.
        conn.exec_driver_sql("DROP TABLE alembic_version")
        before = result.before = None
    if before is None and tables:
        done = adopt(conn, baseline_metadata())
        result.created_tables, result.changed_tables = done.created_tables, done.changed_tables
        command.stamp(alembic_config(conn), BASELINE_REVISION)
    if before != head or result.created_tables:
        try:
            command.upgrade(alembic_config(conn), "head")
        except CommandError as exc:
            raise MigrationRefused(
                f"the database is at revision {before}, which this release of textback does not know (made by a "
                f"newer one?); its newest is {head}: {exc}") from None
    if "leadcase" in result.created_tables:
        # The report's cases are made once from the lead history already recorded (the ORM is at head now).
        with Session(bind=conn) as session:
            result.cases_made = cases.rebuild(session)
            session.flush()
    return result


def upgrade_database(engine: Engine) -> Upgrade:
    """Bring the database to this release's newest revision (adopting a pre-migration one first), under the
    migration lock; a database already there is left alone. MigrationRefused when it cannot be done as it is."""
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:  # outside any transaction, where the pragma takes effect
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            _begin_locked(conn)
            result = _migrate(conn)
            if sqlite and result.changed:
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    log(logger, logging.WARNING, "rows refer to rows that are not there", count=len(broken),
                        tables=sorted({str(row[0]) for row in broken}))
            conn.commit()
        finally:
            if conn.in_transaction():
                conn.rollback()
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
    if result.changed:
        log(logger, logging.INFO, "database upgraded", before=result.before or "none", after=result.after,
            created=len(result.created_tables), changed=len(result.changed_tables), cases=result.cases_made)
    return result
