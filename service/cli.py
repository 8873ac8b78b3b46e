"""The `textback` command line. Sub-commands import their modules lazily so each starts fast."""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command or group; imported only when that command runs.
LAZY_COMMANDS: dict[str, str] = {
    "serve": "service.commands.serve:serve",
    "worker": "service.commands.serve:worker",
    "simulate": "service.commands.simulate:simulate",
    "classify": "service.replies.cli:classify",
    "policy": "service.policy.cli:policy",
    "audit": "service.commands.audit:audit",
    "evals": "service.evals.cli:evals",
    "privacy": "service.commands.privacy:privacy",
    "contacts": "service.commands.contacts:contacts",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(LAZY_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                return None
            raise
        return getattr(module, attr)


@click.group(cls=LazyGroup)
@click.version_option(package_name="textback")
def main() -> None:
    """textback: missed-call text-back for mortgage brokers."""
