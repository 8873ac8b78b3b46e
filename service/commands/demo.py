"""`textback demo seed`: fill the default database with a realistic history, so `textback serve` shows a
populated console on a fresh machine. The work is service.demo.seed's; this is its command line."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
from pydantic import ValidationError

from service.db import MissingDatabase, open_database
from service.demo.ownership import lead_counts, refusal
from service.errors import SeedRefused, TextbackError
from service.logs import configure_logging
from service.settings import Settings, describe_invalid


@click.group()
def demo() -> None:
    """Demo data for a fresh machine, made by the service itself (dry-run only)."""


@demo.command("seed")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 366),
              help="How many days of history, up to now.")
@click.option("--seed", "seed_value", default=1, show_default=True, type=int,
              help="The same seed on an empty database gives the same history.")
def seed(days: int, seed_value: int) -> None:
    """Fill the database with a realistic history of calls, replies and follow-ups.

    Synthetic calls and replies go through the real webhooks of an in-process service in dry-run, each at its
    own moment of the last --days days (the clock is moved there): for each broker of the brokers file, calls
    through the day (more at lunch and after 17:00, fewer at weekends), some answered, most missed; each missed
    caller gets the opener, then replies (purchase, refinance, timelines, rate-lock and closing questions that
    need a person), silence, or STOP; some call again; and a person of the team texts back or records an
    outcome through the leads API minutes to hours later, or never. Callers are fictional 555-01XX numbers.

    Refuses (exit status 1) with Twilio credentials (it would text real people), with CRM webhooks in the
    brokers file, and on a database holding any lead it did not create: it only fills an empty database, or
    one it seeded itself. Run again on a database it seeded, it adds the history since the last run's last call
    or event (with the same --seed, the days it already played are never played twice; nothing is added when
    no call falls in between).
    """
    began = time.perf_counter()
    try:
        settings = Settings()
    except ValidationError as exc:
        raise click.ClickException(describe_invalid(exc)) from None
    # Both refusals that need no service come first: nothing is created or migrated on a database refused.
    why = _refused_before_start(settings)
    if why:
        raise click.ClickException(f"refused: {why}")
    from service.context import build_context  # lazy: ~2 s to import; --help and a refusal need none of it
    from service.demo.seed import seed as run_seed  # lazy: the app and the worker, ~2.6 s; as above
    from service.demo.seed import seed_settings  # lazy: as above

    configure_logging("WARNING")  # this process serves the app; its INFO lines would bury the summary
    with tempfile.TemporaryDirectory(prefix="textback-demo-spool-") as spool:
        try:
            ctx = build_context(seed_settings(settings, Path(spool)))
        except TextbackError as exc:
            raise click.ClickException(str(exc)) from None
        try:
            summary = run_seed(ctx, days=days, seed=seed_value)
        except SeedRefused as exc:
            raise click.ClickException(f"refused: {exc}") from None
        except TextbackError as exc:  # a policy or template the output guard refuses, found at start-up
            raise click.ClickException(str(exc)) from None
        finally:
            ctx.close()
    if summary.skipped:
        click.echo(f"nothing to add: no call between the demo history's end ({summary.start:%Y-%m-%d %H:%M} UTC) "
                   "and now")
        return
    summary.seconds = time.perf_counter() - began  # start-up included: what the user waited
    for line in summary.lines():
        click.echo(line)
    click.echo("start the service (`textback serve`) and open /console")


def _refused_before_start(settings: Settings) -> str | None:
    """Credentials, or leads the seed did not make, found without starting the service."""
    try:
        engine = open_database(settings.database_url)
    except MissingDatabase:
        return refusal(settings, other_leads=0, brokers=[])
    try:
        _, other = lead_counts(engine)
    finally:
        engine.dispose()
    return refusal(settings, other_leads=other, brokers=[])
