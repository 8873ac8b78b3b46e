"""`textback report`: is text-back enough? The sufficiency report from the database, for the operator or the broker."""

from __future__ import annotations

import json
from pathlib import Path

import click

from service.db import MissingDatabase, open_database, read_session
from service.errors import PolicyError
from service.report import ReportError, report_for
from service.settings import Settings
from service.sufficiency import load_sufficiency


@click.command()
@click.option("--broker", default=None, help="Only this broker (its textback number); default every active one.")
@click.option("--since", default=None, help="YYYY-MM-DD (start of that day) or an ISO datetime; default 30 days "
              "before --until.")
@click.option("--until", default=None, help="YYYY-MM-DD (that day included) or an ISO datetime; default now.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "html"]), default="text", show_default=True,
              help="html: one self-contained page (charts inline) to forward to a manager.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here instead of stdout.")
def report(broker: str | None, since: str | None, until: str | None, fmt: str, output: Path | None) -> None:
    """Is text-back enough? Missed calls, replies, time to a person, repeat calls and the verdict (reads TEXTBACK_DATABASE_URL)."""
    settings = Settings()
    try:
        rule = load_sufficiency(settings.policies_dir)
        engine = open_database(settings.database_url)
    except (MissingDatabase, PolicyError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        with read_session(engine) as session:
            figures = report_for(session, rule=rule, visible=None, broker=broker, since=since, until=until)
    except ReportError as exc:
        name, _, message = str(exc).partition(": ")
        raise click.BadParameter(message, param_hint=f"--{name}") from None
    finally:
        engine.dispose()
    if fmt == "json":
        text = json.dumps(figures, indent=2) + "\n"
    else:
        from service.report_render import (  # lazy: Jinja2 and the charting library only for these formats
            render_html,
            render_text,
        )

        text = render_text(figures) if fmt == "text" else render_html(figures, standalone=True)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
