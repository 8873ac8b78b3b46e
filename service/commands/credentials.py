"""`textback sessions`: who is signed in to the console, and revoking it (reads TEXTBACK_DATABASE_URL)."""

from __future__ import annotations

import click
from sqlalchemy.engine import Engine

from service.db import MissingDatabase, create_schema, open_database, session_scope
from service.phones import InvalidPhone, mask, to_e164
from service.settings import Settings
from service.signin import revoke_sessions


def _engine() -> Engine:
    try:
        engine = open_database(Settings().database_url)
    except MissingDatabase as exc:
        raise click.ClickException(str(exc)) from None
    create_schema(engine)  # a database made before the console gets its tables (additive)
    return engine


def _phone(value: str, hint: str) -> str:
    try:
        return to_e164(value)
    except InvalidPhone as exc:
        raise click.BadParameter(f"{value!r} is not a phone number ({exc})", param_hint=hint) from None


@click.group()
def sessions() -> None:
    """Console sign-ins: revoke every session of a phone (reads TEXTBACK_DATABASE_URL)."""


@sessions.command("revoke")
@click.option("--phone", required=True, help="The user's phone: every browser signed in with it is signed out.")
def revoke(phone: str) -> None:
    """Sign a phone out everywhere (a lost phone, someone who left the team)."""
    number = _phone(phone, "--phone")
    engine = _engine()
    try:
        with session_scope(engine) as session:
            count = revoke_sessions(session, number)
    finally:
        engine.dispose()
    click.echo(f"revoked {count} session{'' if count == 1 else 's'} of {mask(number)}")
