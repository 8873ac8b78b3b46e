"""`textback policy ...`: check the policy files, sign them off, diff two sets, write the review report, check
texts from stdin."""

from __future__ import annotations

import difflib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from pydantic import ValidationError

from service.brokers import load_brokers, template_values
from service.errors import ConfigError, PolicyError
from service.policy import approvals
from service.policy.approvals import ApprovalState, approve_command
from service.policy.check import CheckResult, run_check
from service.policy.files import display_path, policy_digest
from service.policy.guard import OutputGuard
from service.policy.readme import README_COMMAND, readme_text
from service.policy.report import render_report
from service.policy.report_context import report_context
from service.policy.required_content import REQUIRED_BY_KIND, value_names
from service.resources import is_package_data
from service.settings import Settings, describe_invalid
from service.templates import load_templates

if TYPE_CHECKING:
    from service.brokers import BrokerConfig



def _served_policies_dir(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path:
    """--policies, else the folder serve reads (TEXTBACK_POLICIES_DIR, ./policies, else the shipped copy)."""
    if value is not None:
        return value
    try:
        settings = Settings()
    except ValidationError as exc:
        raise click.ClickException(describe_invalid(exc)) from None
    if not settings.policies_dir.is_dir():
        raise click.ClickException(f"{settings.policies_dir}: no such policies folder (TEXTBACK_POLICIES_DIR)")
    return settings.policies_dir


POLICIES_OPTION = click.option(
    "--policies",
    "policies_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    callback=_served_policies_dir,
    help="The policies folder [default: as serve finds it: TEXTBACK_POLICIES_DIR, ./policies, else the copy "
    "shipped with textback].",
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
    """Validate every policy file and run every example; exit 1 with one finding per line. The last line says
    whether this exact policy-set version is approved (information, not a finding)."""
    result = _run_check("policy check", policies_dir, brokers_file)
    for finding in result.findings:
        click.echo(finding)
    if not result.ok:
        click.echo(f"policy check: {len(result.findings)} finding(s); policy set {result.version}", err=True)
        sys.exit(1)
    click.echo(result.summary())
    if result.approval is not None:
        click.echo(_approval_line(result.approval, policies_dir))


def _run_check(command: str, policies_dir: Path, brokers_file: Path | None) -> CheckResult:
    """`policy check`'s whole validation, with the brokers file serve would read unless one is given."""
    if brokers_file is not None:
        return run_check(policies_dir, brokers_file=brokers_file, brokers_optional=False)
    served = _serves_brokers_file(command)
    optional = served == Path("brokers.yaml")  # nothing configured, nothing to check
    return run_check(policies_dir, brokers_file=served, brokers_optional=optional)


def _serves_brokers_file(command: str) -> Path:
    """The brokers file serve would read (TEXTBACK_BROKERS_FILE, brokers.yaml, else the shipped example); exit 1
    naming the command when the settings are invalid."""
    try:
        return Settings().resolved_brokers_file()
    except ValidationError as exc:
        click.echo(f"{command}: the settings are invalid: {exc}", err=True)
        sys.exit(1)


def _approval_line(state: ApprovalState, policies_dir: Path) -> str:
    line = state.describe()
    if len(state.approvals) > 1:
        line += f" ({len(state.approvals)} sign-offs)"
    if not state.approved:
        line += f"; to sign it off: {approve_command(policies_dir)}"
    return line


@policy.command()
@POLICIES_OPTION
@click.option("--reviewer", required=True, help="Who approves: a name and role, as it should read in the record.")
@click.option("--note", default=None, help="What was reviewed, with whom, any condition (kept with the approval).")
@click.option(
    "--brokers", "brokers_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="The brokers file checked with the policies, as for `policy check`.",
)
def approve(policies_dir: Path, reviewer: str, note: str | None, brokers_file: Path | None) -> None:
    """Sign off the policy set as it is now: record the reviewer, the time and the note against its exact
    version in POLICIES/approvals.yaml. Runs `policy check` first and refuses a set with findings."""
    if is_package_data(policies_dir):
        click.echo(f"policy approve: refused: {policies_dir} is the copy installed with textback (an upgrade "
                   f"replaces it); approve an editable copy: {approve_command(policies_dir)}", err=True)
        sys.exit(1)
    checked = policy_digest(policies_dir)  # what the check below reads; approve refuses if it changes
    result = _run_check("policy approve", policies_dir, brokers_file)
    if not result.ok:
        for finding in result.findings:
            click.echo(finding)
        click.echo(f"policy approve: refused: policy set {result.version} has {len(result.findings)} finding(s) "
                   "(listed above; the same as `textback policy check`); fix them, then approve", err=True)
        sys.exit(1)
    before = result.approval.approvals if result.approval is not None else ()
    try:
        approval = approvals.approve(policies_dir, reviewer=reviewer, note=note, now=datetime.now(UTC),
                                     expected_digest=checked)
    except PolicyError as exc:
        click.echo(f"policy approve: {exc}", err=True)
        sys.exit(1)
    path = approvals.approvals_path(policies_dir)
    click.echo(f"approved policy set {approval.version} (sha256 {approval.digest})")
    click.echo(f"reviewer: {approval.reviewer}; at {approval.approved_at.strftime('%Y-%m-%d %H:%M:%S UTC')}"
               + (f"; note: {approval.note}" if approval.note else ""))
    if before:
        others = ", ".join(dict.fromkeys(a.reviewer for a in before))
        click.echo(f"already approved by {others}: this adds a sign-off ({len(before) + 1} for this version)")
    click.echo(f"wrote {display_path(path, policies_dir)}")


@policy.command("diff")
@click.argument("old")
@click.argument("new")
@click.option("--format", "fmt", type=click.Choice(["text", "md", "json"]), default="text", show_default=True)
def diff_command(old: str, new: str, fmt: str) -> None:
    """What changed from OLD to NEW, in a reviewer's terms, and the examples whose outcome changes.

    OLD and NEW are each a policies directory or a git revision of this repository (a branch, a tag, a
    commit, HEAD~3), whose policies/ folder is read. Exit 0 when the diff was made (it is a report, not a
    check); 2 when a side is neither a directory nor a revision.
    """
    from service.policy.diff import DiffError, diff, render_text  # lazy: compiles the inbound rules

    try:
        result = diff(old, new)
    except DiffError as exc:
        raise click.UsageError(str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps(result.as_json(), indent=2, ensure_ascii=False))
    else:
        click.echo(render_text(result, markdown=fmt == "md"), nl=False)


@policy.command()
@POLICIES_OPTION
@click.option("--format", "fmt", type=click.Choice(["md", "html", "pdf"]), default="md", show_default=True)
@click.option(
    "--brokers", "brokers_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="The brokers file whose brokers' values fill the templates [default: as serve finds it: "
    "TEXTBACK_BROKERS_FILE, brokers.yaml, else brokers.example.yaml (the cover says so)].",
)
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout."
)
@click.option("--write-readme", is_flag=True, help="Regenerate POLICIES/README.md (the reviewer's table).")
@click.option("--check-readme", is_flag=True, help="Exit 1 if POLICIES/README.md is not up to date.")
def report(policies_dir: Path, fmt: str, brokers_file: Path | None, output: Path | None, write_readme: bool,
           check_readme: bool) -> None:
    """Write the reviewer's report for sign-off: cover page with the version and its approval state, every
    rule in plain words with its law and examples, every template rendered with each broker's values, open
    questions for counsel, regular expressions in an appendix.

    \b
    A PDF goes to --output, or to stdout when stdout is not a terminal (`... --format pdf > review.pdf`).
    """
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
    stdout = sys.stdout.buffer
    if fmt == "pdf" and output is None and sys.stdout.isatty():
        click.echo("policy report: a PDF is binary: pass --output FILE (or redirect stdout to a file)", err=True)
        sys.exit(2)
    body = render_report(report_context(policies_dir, brokers_file or _serves_brokers_file("policy report")), fmt)
    if output is None:
        stdout.write(body)
        stdout.flush()
    else:
        output.write_bytes(body)
        click.echo(f"wrote {output} ({len(body):,} bytes)")


@policy.command("check-text")
@POLICIES_OPTION
@click.option(
    "--brokers", "brokers_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="A brokers file to take the values a template kind is checked against (brokerage, NMLS ID) from, "
    "when a line does not give them [default: TEXTBACK_BROKERS_FILE when it is set].",
)
def check_text(policies_dir: Path, brokers_file: Path | None) -> None:
    """Check texts through the output guard: JSON lines in, JSON lines out.

    \b
    Input, one per line:   {"text": "...", "required": {"brokerage": "..."}, "template": "opener",
                            "broker": "+14155550100"}
                           ("required", "template" and "broker" are optional. "template" must be a template
                           id of the policies; it applies what that template kind must say by code: the
                           opener's NMLS ID, brokerage and opt-out, the help text's NMLS ID and contact. The
                           brokerage and NMLS ID it is checked against come from "required", else from the
                           brokers file: its only broker, or the one whose twilio_number is "broker")
    Output, one per line:  {"allowed": true|false, "violations": [{"rule": "<id>", "match": "..."}]}
    A malformed line gets  {"error": "..."}: not JSON, an unknown key or template id, or a template kind's
    values neither given nor found in a brokers file.  Blank lines are skipped.
    Exit status: 0 all allowed; 1 at least one blocked; 2 at least one malformed line (wins over 1);
    3 the policies or the brokers file could not be loaded.
    """

    try:
        guard = OutputGuard.load(policies_dir)
        templates = set(load_templates(policies_dir).templates)
    except PolicyError as exc:
        click.echo(f"policy check-text: {exc}", err=True)
        sys.exit(3)
    brokers = _brokers_for_check_text(brokers_file)
    blocked = malformed = False
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            text, required, template, broker = _parse_line(line)
            required = _template_values(template, required, broker, templates, brokers)
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


def _brokers_for_check_text(brokers_file: Path | None) -> tuple[Path, list[BrokerConfig]] | None:
    """The brokers file `--brokers` names, else TEXTBACK_BROKERS_FILE when set (never the shipped example):
    its path and brokers, or None. Exit 3 when it is given but cannot be read."""
    if brokers_file is None:
        try:
            settings = Settings()
        except ValidationError:
            return None  # the settings are not needed to check texts; values can still be given per line
        if "brokers_file" not in settings.model_fields_set:
            return None
        brokers_file = settings.brokers_file
    try:
        return brokers_file, load_brokers(brokers_file)
    except ConfigError as exc:
        click.echo(f"policy check-text: {exc}", err=True)
        sys.exit(3)


def _closest(template: str, known: set[str]) -> str | None:
    matches = difflib.get_close_matches(template, sorted(known), n=1)
    return matches[0] if matches else None


def _unknown_template(template: str, known: set[str]) -> str:
    folded = {t.casefold(): t for t in known}
    close = folded.get(template.casefold()) or _closest(template, known)
    hint = f'; did you mean "{close}"?' if close else ""
    return f'unknown template "{template}"{hint} (the ids in policies/templates: {", ".join(sorted(known))})'


def _template_values(
    template: str | None, required: dict[str, str], broker: str | None, known: set[str],
    brokers: tuple[Path, list[BrokerConfig]] | None,
) -> dict[str, str]:
    """`required`, completed with what the template kind is checked against; ValueError when it cannot be."""
    if template is not None and template not in known:
        raise ValueError(_unknown_template(template, known))
    if broker is not None and brokers is None:
        msg = '"broker" names a broker of a brokers file: pass --brokers'
        raise ValueError(msg)
    needed = sorted(n for n in value_names(template or "") if not required.get(n, "").strip())
    if not needed:
        return required
    if brokers is None:
        what = {r.value: r.what for r in REQUIRED_BY_KIND[template or ""] if r.value}
        names = " and ".join(what[n] for n in needed)
        were = "they were" if len(needed) > 1 else "it was"
        example = ", ".join(f'"{n}": "..."' for n in needed)
        msg = (f'template "{template}" is checked against the {names} it was rendered with, and {were} not '
               f'given: add "required": {{{example}}} or pass --brokers')
        raise ValueError(msg)
    path, configured = brokers
    if broker is None and len(configured) != 1:
        numbers = ", ".join(b.twilio_number for b in configured)
        msg = f'{path} has {len(configured)} brokers: say which with "broker": "<twilio_number>" ({numbers})'
        raise ValueError(msg)
    by_number = {b.twilio_number: b for b in configured}
    chosen = configured[0] if broker is None else by_number.get(broker)
    if chosen is None:
        msg = f'no broker with twilio_number "{broker}" in {path}'
        raise ValueError(msg)
    values = template_values(chosen)
    return {**required, **{n: values[n] for n in needed}}


def _parse_line(line: str) -> tuple[str, dict[str, str], str | None, str | None]:
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
    broker = data.get("broker")
    if broker is not None and not isinstance(broker, str):
        msg = '"broker" must be a broker\'s twilio_number'
        raise ValueError(msg)
    unknown = sorted(set(data) - {"text", "required", "template", "broker"})
    if unknown:
        msg = f"unknown keys {unknown}"
        raise ValueError(msg)
    return data["text"], required, template, broker
