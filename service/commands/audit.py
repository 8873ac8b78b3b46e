"""`textback audit export`: the history of texts, decisions, opt-outs and calls for an examiner."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from service.audit import COLUMNS, FORMATS, export, parse_when
from service.db import MissingDatabase, open_database
from service.settings import Settings


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


@click.group()
def audit() -> None:
    """Audit trail exports (reads TEXTBACK_DATABASE_URL)."""


@audit.command("export")
@click.option(
    "--since", required=True, type=When(), help="First day (YYYY-MM-DD, UTC) or ISO-8601 instant, inclusive."
)
@click.option(
    "--until",
    type=When(end_of_day=True),
    default=None,
    help="Last day, inclusive (YYYY-MM-DD), or an ISO-8601 instant, exclusive. Default: now.",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True)
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
def export_command(since: datetime, until: datetime | None, fmt: str, output: str, mask_phones: bool) -> None:
    """One row per event, in time order: outbound texts, inbound messages, decisions, opt-out events, calls
    and delivery callbacks. CSV has a fixed header (event_type + every field, empty where not applicable);
    in CSV only, free text starting like a spreadsheet formula is prefixed with an apostrophe."""
    if until is not None and until <= since:
        raise click.BadParameter("must be after --since", param_hint="--until")
    try:
        engine = open_database(Settings().database_url)
    except MissingDatabase as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if output == "-":
            stream = click.open_file("-", "w")  # click's stdout text stream, left open
            count = export(engine, stream, since=since, until=until, fmt=fmt, mask_phones=mask_phones)
            stream.flush()
        else:
            count = _export_to_file(
                engine, Path(output), since=since, until=until, fmt=fmt, mask_phones=mask_phones
            )
    finally:
        engine.dispose()
    where = "stdout" if output == "-" else output
    click.echo(
        f"audit export: {count} event(s), {len(COLUMNS)} columns, {fmt} -> {where}"
        f"{' (phones masked)' if mask_phones else ''}",
        err=True,
    )


def _export_to_file(engine: Any, path: Path, **options: Any) -> int:
    """Write next to the target and rename, so an interrupted export never leaves half a file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            count = export(engine, handle, **options)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count
