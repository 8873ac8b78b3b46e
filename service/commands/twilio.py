"""`textback twilio configure`: point each broker number's webhooks (voice, status, messaging, both fallbacks) at
TEXTBACK_PUBLIC_URL through the Twilio API, changing only the fields that differ."""

from __future__ import annotations

import sys
from typing import NoReturn

import click
import httpx
from pydantic import ValidationError
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from service.brokers import load_brokers
from service.errors import ConfigError
from service.settings import Settings, describe_invalid, public_url_problem
from service.twilio.numbers import FieldChange, NumberSetup, apply_changes, find_number, twilio_client


def _refuse(reason: str) -> NoReturn:
    click.echo(f"twilio configure: refused: {reason}", err=True)
    sys.exit(1)


@click.group()
def twilio() -> None:
    """Twilio account set-up: point the broker numbers' webhooks at this deployment."""


@twilio.command()
@click.option("--number", "numbers", multiple=True, metavar="+1...",
              help="Only this broker number (repeatable) [default: every broker's twilio_number].")
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
def configure(numbers: tuple[str, ...], dry_run: bool) -> None:
    """Set each broker number's voice, status, messaging and fallback webhooks to TEXTBACK_PUBLIC_URL.

    Fetches each number first and updates only the fields that differ, printing `NUMBER field: old -> new` per
    change or `NUMBER unchanged`; running it again changes nothing. Refuses (exit 1, nothing changed) without
    Twilio credentials, with a public URL that is not https, or when a number is not on the account.
    """
    try:
        settings = Settings()
    except ValidationError as exc:
        _refuse(describe_invalid(exc))
    if settings.dry_run:
        _refuse("no Twilio credentials (set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)")
    problem = public_url_problem(settings.public_url)
    if problem is not None:
        _refuse(f"{problem}: set it to the https address Twilio calls")
    path = settings.resolved_brokers_file()
    try:
        brokers = [b.twilio_number for b in load_brokers(path)]
    except ConfigError as exc:
        _refuse(str(exc))
    unknown = [n for n in numbers if n not in brokers]
    if unknown:
        _refuse(f"{', '.join(unknown)} is not a broker's twilio_number in {path}")
    chosen = list(dict.fromkeys(numbers or brokers))
    client, http = twilio_client(settings)
    try:
        plan = _plan(client, chosen, settings)
        for setup, changes in plan:
            if not dry_run:
                apply_changes(client, setup, changes)  # printed once Twilio took it
            for change in changes:
                click.echo(f"{setup.phone} {change.describe()}")
            if not changes:
                click.echo(f"{setup.phone} unchanged")
    except TwilioRestException as exc:
        _refuse(f"Twilio answered HTTP {exc.status} (error {exc.code}): {exc.msg}"
                + ("; check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN" if exc.status == 401 else ""))
    except httpx.TransportError as exc:
        _refuse(f"cannot reach the Twilio API at {settings.twilio_api_url} ({type(exc).__name__})")
    finally:
        http.close()
    changed = sum(len(changes) for _, changes in plan)
    if dry_run:
        click.echo(f"dry run: nothing changed; {changed} field(s) on {len(plan)} number(s) would change")
    else:
        click.echo(f"twilio configure: {changed} field(s) changed on {len(plan)} number(s)")


def _plan(client: Client, chosen: list[str], settings: Settings) -> list[tuple[NumberSetup, list[FieldChange]]]:
    """Every chosen number fetched and compared before anything is changed: one missing refuses them all."""
    plan = []
    for phone in chosen:
        setup = find_number(client, phone)
        if setup is None:
            _refuse(f"{phone} is not a number of account {settings.twilio_account_sid}")
        plan.append((setup, setup.changes(settings.public_url)))
    return plan
