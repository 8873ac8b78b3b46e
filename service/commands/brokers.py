"""`textback brokers`: check the brokers file, and apply it to the running service without a restart.

Both read the file the service reads (TEXTBACK_BROKERS_FILE, brokers.yaml, else brokers.example.yaml) and check
it as start-up does, the output guard included (importing guardrails takes seconds). `reload` then applies it
(service.broker_reload); every running process holds the new set after its next poll.
"""

from __future__ import annotations

import click
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from service.broker_reload import CheckedFile, check_file, load_guard, reload_file
from service.broker_set import Applied, changes_between, latest_generation
from service.db import MissingDatabase, open_database
from service.errors import TextbackError
from service.migrations.runner import schema_status
from service.models import Broker
from service.settings import Settings, describe_invalid, get_settings
from service.templates import load_templates


def _settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        raise click.ClickException(describe_invalid(exc)) from None


def _engine(settings: Settings) -> Engine:
    """The service's database as it is: never created or migrated here (a rolling upgrade's new CLI must not
    change the schema under the processes still serving); `textback db upgrade` does that."""
    try:
        engine = open_database(settings.database_url)
    except MissingDatabase as exc:
        raise click.ClickException(f"{exc} (or `textback db upgrade`)") from None
    status = schema_status(engine)
    if not status.up_to_date:
        engine.dispose()
        raise click.ClickException(f"the database schema is at revision {status.current or 'none'}, this release's "
                                   f"is {status.head}: run `textback db upgrade` first")
    return engine


def _header(checked: CheckedFile) -> str:
    return f"{checked.path}: {len(checked.configs)} brokers, sha256 {checked.sha256[:12]}"


def applied_lines(checked: CheckedFile, applied: Applied) -> list[str]:
    """What `brokers reload` prints: the file, each broker added, removed or changed, and the generation."""
    if not applied.written:
        return [_header(checked), f"no change: generation {applied.generation} already holds this file"]
    return [_header(checked), *applied.changes.lines(),
            f"generation {applied.generation} applied; running processes take it up at their next poll"]


@click.group()
def brokers() -> None:
    """The brokers file: check it, and apply it to the running service without a restart."""


@brokers.command("check")
def check() -> None:
    """Check the brokers file as start-up does and say what a reload would change (writes nothing)."""
    settings = _settings()
    path = settings.resolved_brokers_file()
    try:
        check_file(path, None, None)  # the schema first: refused in a second, before guardrails loads
        checked = check_file(path, load_guard(settings), load_templates(settings.policies_dir))
    except TextbackError as exc:
        raise click.ClickException(str(exc)) from None
    engine = _engine(settings)
    try:
        with Session(engine) as session:
            changes = changes_between(list(session.exec(select(Broker)).all()), checked.configs)
        latest = latest_generation(engine)
    finally:
        engine.dispose()
    click.echo(_header(checked))
    for line in changes.lines():
        click.echo(line)
    held = latest.generation if latest is not None else 0
    if not changes and latest is not None and latest.sha256 == checked.sha256:
        click.echo(f"ok: generation {held} holds this file")
    else:
        click.echo(f"ok: `textback brokers reload` would apply it as generation {held + 1}")


@brokers.command("reload")
def reload() -> None:
    """Check the brokers file and apply it: every running process takes it up within a poll."""
    settings = _settings()
    try:
        check_file(settings.resolved_brokers_file(), None, None)  # the schema first: refused in a second
        guard = load_guard(settings)
        templates = load_templates(settings.policies_dir)
        engine = _engine(settings)
        try:
            checked, applied = reload_file(settings, engine, guard, templates, source="brokers reload")
        finally:
            engine.dispose()
    except TextbackError as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        raise click.ClickException(f"the database could not be used (TEXTBACK_DATABASE_URL): {type(exc).__name__}; "
                                   "nothing was applied") from None
    for line in applied_lines(checked, applied):
        click.echo(line)
