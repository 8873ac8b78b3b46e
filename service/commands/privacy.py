"""`textback privacy`: forget a number on request, purge conversations past the retention period."""

from __future__ import annotations

import click
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service.audit import mask_phone
from service.db import MissingDatabase, open_database
from service.models import Broker
from service.phones import InvalidPhone, to_e164
from service.privacy import forget_number, purge_older_than
from service.settings import Settings


def _engine() -> Engine:
    try:
        return open_database(Settings().database_url)
    except MissingDatabase as exc:
        raise click.ClickException(str(exc)) from None


def _show(counts: dict[str, int]) -> None:
    for key, value in counts.items():
        click.echo(f"{key}: {value}")


@click.group()
def privacy() -> None:
    """Borrower data: forget a number, purge old conversations (reads TEXTBACK_DATABASE_URL)."""


@privacy.command()
@click.argument("number")
@click.option(
    "--broker",
    "broker_number",
    default=None,
    help="Only this broker's data (the broker's Twilio number); default: every broker.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def forget(number: str, broker_number: str | None, yes: bool) -> None:
    """Delete everything stored about NUMBER (leads, texts, replies, decisions, calls).

    The opt-out record and its history are kept, so a forgotten number that opted out stays opted out."""
    try:
        phone = to_e164(number)
    except InvalidPhone as exc:
        raise click.BadParameter(f"{number!r} is not a phone number ({exc})", param_hint="NUMBER") from None
    engine = _engine()
    try:
        broker_id = None
        if broker_number is not None:
            try:
                broker_e164 = to_e164(broker_number)
            except InvalidPhone:
                raise click.BadParameter(
                    f"{broker_number!r} is not a phone number", param_hint="--broker"
                ) from None
            with Session(engine) as session:
                broker = session.exec(select(Broker).where(Broker.twilio_number == broker_e164)).first()
            if broker is None:
                raise click.BadParameter(f"no broker with Twilio number {broker_e164}", param_hint="--broker")
            broker_id = broker.id
        scope = f" for broker {broker_number}" if broker_number else ""
        if not yes:
            click.confirm(
                f"Delete everything stored about {mask_phone(phone)}{scope}? Opt-out records are kept.",
                abort=True,
                err=True,
            )
        counts = forget_number(engine, phone, broker_id=broker_id)
    finally:
        engine.dispose()
    click.echo(f"forgot {mask_phone(phone)}{scope} (opt-out records kept)", err=True)
    _show(counts)


@privacy.command()
@click.option(
    "--older-than-days",
    "days",
    type=click.IntRange(min=1),
    default=None,
    help="Delete conversations with no activity for this many days (default: TEXTBACK_RETENTION_DAYS).",
)
def purge(days: int | None) -> None:
    """Delete conversations past the retention period, with their texts, decisions and calls.

    Opt-out records stay, and conversations with work still pending are left alone."""
    if days is None:
        days = Settings().retention_days
        if days is None:
            raise click.UsageError("give --older-than-days N (or set TEXTBACK_RETENTION_DAYS)")
        if days < 1:
            raise click.UsageError("TEXTBACK_RETENTION_DAYS must be at least 1")
    engine = _engine()
    try:
        counts = purge_older_than(engine, days)
    finally:
        engine.dispose()
    click.echo(f"purged conversations with no activity for {days} day(s) (opt-out records kept)", err=True)
    _show(counts)
