"""`textback tokens` (bearer tokens for a broker's CRM) and `textback sessions` (console sign-ins): the
credentials of the API, managed from the command line (reads TEXTBACK_DATABASE_URL)."""

from __future__ import annotations

import click
from sqlalchemy.engine import Engine

from service.api_tokens import active_broker, create_token, list_tokens, revoke_token
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


@click.group()
def tokens() -> None:
    """Bearer tokens for a broker's CRM: create (shown once), list, revoke (reads TEXTBACK_DATABASE_URL)."""


@tokens.command("create")
@click.option("--broker", "broker_number", required=True, help="The broker's Twilio number: the token sees its leads.")
@click.option("--name", default=None, help="What the token is for (e.g. the CRM's name), shown in the list.")
def create(broker_number: str, name: str | None) -> None:
    """Print a new token on stdout, once: only its hash is stored."""
    number = _phone(broker_number, "--broker")
    engine = _engine()
    try:
        with session_scope(engine) as session:
            broker = active_broker(session, number)
            if broker is None:
                raise click.BadParameter(f"no active broker with Twilio number {number} (the brokers file is loaded "
                                         "into the database by `textback serve`)", param_hint="--broker")
            token_id, token = create_token(session, broker=broker, name=name)
    finally:
        engine.dispose()
    click.echo(f"token {token_id} for {number}{f' ({name})' if name else ''}: shown once, store it now", err=True)
    click.echo(token)


@tokens.command("list")
def list_() -> None:
    """Every token: id, broker, name, created, last used, revoked (never the token)."""
    engine = _engine()
    try:
        with session_scope(engine) as session:
            rows = list_tokens(session)
    finally:
        engine.dispose()
    click.echo("id\tbroker\tname\tcreated\tlast_used\trevoked")
    for row in rows:
        times = [t.isoformat(timespec="seconds") if t else "-" for t in (row.created_at, row.last_used_at,
                                                                          row.revoked_at)]
        click.echo("\t".join([str(row.id), row.broker, row.name or "-", *times]))


@tokens.command("revoke")
@click.argument("token_id", metavar="ID", type=click.IntRange(1, 2**63 - 1))
def revoke_cmd(token_id: int) -> None:
    """Revoke token ID at once: the API refuses it from the next request on."""
    engine = _engine()
    try:
        with session_scope(engine) as session:
            row = revoke_token(session, token_id)
            if row is None:
                raise click.BadParameter(f"no token {token_id} (see `textback tokens list`)", param_hint="ID")
    finally:
        engine.dispose()
    click.echo(f"revoked token {token_id}")
