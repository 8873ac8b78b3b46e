"""`textback evals run`: score the reply classifier and the output guard against the eval sets.

Exit status: 0 when every threshold holds (or a replay run is skipped for want of a cassette), 1 when any
threshold is broken (each one is listed), 2 when the run cannot start or a replay meets an unrecorded request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from service.errors import TextbackError
from service.evals.cassette import CassetteError
from service.evals.datasets import DatasetError
from service.evals.render import markdown_lines, table_lines
from service.evals.report import markdown, table
from service.evals.runner import EvalConfigError, RunConfig, run
from service.evals.thresholds import ThresholdError
from service.logs import configure_logging

if TYPE_CHECKING:
    from service.evals.runner import LLMMode

REPO = Path(__file__).resolve().parents[2]


@click.group()
def evals() -> None:
    """Measured accuracy and safety: the labelled replies and the outbound red-team set."""


@evals.command("run")
@click.option(
    "--llm",
    type=click.Choice(["none", "replay", "live"]),
    default="none",
    show_default=True,
    help="none: rules only; replay: answer the LLM from the recorded cassette; live: call it and record.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a Markdown report here.",
)
@click.option(
    "--thresholds",
    "thresholds_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Default: <data>/thresholds.yaml.",
)
@click.option(
    "--policies",
    "policies_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO / "policies",
    show_default="policies/",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO / "evals",
    show_default="evals/",
)
@click.option("--cassette", default="replies", show_default=True, help="Cassette name in <data>/cassettes/.")
@click.option("--no-guard", is_flag=True, help="Skip the outbound red-team set (and the guardrails import).")
@click.option("--no-conversations", is_flag=True, help="Skip the multi-turn conversation scripts.")
def run_command(  # one parameter per option
    llm: LLMMode,  # click.Choice admits only these
    report_path: Path | None,
    thresholds_path: Path | None,
    policies_dir: Path,
    data_dir: Path,
    cassette: str,
    no_guard: bool,  # a click flag
    no_conversations: bool,  # a click flag
) -> None:
    """Run the eval sets and hold the result against the thresholds."""
    # This process runs the service in-process for the conversation scripts: it logs as `textback serve` does,
    # at WARNING, so stdout and stderr carry the eval's figures and real problems only.
    configure_logging("WARNING")
    config = RunConfig(
        data_dir=data_dir,
        policies_dir=policies_dir,
        llm=llm,
        thresholds_path=thresholds_path,
        cassette=cassette,
        environ=dict(os.environ),
        run_guard=not no_guard,
        run_conversations=not no_conversations,
    )
    try:
        result = run(config)
    except (DatasetError, ThresholdError, CassetteError, EvalConfigError, TextbackError) as exc:
        click.echo(f"evals: {exc}", err=True)
        raise SystemExit(2) from None

    conversations = result.conversations
    click.echo(table(result) + ("\n" + "\n".join(table_lines(conversations)) if conversations else ""))
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        text = markdown(result)
        if conversations is not None:
            text = text.rstrip("\n") + "\n\n" + "\n".join(markdown_lines(conversations))
        report_path.write_text(text, encoding="utf-8")
        click.echo(f"report written to {report_path}")
    if not result.ok:
        raise SystemExit(1)
