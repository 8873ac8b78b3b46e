"""Migrations (service.migrations): a database made by the previous release, with its rows, is upgraded by
`textback db upgrade` on SQLite and PostgreSQL and ends with every constraint and index of the models; a fresh
database upgraded from nothing is the models; processes starting together upgrade once.

The previous release's databases are SQL dumps under tests/fixtures/migrations (see its README to make them
again). Each PostgreSQL test uses a database of its own (textback_migr_<pid>_<n>), dropped afterwards."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import UniqueConstraint, bindparam, create_engine, func, inspect, text
from sqlalchemy import table as table_named
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select

from service import opener_tally
from service.cli import main
from service.db import make_engine, normalize_url
from service.migrations.baseline import baseline_metadata
from service.migrations.runner import head_revision, schema_status
from service.models import OpenerTally, OutboundMessage
from tests.helpers import BROKER, CALLER, REPO

FIXTURES = Path(__file__).parent / "fixtures" / "migrations"
POSTGRES_URL = os.environ.get("TEXTBACK_TEST_POSTGRES_URL")
DIALECTS = ["sqlite", pytest.param("postgres", marks=[
    pytest.mark.postgres, pytest.mark.skipif(not POSTGRES_URL, reason="TEXTBACK_TEST_POSTGRES_URL is not set")])]
TABLES = sorted(t.name for t in SQLModel.metadata.sorted_tables)  # the baseline's and every later revision's
# Tables later revisions create: an upgraded older database has them, empty.
LATER_TABLES = {name: 0 for name in set(TABLES) - {t.name for t in baseline_metadata().sorted_tables}}
_numbers = itertools.count()

# The previous release's database as an older one would have it (the dump edited before loading, then altered):
# the duplicate-text protection's unique constraint on outboundmessage.dedupe_key never added, lead.language
# missing, lead.asked added later as a nullable column with NULLs, and no leadcase table (from before cases).
OLDER_DUMP_EDITS = {
    "sqlite": [("\tUNIQUE (dedupe_key), \n", "")],
    "postgres": [("ALTER TABLE ONLY public.outboundmessage\n    ADD CONSTRAINT outboundmessage_dedupe_key_key "
                  "UNIQUE (dedupe_key);\n", "")],
}
OLDER_ALTERATIONS = [
    'ALTER TABLE "lead" DROP COLUMN "language"',
    'ALTER TABLE "lead" DROP COLUMN "asked"',
    'ALTER TABLE "lead" ADD COLUMN "asked" {json}',
    'DROP TABLE "leadcase"',
]


@pytest.fixture(params=DIALECTS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of this test's own: a SQLite file, or a new PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migr.db'}"
        return
    base = make_url(normalize_url(POSTGRES_URL or ""))
    name = f"textback_migr_{os.getpid()}_{next(_numbers)}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _kind(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgres"


def load_previous_release(url: str, *, older: bool = False) -> None:
    """The previous release's database, rows and all, into the empty database at `url` (older: see above)."""
    kind = _kind(url)
    dump = (FIXTURES / f"prev_release.{kind}.sql").read_text(encoding="utf-8")
    for old, new in OLDER_DUMP_EDITS[kind] if older else []:
        assert old in dump, "the fixture changed: update OLDER_DUMP_EDITS"
        dump = dump.replace(old, new)
    alterations = [a.format(json="JSON" if kind == "sqlite" else "json") for a in OLDER_ALTERATIONS] if older else []
    if kind == "sqlite":
        with sqlite3.connect(make_url(url).database or "") as conn:
            conn.executescript(dump)
            for statement in alterations:
                conn.execute(statement)
        return
    with psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as conn:
        conn.execute(dump)  # type: ignore[arg-type] - a dump of our own, not user input
        conn.execute("RESET search_path")  # the dump empties it
        for statement in alterations:
            conn.execute(statement)  # type: ignore[arg-type]


def dump_rows(kind: str, table: str) -> int:
    """How many rows of `table` the previous release's dump holds."""
    prefix = f'INSERT INTO "{table}" ' if kind == "sqlite" else f"INSERT INTO public.{table} "
    return sum(line.startswith(prefix) for line in (FIXTURES / f"prev_release.{kind}.sql").open(encoding="utf-8"))


def row_counts(engine: Engine) -> dict[str, int]:
    present = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        return {t: conn.execute(select(func.count()).select_from(table_named(t))).scalar_one() for t in TABLES if t in present}


def differences(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata))


