"""The `textback` command line: the table of sub-commands, each imported only when it runs.

`textback --help` lists the commands from the table's one-line summaries, so it imports none of them (the
service, guardrails, openai and SQLModel cost over a second to import); `textback CMD ...` imports CMD's
module alone. tests/test_structure.py checks each summary against its command's docstring.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

import click


class LazyCommand(NamedTuple):
    target: str  # "module:attribute" of a click command or group
    summary: str  # the first line of the command's help, shown by `textback --help` without importing it


COMMANDS: dict[str, LazyCommand] = {
    "serve": LazyCommand(
        "service.commands.serve:serve",
        "Run the service (creates or migrates the tables, loads the brokers file).",
    ),
    "worker": LazyCommand(
        "service.commands.serve:worker",
        "Run only the background worker (sends due texts, processes replies) against the database.",
    ),
    "simulate": LazyCommand(
        "service.commands.simulate:simulate",
        "Send signed webhooks to a running service (--url) or to an in-process one.",
    ),
    "demo": LazyCommand(
        "service.commands.demo:demo",
        "Demo data for a fresh machine, made by the service itself (dry-run only).",
    ),
    "classify": LazyCommand(
        "service.replies.cli:classify",
        'Analyse borrower replies: JSON lines {"text", "received_at"?} on stdin, one analysis per line out.',
    ),
    "policy": LazyCommand(
        "service.policy.cli:policy",
        "Compliance policies: validate them, report on them, check texts against them.",
    ),
    "policies": LazyCommand(
        "service.commands.policies:policies",
        "The policy files shipped with textback: export an editable copy for a compliance team.",
    ),
    "audit": LazyCommand(
        "service.commands.audit:audit",
        "Audit trail exports (reads TEXTBACK_DATABASE_URL).",
    ),
    "evals": LazyCommand(
        "service.evals.cli:evals",
        "Measured accuracy and safety: the labelled replies and the outbound red-team set.",
    ),
    "privacy": LazyCommand(
        "service.commands.privacy:privacy",
        "Borrower data: forget a number, purge old conversations (reads TEXTBACK_DATABASE_URL).",
    ),
    "sessions": LazyCommand(
        "service.commands.credentials:sessions",
        "Console sign-ins: revoke every session of a phone (reads TEXTBACK_DATABASE_URL).",
    ),
    "tokens": LazyCommand(
        "service.commands.credentials:tokens",
        "Bearer tokens for a broker's CRM: create (shown once), list, revoke (reads TEXTBACK_DATABASE_URL).",
    ),
    "contacts": LazyCommand(
        "service.commands.contacts:contacts",
        "Numbers never to text automatically.",
    ),
    "report": LazyCommand(
        "service.commands.report:report",
        "Is text-back enough? Missed calls, replies, time to a person, repeat calls and the verdict (reads "
        "TEXTBACK_DATABASE_URL).",
    ),
    "doctor": LazyCommand(
        "service.commands.doctor:doctor",
        "Check what a deployment needs: settings, database, policies, Twilio number set-up, A2P 10DLC, LLM.",
    ),
    "twilio": LazyCommand(
        "service.commands.twilio:twilio",
        "Twilio account set-up: point the broker numbers' webhooks at this deployment.",
    ),
    "db": LazyCommand(
        "service.commands.db:db",
        "Database schema migrations: upgrade to this release, show the revision, add one.",
    ),
    "brokers": LazyCommand(
        "service.commands.brokers:brokers",
        "The brokers file: check it, and apply it to the running service without a restart.",
    ),
    "webhooks": LazyCommand(
        "service.commands.webhooks:webhooks",
        "CRM webhook deliveries: list them, retry a failed one (reads TEXTBACK_DATABASE_URL).",
    ),
}


def load_command(name: str) -> click.Command | None:
    """Import the module behind `name` and return its click command (None for an unknown name)."""
    entry = COMMANDS.get(name)
    if entry is None:
        return None
    module_name, _, attr = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None
        raise
    command = getattr(module, attr)
    if not isinstance(command, click.Command):
        raise TypeError(f"{entry.target} is not a click command")
    return command


class InputError(click.ClickException):
    """A value given on the command line that the command cannot use: one line, exit status 2 (as click's own)."""

    exit_code = 2


class LazyGroup(click.Group):
    """A group whose sub-commands come from COMMANDS, imported on first use. A failure that the user's input or
    environment causes (a number or date past what can be stored, a file that cannot be written, an invalid
    setting) ends in one line instead of a traceback; anything else still shows its traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as exc:
            if exc.filename is None:
                raise
            raise click.ClickException(f"cannot use {exc.filename}: {exc.strerror or type(exc).__name__}") from None
        except click.ClickException:
            raise
        except Exception as exc:
            from pydantic import ValidationError  # lazy: only a failing command needs it

            from service.errors import out_of_range  # lazy: `textback --help` imports none of the service
            from service.settings import describe_invalid  # lazy: as above

            if out_of_range(exc):
                raise InputError("a number or date given is out of range") from None
            if isinstance(exc, ValidationError) and exc.title == "Settings":
                raise click.ClickException(describe_invalid(exc)) from None
            raise

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own layout, from the table's summaries instead of the imported commands."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [
            (name, click.Command(name, help=COMMANDS[name].summary).get_short_help_str(limit))
            for name in names
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(package_name="textback")
def main() -> None:
    """textback: missed-call text-back for mortgage brokers."""
