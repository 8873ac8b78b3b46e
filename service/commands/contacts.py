"""`textback contacts`: the do-not-text list of known contacts (staff, existing clients, partners)."""

from __future__ import annotations

import click
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from service.db import create_schema, make_engine
from service.models import Broker, DoNotText
from service.phones import InvalidPhone, mask, to_e164
from service.settings import get_settings


def _engine() -> Engine:
    engine = make_engine(get_settings().database_url)
    create_schema(engine)
    return engine


def _phone(value: str) -> str:
    try:
        return to_e164(value)
    except InvalidPhone as exc:
        raise click.BadParameter(str(exc)) from None


def _broker_id(session: Session, twilio_number: str | None) -> int | None:
    if twilio_number is None:
        return None
    broker = session.exec(select(Broker).where(Broker.twilio_number == _phone(twilio_number))).first()
    if broker is None:
        raise click.BadParameter(f"no broker with Twilio number {twilio_number}", param_hint="--broker")
    return broker.id


@click.group()
def contacts() -> None:
    """Numbers never to text automatically."""


@contacts.command("add")
@click.argument("phone")
@click.option(
    "--broker", "broker_number", default=None, help="Only for this broker's Twilio number (default: all)."
)
@click.option("--note", default=None)
def add(phone: str, broker_number: str | None, note: str | None) -> None:
    """Add a number to the do-not-text list."""
    number = _phone(phone)
    with Session(_engine()) as session:
        row = DoNotText(phone=number, broker_id=_broker_id(session, broker_number), note=note, source="api")
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            click.echo(f"{mask(number)} is already on the list")
            return
    click.echo(f"added {mask(number)}")


@contacts.command("remove")
@click.argument("phone")
def remove(phone: str) -> None:
    """Remove a number (every broker scope) from the do-not-text list."""
    number = _phone(phone)
    with Session(_engine()) as session:
        rows = session.exec(select(DoNotText).where(DoNotText.phone == number)).all()
        for row in rows:
            session.delete(row)
        session.commit()
    click.echo(f"removed {len(rows)} entr{'y' if len(rows) == 1 else 'ies'} for {mask(number)}")


@contacts.command("list")
def list_() -> None:
    """Print the list (numbers in full: this is the operator's own data)."""
    with Session(_engine()) as session:
        for row in session.exec(select(DoNotText).order_by(DoNotText.phone)):
            scope = "all brokers" if row.broker_id is None else f"broker {row.broker_id}"
            click.echo(f"{row.phone}\t{scope}\t{row.source}\t{row.note or ''}")