def assert_schema_is_the_models(engine: Engine) -> None:
    """Alembic finds nothing to change, and every unique constraint, index and NOT NULL of the models is there
    under its name (inspected, not trusted), at this release's head revision."""
    assert differences(engine) == []
    inspector = inspect(engine)
    for table in SQLModel.metadata.sorted_tables:
        uniques = {u["name"]: sorted(u["column_names"]) for u in inspector.get_unique_constraints(table.name)}
        for constraint in table.constraints:
            if isinstance(constraint, UniqueConstraint):
                assert uniques.get(str(constraint.name)) == sorted(c.name for c in constraint.columns), constraint.name
        indexes = {i["name"]: (i["column_names"], bool(i["unique"])) for i in inspector.get_indexes(table.name)}
        for index in table.indexes:
            assert indexes.get(index.name) == ([c.name for c in index.columns], bool(index.unique)), index.name
        nullable = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
        assert nullable == {c.name: c.nullable for c in table.columns if not c.primary_key} | {
            c.name: nullable[c.name] for c in table.columns if c.primary_key}, table.name
    status = schema_status(engine)
    assert (status.current, status.up_to_date) == (head_revision(), True)


def db_cli(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["db", *args], env={"TEXTBACK_DATABASE_URL": url})
    return result.exit_code, result.output


def missed_call_texts_opener(request: pytest.FixtureRequest) -> None:
    """The service started on the upgraded database (the test's `database_url`) texts a missed caller once."""
    client, post, twilio_api = (request.getfixturevalue(n) for n in ("client", "post", "twilio_api"))
    params = {"CallSid": "CA" + "7" * 32, "From": CALLER, "To": BROKER, "DialCallStatus": "no-answer"}
    for _ in range(2):  # Twilio's retry: the unique constraints keep it one text
        assert post(client, "/twilio/voice/dial-status", params).status_code == 200
    assert [dict(httpx.QueryParams(c.request.content.decode()))["To"]
            for c in twilio_api["messages"].calls] == [CALLER]


@pytest.fixture
def database_url(empty_url: str) -> str:
    """The `settings`/`ctx`/`client` fixtures of conftest run on this test's own database."""
    return empty_url


def test_upgrade_previous_release_database_keeps_rows_and_gains_every_constraint(
        empty_url: str, request: pytest.FixtureRequest) -> None:
    """The previous release's database (its rows included) upgraded by `textback db upgrade` ends exactly as the
    models say, with every row kept, and the service then answers a signed missed-call webhook on it."""
    load_previous_release(empty_url)
    engine = make_engine(empty_url)
    before = row_counts(engine)
    assert before["outboundmessage"] > 20
    assert before["leadevent"] > 50
    assert schema_status(engine).legacy
    code, output = db_cli(empty_url, "upgrade")
    assert code == 0, output
    assert "made before migrations: brought to the baseline" in output
    assert f"upgraded: none -> {head_revision()}" in output
    assert_schema_is_the_models(engine)
    after = row_counts(engine)
    tally_rows = after.pop("openertally")
    assert after == before | {name: 0 for name in LATER_TABLES if name != "openertally"}
    assert_tally_holds_recent_openers(engine, tally_rows)
    assert db_cli(empty_url, "upgrade") == (0, f"database: {make_url(empty_url).render_as_string()}\n"
                                                f"already at {head_revision()} (head)\n")
    engine.dispose()
    missed_call_texts_opener(request)


def assert_tally_holds_recent_openers(engine: Engine, tally_rows: int) -> None:
    """The migration tallied the borrower openers already stored in the last two days (service.opener_tally), one
    row per minute and shard they fall in, so the breaker's bound holds from the first read after the upgrade."""
    since = datetime.now(UTC) - opener_tally.KEEP
    with Session(engine) as session:
        openers = session.exec(select(OutboundMessage).where(
            OutboundMessage.purpose == "opener", OutboundMessage.audience == "borrower",
            col(OutboundMessage.created_at) >= since)).all()
        tallied = session.exec(select(func.coalesce(func.sum(OpenerTally.n), 0))).one()
    assert tallied == len(openers)
    assert tally_rows == len({(opener_tally.minute_of(m.created_at), (m.id or 0) % opener_tally.SHARDS)
                              for m in openers})


def test_upgrade_older_database_adds_missing_unique_constraint_column_and_cases(
        empty_url: str, request: pytest.FixtureRequest) -> None:
    """An older shape (no unique dedupe_key, no lead.language, a nullable lead.asked with NULLs, no cases) gets
    them all: the duplicate-text protection holds again, NULLs are filled, the report's cases made from history
    (as many as the previous release had kept up to date)."""
    load_previous_release(empty_url, older=True)
    engine = make_engine(empty_url)
    before = row_counts(engine)
    assert "leadcase" not in before
    assert differences(engine)
    code, output = db_cli(empty_url, "upgrade")
    assert code == 0, output
    cases = dump_rows(_kind(empty_url), "leadcase")
    assert cases > 0
    assert f"report cases made from the lead history: {cases}" in output
    assert_schema_is_the_models(engine)
    after = row_counts(engine)
    tally_rows = after.pop("openertally")
    assert after == before | {"leadcase": cases} | {name: 0 for name in LATER_TABLES if name != "openertally"}
    assert_tally_holds_recent_openers(engine, tally_rows)
    with engine.connect() as conn:
        assert conn.execute(text('SELECT count(*) FROM "lead" WHERE asked IS NULL')).scalar_one() == 0
    with Session(engine) as session:
        first = session.exec(select(OutboundMessage).where(OutboundMessage.dedupe_key != None)).first()  # noqa: E711
        assert first is not None
        session.add(OutboundMessage.model_validate(first.model_dump(exclude={"id"})))
        with pytest.raises(IntegrityError, match="dedupe_key"):
            session.commit()
    engine.dispose()
    missed_call_texts_opener(request)


