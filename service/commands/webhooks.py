"""`textback webhooks`: the CRM webhook delivery log for the operator: list deliveries, retry a failed one."""

from __future__ import annotations

import click
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service import crm_deliveries
from service.db import MissingDatabase, open_database
from service.errors import ApiError
from service.models import Broker
from service.phones import InvalidPhone, to_e164
from service.settings import Settings

COLUMNS = ("id", "created_at", "broker", "event", "status", "attempts", "response_status", "next_attempt_at",
           "delivered_at", "url", "last_error")


def _engine() -> Engine:
    try:
        return open_database(Settings().database_url)
    except MissingDatabase as exc:
        raise click.ClickException(str(exc)) from None


def _broker_id(session: Session, number: str) -> int:
    try:
        e164 = to_e164(number)
    except InvalidPhone:
        raise click.BadParameter(f"{number!r} is not a phone number (the broker's Twilio number)",
                                 param_hint="--broker") from None
    broker = session.exec(select(Broker).where(Broker.twilio_number == e164)).first()
    if broker is None or broker.id is None:
        raise click.BadParameter(f"no broker with Twilio number {e164}", param_hint="--broker")
    return broker.id


@click.group()
def webhooks() -> None:
    """CRM webhook deliveries: list them, retry a failed one (reads TEXTBACK_DATABASE_URL)."""


@webhooks.command("list")
@click.option("--status", type=click.Choice(crm_deliveries.STATUSES), default=None, help="Only this status.")
@click.option("--broker", "broker_number", default=None, help="Only this broker (its Twilio number).")
@click.option("--limit", type=click.IntRange(1, crm_deliveries.MAX_LIMIT), default=crm_deliveries.DEFAULT_LIMIT,
              show_default=True)
def list_command(status: str | None, broker_number: str | None, limit: int) -> None:
    """Deliveries newest first, tab-separated under a header line (never the bodies: they hold borrower data)."""
    engine = _engine()
    try:
        with Session(engine) as session:
            broker_id = _broker_id(session, broker_number) if broker_number else None
            items, next_cursor = crm_deliveries.list_deliveries(session, principal=None, status=status,
                                                         broker_id=broker_id, limit=limit)
    finally:
        engine.dispose()
    click.echo("\t".join(COLUMNS))
    for item in items:
        click.echo("\t".join("" if item[c] is None else str(item[c]) for c in COLUMNS))
    if next_cursor:
        click.echo(f"(newest {limit} shown; --limit shows more)", err=True)


@webhooks.command("retry")
@click.argument("delivery", type=click.IntRange(1, 2**63 - 1), metavar="ID")
def retry_command(delivery: int) -> None:
    """Put failed delivery ID (the id column of `list`) back in the queue; the service sends it on its next
    sweep, signed with the secret the brokers file gives its URL then."""
    engine = _engine()
    try:
        with Session(engine) as session:
            try:
                item = crm_deliveries.retry(session, delivery, principal=None, actor="cli")
            except ApiError as exc:
                raise click.ClickException(str(exc)) from None
            session.commit()
    finally:
        engine.dispose()
    click.echo(f"delivery {item['id']} ({item['event']} to {item['url']}) queued again")
