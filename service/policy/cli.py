"""`textback policy ...`: check the policy files, write the review report, check texts from stdin."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from service.errors import PolicyError

POLICIES_OPTION = click.option(
    "--policies",
    "policies_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("policies"),
    show_default=True,
    help="The policies folder.",
)


@click.group()
def policy() -> None:
    """Compliance policies: validate them, report on them, check texts against them."""


@policy.command()
@POLICIES_OPTION
@click.option(
    "--brokers", "brokers_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="The brokers file whose values are checked too [default: as serve finds it: TEXTBACK_BROKERS_FILE, "
    "brokers.yaml, else brokers.example.yaml].",
)
def check(policies_dir: Path, brokers_file: Path | None) -> None:
    """Validate every policy file and run every example; exit 1 with one finding per line."""
    from pydantic import ValidationError  # noqa: PLC0415

    from service.policy.check import run_check  # noqa: PLC0415
    from service.settings import Settings  # noqa: PLC0415

    optional = False
    if brokers_file is None:
        try:
            brokers_file = Settings().resolved_brokers_file()
        except ValidationError as exc:
            click.echo(f"policy check: the settings are invalid: {exc}", err=True)
            sys.exit(1)
        optional = brokers_file == Path("brokers.yaml")  # nothing configured, nothing to check
    result = run_check(policies_dir, brokers_file=brokers_file, brokers_optional=optional)
    for finding in result.findings:
        click.echo(finding)
    if not result.ok:
        click.echo(f"policy check: {len(result.findings)} finding(s); policy set {result.version}", err=True)
        sys.exit(1)
    click.echo(result.summary())


@policy.command()
@POLICIES_OPTION
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="md", show_default=True)
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout."
)
@click.option("--write-readme", is_flag=True, help="Regenerate POLICIES/README.md (the reviewer's table).")
@click.option("--check-readme", is_flag=True, help="Exit 1 if POLICIES/README.md is not up to date.")
def report(policies_dir: Path, fmt: str, output: Path | None, write_readme: bool, check_readme: bool) -> None:
    """Write the review document for sign-off: version, every rule, every template rendered."""
    from service.policy.report import README_COMMAND, readme_text, render_report  # noqa: PLC0415

    readme = policies_dir / "README.md"
    if write_readme or check_readme:
        expected = readme_text(policies_dir)
        if write_readme:
            readme.write_text(expected, encoding="utf-8")
            click.echo(f"wrote {readme}")
        elif not readme.exists() or readme.read_text(encoding="utf-8") != expected:
            click.echo(f"{readme} is out of date; run `{README_COMMAND}`", err=True)
            sys.exit(1)
        else:
            click.echo(f"{readme} is up to date")
        return
    text = render_report(policies_dir, fmt)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}")


@policy.command("check-text")
@POLICIES_OPTION
def check_text(policies_dir: Path) -> None:
    """Check texts through the output guard: JSON lines in, JSON lines out.

    \b
    Input, one per line:   {"text": "...", "required": {"brokerage": "..."}, "template": "opener"}
                           ("required" and "template" are optional; "template" applies what that template
                           kind must say by code: the opener's NMLS ID, brokerage and opt-out, the help text's
                           NMLS ID and contact)
    Output, one per line:  {"allowed": true|false, "violations": [{"rule": "<id>", "match": "..."}]}
    A malformed line gets  {"error": "..."}.  Blank lines are skipped.
    Exit status: 0 all allowed; 1 at least one blocked; 2 at least one malformed line (wins over 1);
    3 the policies could not be loaded.
    """
    from service.policy.guard import OutputGuard  # noqa: PLC0415

    try:
        guard = OutputGuard.load(policies_dir)
    except PolicyError as exc:
        click.echo(f"policy check-text: {exc}", err=True)
        sys.exit(3)
    blocked = malformed = False
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            text, required, template = _parse_line(line)
        except ValueError as exc:
            malformed = True
            click.echo(json.dumps({"error": str(exc)}))
            continue
        result = guard.check(text, required=required, template=template)
        blocked = blocked or not result.allowed
        violations = [{"rule": v.rule, "match": v.match} for v in result.violations]
        click.echo(json.dumps({"allowed": result.allowed, "violations": violations}))
    if malformed:
        sys.exit(2)
    if blocked:
        sys.exit(1)


def _parse_line(line: str) -> tuple[str, dict[str, str], str | None]:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        msg = f"not JSON: {exc.msg}"
        raise ValueError(msg) from None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        msg = 'expected an object with a string "text"'
        raise ValueError(msg)
    required = data.get("required") or {}
    if not isinstance(required, dict) or not all(isinstance(v, str) for v in required.values()):
        msg = '"required" must map names to strings'
        raise ValueError(msg)
    template = data.get("template")
    if template is not None and not isinstance(template, str):
        msg = '"template" must be a template id'
        raise ValueError(msg)
    unknown = sorted(set(data) - {"text", "required", "template"})
    if unknown:
        msg = f"unknown keys {unknown}"
        raise ValueError(msg)
    return data["text"], required, template
