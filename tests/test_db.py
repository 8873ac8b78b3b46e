"""Schema creation and migration of an older database on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect, text

from service.db import create_schema, make_engine, normalize_url


def test_add_missing_column_when_database_is_older(database_url: str) -> None:
    """A database from before migrations (no alembic_version) lacking a column gets it (tests/test_migrations.py
    upgrades the previous release's own databases)."""
    engine = make_engine(database_url)
    create_schema(engine)
    with engine.begin() as conn:
        conn.execute(text('ALTER TABLE "lead" DROP COLUMN "asked"'))
        conn.execute(text("DROP TABLE alembic_version"))
    assert "asked" not in {c["name"] for c in inspect(engine).get_columns("lead")}
    create_schema(engine)
    assert "asked" in {c["name"] for c in inspect(engine).get_columns("lead")}
    engine.dispose()


def test_use_psycopg_driver_for_plain_postgres_url() -> None:
    assert normalize_url("postgresql://u:p@h/db").startswith("postgresql+psycopg://u:p@h/db")
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_read_session_does_not_hold_sqlite_write_lock(tmp_path) -> None:
    """A report reading under read_session leaves the write lock free: a writer that waits at most 100 ms still
    gets in (an ordinary session's BEGIN IMMEDIATE would hold it for the whole read)."""
    import sqlite3

    import pytest
    from sqlmodel import Session, select

    from service.db import read_session
    from service.models import Broker

    engine = make_engine(f"sqlite:///{tmp_path / 't.db'}")
    create_schema(engine)

    def write() -> None:
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("PRAGMA busy_timeout=100")
            cursor.execute("BEGIN IMMEDIATE")
            cursor.execute("ROLLBACK")
        finally:
            raw.close()

    with read_session(engine) as session:
        session.exec(select(Broker)).all()
        write()
    with Session(engine) as session:
        session.exec(select(Broker)).all()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            write()
    engine.dispose()
