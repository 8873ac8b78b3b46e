"""Schema creation and additive migration on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect, text

from service.db import create_schema, make_engine, normalize_url


def test_add_missing_column_when_database_is_older(database_url: str) -> None:
    engine = make_engine(database_url)
    create_schema(engine)
    with engine.begin() as conn:
        conn.execute(text('ALTER TABLE "lead" DROP COLUMN "asked"'))
    assert "asked" not in {c["name"] for c in inspect(engine).get_columns("lead")}
    create_schema(engine)
    assert "asked" in {c["name"] for c in inspect(engine).get_columns("lead")}
    engine.dispose()


def test_use_psycopg_driver_for_plain_postgres_url() -> None:
    assert normalize_url("postgresql://u:p@h/db").startswith("postgresql+psycopg://u:p@h/db")
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"