def test_upgrade_refuses_duplicate_texts_and_changes_nothing(empty_url: str) -> None:
    """Rows that would break the unique constraint stop the upgrade with the table, column and counts, before
    anything changes (exit status 1): still no version, the missing column still missing."""
    load_previous_release(empty_url, older=True)
    engine = make_engine(empty_url)
    with engine.begin() as conn:
        ids = conn.execute(text("SELECT id FROM outboundmessage ORDER BY id LIMIT 3")).scalars().all()
        conn.execute(text("UPDATE outboundmessage SET dedupe_key = 'same' WHERE id IN :ids")
                     .bindparams(bindparam("ids", expanding=True)), {"ids": list(ids)})
    code, output = db_cli(empty_url, "upgrade")
    assert code == 1
    assert "outboundmessage(dedupe_key): 1 value(s) appear more than once, in 3 rows" in output
    assert "nothing was changed" in output
    inspector = inspect(engine)
    assert not inspector.has_table("alembic_version")
    assert not inspector.has_table("leadcase")
    assert "language" not in {c["name"] for c in inspector.get_columns("lead")}
    engine.dispose()


def test_upgrade_fresh_database_equals_models(empty_url: str) -> None:
    """A database upgraded from nothing is exactly the models. This test fails when a model gains (or loses) a
    column, constraint or index without a revision: add one with `textback db revision -m ...`."""
    code, output = db_cli(empty_url, "upgrade")
    assert code == 0, output
    assert f"upgraded: none -> {head_revision()}" in output
    engine = make_engine(empty_url)
    assert_schema_is_the_models(engine)
    assert sorted(set(inspect(engine).get_table_names()) - {"alembic_version"}) == TABLES
    engine.dispose()
    code, output = db_cli(empty_url, "current", "--check")
    assert (code, output.splitlines()[1:]) == (0, [f"current: {head_revision()}", f"head: {head_revision()}",
                                                   "up to date"])


def test_current_check_on_missing_sqlite_file_makes_no_database(tmp_path: Path) -> None:
    """A mistyped path is reported as no database, and no folder or empty file is left behind."""
    missing = tmp_path / "typo" / "textback.db"
    code, output = db_cli(f"sqlite:///{missing}", "current", "--check")
    assert code == 1
    assert f"current: none (no file at {missing})" in output
    assert "behind: run `textback db upgrade`" in output
    assert not missing.parent.exists()


def test_current_check_fails_on_database_made_before_migrations(empty_url: str) -> None:
    load_previous_release(empty_url)
    code, output = db_cli(empty_url, "current", "--check")
    assert code == 1
    assert "current: none (tables made before migrations)" in output
    assert "behind: run `textback db upgrade`" in output


@pytest.mark.slow
def test_start_up_upgrades_once_when_processes_start_together(empty_url: str, tmp_path: Path,
                                                              brokers_file: Path) -> None:
    """Four processes start at the same moment on the previous release's database: one upgrades it under the
    lock, the other three wait and find it at head; all start, and the schema is the models."""
    load_previous_release(empty_url)
    go = tmp_path / "go"
    children = [
        subprocess.Popen([sys.executable, "-m", "tests.migration_children", empty_url, str(brokers_file),
                          str(tmp_path / f"spool{n}"), str(go)], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.ready.*"))) < len(children):  # every child imported the service and waits
        assert time.monotonic() < deadline, "the children did not get ready"
        time.sleep(0.05)
    go.touch()
    results = []
    for child in children:
        out, err = child.communicate(timeout=90)
        assert child.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    upgrades = sorted((str(r["upgrade"]["before"]), r["upgrade"]["changed"]) for r in results)
    assert upgrades == [(head_revision(), False)] * 3 + [("None", True)]
    assert all(r["brokers"] == 2 for r in results)
    engine = make_engine(empty_url)
    assert_schema_is_the_models(engine)
    engine.dispose()


def test_upgrade_refuses_database_from_newer_release(empty_url: str) -> None:
    """A database stamped by a release newer than this one is left alone with a message (exit status 1)."""
    assert db_cli(empty_url, "upgrade")[0] == 0
    engine = make_engine(empty_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    code, output = db_cli(empty_url, "upgrade")
    assert code == 1
    assert "at revision 9999, which this release of textback does not know" in output
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "9999"
    engine.dispose()
