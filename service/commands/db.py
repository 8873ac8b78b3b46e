"""`textback db`: the database schema's migrations (service.migrations): upgrade, show the revision, add one."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import click
from alembic import command
from alembic.script import Script
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from service.db import display_url, make_engine, normalize_url
from service.errors import MigrationRefused
from service.migrations.runner import alembic_config, head_revision, schema_status, upgrade_database
from service.settings import Settings, describe_invalid


def _database_url() -> str:
    """TEXTBACK_DATABASE_URL, or one line naming each invalid setting (never a value: it may hold a password)."""
    try:
        return Settings().database_url
    except ValidationError as exc:
        raise click.ClickException(describe_invalid(exc)) from None


def _missing_sqlite_file(url: str) -> str | None:
    """The SQLite file `url` names when it does not exist (None: it does, or the database is not a file)."""
    parsed = make_url(normalize_url(url))
    path = parsed.database
    if not parsed.drivername.startswith("sqlite") or not path or path == ":memory:" or Path(path).exists():
        return None
    return path


@click.group()
def db() -> None:
    """Database schema migrations: upgrade to this release, show the revision, add one."""


@db.command()
def upgrade() -> None:
    """Bring the database (TEXTBACK_DATABASE_URL) to this release's schema; prints from and to which revision.

    The service does the same at start-up, under the same lock. A database made before migrations is first
    brought to the baseline (missing columns, unique constraints and indexes added) and stamped; rows that
    would break a unique constraint stop it before anything changes (exit status 1)."""
    url = _database_url()
    engine = make_engine(url)
    try:
        result = upgrade_database(engine)
    except MigrationRefused as exc:
        raise click.ClickException(str(exc)) from None
    except OperationalError as exc:
        raise click.ClickException(f"cannot reach the database at {display_url(url)}: {exc.orig}") from None
    finally:
        engine.dispose()
    click.echo(f"database: {display_url(url)}")
    if result.created_tables or result.changed_tables:
        click.echo("made before migrations: brought to the baseline "
                   f"({len(result.created_tables)} tables created, {len(result.changed_tables)} altered) and stamped")
    if result.cases_made is not None:
        click.echo(f"report cases made from the lead history: {result.cases_made}")
    if result.before == result.after:
        click.echo(f"already at {result.after} (head)")
    else:
        click.echo(f"upgraded: {result.before or 'none'} -> {result.after}")


@db.command()
@click.option("--check", is_flag=True, help="Exit with status 1 unless the database is at this release's head.")
def current(check: bool) -> None:
    """Show the database's revision and this release's newest (head)."""
    url = _database_url()
    missing = _missing_sqlite_file(url)
    if missing is not None:  # read, never made: a mistyped path must not leave an empty database behind
        click.echo(f"database: {display_url(url)}\ncurrent: none (no file at {missing})\nhead: {head_revision()}")
        click.echo("behind: run `textback db upgrade`")
        if check:
            raise SystemExit(1)
        return
    engine = make_engine(url)
    try:
        status = schema_status(engine)
    except SQLAlchemyError as exc:
        raise click.ClickException(f"cannot read the database at {display_url(url)}: {type(exc).__name__}") from None
    finally:
        engine.dispose()
    if status.current is not None:
        now = status.current
    elif status.legacy:
        now = "none (tables made before migrations)"
    else:
        now = "none (empty database)"
    click.echo(f"database: {display_url(url)}\ncurrent: {now}\nhead: {status.head}")
    click.echo("up to date" if status.up_to_date else "behind: run `textback db upgrade`")
    if check and not status.up_to_date:
        raise SystemExit(1)


@db.command()
@click.option("-m", "--message", required=True, help="What the revision changes, e.g. 'lead: add note'.")
@click.option("--merge", is_flag=True, help="Join two heads (two branches that each added a revision) instead.")
def revision(message: str, merge: bool) -> None:
    """Write a new revision under service/migrations/versions from the models' changes (for developers).

    It compares service/models.py with a scratch SQLite database upgraded to the current head, so no database
    of yours is needed or touched. Read the file it writes before committing it."""
    heads = alembic_config()
    script: Script | list[Script | None] | None
    with tempfile.TemporaryDirectory(prefix="textback-revision-") as scratch:
        engine = make_engine(f"sqlite:///{Path(scratch) / 'head.db'}")
        try:
            if merge:
                script = command.merge(heads, "heads", message=message, rev_id=_next_id())
            else:
                upgrade_database(engine)
                with engine.connect() as conn:
                    script = command.revision(alembic_config(conn), message=message, autogenerate=True,
                                              rev_id=_next_id())
        finally:
            engine.dispose()
    for written in script if isinstance(script, list) else [script]:
        if written is not None:
            click.echo(f"wrote {written.path}")


def _next_id() -> str:
    """The next four-digit revision id after the newest numbered one (0002 after 0001)."""
    numbers = [int(m.group(1)) for p in (Path(alembic_config().get_main_option("script_location") or ".") / "versions")
               .glob("*.py") if (m := re.match(r"(\d{4})_", p.name))]
    return f"{max(numbers, default=0) + 1:04d}"

