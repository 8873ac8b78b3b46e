"""`textback doctor`: the deployment checklist (service.doctor), printed, with exit status 1 when a check failed."""

from __future__ import annotations

import sys

import click

from service.doctor.run import exit_code, render, run_doctor


@click.command()
def doctor() -> None:
    """Check what a deployment needs: settings, database, policies, Twilio number set-up, A2P 10DLC, LLM.

    Each line is ok, warning, failed or skipped, with the fix under it. Exit 0 when nothing failed (warnings
    allowed), 1 when a check failed. Reads the same settings as `textback serve`; never prints the auth token.
    """
    lines = run_doctor()
    for line in render(lines):
        click.echo(line)
    sys.exit(exit_code(lines))
