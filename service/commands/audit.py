"""`textback audit export`: the history of texts, decisions, opt-outs and calls for an examiner."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from service.audit import COLUMNS, export, parse_when
from service.audit_conversations import Filters, UnknownBroker
from service.audit_render import FORMATS, export_conversations
from service.db import MissingDatabase, open_database
from service.errors import PolicyError
from service.phones import InvalidPhone, to_e164
from service.sending.opt_out_policy import load_opt_out_policy
from service.settings import Settings

LAYOUTS = ("conversation", "flat")


class When(click.ParamType[datetime]):
    """YYYY-MM-DD or an ISO-8601 date-time (UTC when no zone is given)."""

    name = "DATE"

    def __init__(self, *, end_of_day: bool = False) -> None:
        self.end_of_day = end_of_day

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_when(str(value), end_of_day=self.end_of_day)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Phone(click.ParamType[str]):
    """A phone number in any usual format, normalized to E.164 (US when no country code is given)."""

    name = "NUMBER"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return to_e164(str(value))
        except InvalidPhone as exc:
            self.fail(f"{value!r} is {exc} (try +14155550199 or (415) 555-0199)", param, ctx)


@click.group()
def audit() -> None:
    """Audit trail exports (reads TEXTBACK_DATABASE_URL)."""


@audit.command("export")
@click.option("--since", type=When(), default=None,
              help="First day (YYYY-MM-DD, UTC) or ISO-8601 instant, inclusive. Optional with --phone or --lead "
                   "(then: the whole history).")
@click.option(
    "--until",
    type=When(end_of_day=True),
    default=None,
    help="Last day, inclusive (YYYY-MM-DD), or an ISO-8601 instant, exclusive. Default: now.",
)
@click.option("--layout", type=click.Choice(LAYOUTS), default="conversation", show_default=True,
              help="conversation: each lead's full history in order; flat: the 38-column table of earlier "
                   "versions (csv or jsonl, no filters).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True)
@click.option("--broker", "brokers", multiple=True, type=Phone(), help="A broker's Twilio number (repeatable).")
@click.option("--phone", "phones", multiple=True, type=Phone(), help="A borrower's number, any format (repeatable).")
@click.option("--lead", "leads", multiple=True, type=click.IntRange(1, 2**63 - 1), help="A lead id (repeatable).")
@click.option(
    "--output",
    "-o",
    default="-",
    show_default=True,
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    help="A file, or - for stdout.",
)
@click.option(
    "--mask-phones", is_flag=True, help="Mask every borrower number, e.g. +1******0199 (brokers' stay)."
)
def export_command(  # one parameter per option
    since: datetime | None, until: datetime | None, layout: str, fmt: str, brokers: tuple[str, ...],
    phones: tuple[str, ...], leads: tuple[int, ...], output: str, mask_phones: bool,
) -> None:
    """The audit trail. By conversation (the default): one row per event of each lead's history in order
    (calls, texts in and out with each gate verdict and its reason, reply decisions, deliveries, people's
    actions and outcomes, opt-outs, alerts), as CSV, JSON lines or one readable HTML page. Filters: --broker,
    --phone, --lead (a filter given twice means either; different filters must all hold). In CSV, free text
    starting like a spreadsheet formula is prefixed with an apostrophe."""
    if since is None and not (phones or leads):
        raise click.UsageError("Missing option '--since' (it may be left out only with --phone or --lead: "
                               "their whole history)")
    if since is not None and until is not None and until <= since:
        raise click.BadParameter("must be after --since", param_hint="--until")
    if layout == "flat" and (brokers or phones or leads or fmt == "html"):
        raise click.UsageError("--layout flat is the earlier table: csv or jsonl, without --broker, --phone, "
                               "--lead (use the conversation layout for those)")
    if layout == "flat" and since is None:
        raise click.UsageError("Missing option '--since'")
    settings = Settings()
    try:
        scope = load_opt_out_policy(settings.policies_dir).scope
    except PolicyError as exc:
        raise click.ClickException(f"the opt-out scope could not be read: {exc}") from None
    try:
        engine = open_database(settings.database_url)
    except MissingDatabase as exc:
        raise click.ClickException(str(exc)) from None

    def run(stream: Any) -> str:
        if layout == "flat" and since is not None:
            count = export(engine, stream, since=since, until=until, fmt=fmt, mask_phones=mask_phones)
            return f"{count} event(s), {len(COLUMNS)} columns"
        filters = Filters(brokers=brokers, phones=phones, leads=leads, since=since, until=until, opt_out_scope=scope)
        events, conversations = export_conversations(engine, stream, filters=filters, fmt=fmt,
                                                     mask_phones=mask_phones)
        return f"{events} event(s) in {conversations} conversation(s)"

    try:
        if output == "-":
            stream = click.open_file("-", "w")  # click's stdout text stream, left open
            said = run(stream)
            stream.flush()
        else:
            said = _export_to_file(Path(output), run)
    except UnknownBroker as exc:
        raise click.BadParameter(str(exc), param_hint="--broker") from None
    finally:
        engine.dispose()
    where = "stdout" if output == "-" else output
    click.echo(f"audit export: {said}, {fmt} -> {where}{' (phones masked)' if mask_phones else ''}", err=True)


def _export_to_file(path: Path, run: Callable[[Any], str]) -> str:
    """Write next to the target and rename, so an interrupted export never leaves half a file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            said = run(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return said
