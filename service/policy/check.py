"""`textback policy check`: validate every policy file and run every example; one finding per line.

What is checked:
- every file under policies/: header (id, kind, title, rationale), unique ids, the reviewer's plain-language
  fields (`summary` always, `cites` when the rationale cites law, no TODO or counsel question left in the text
  the report shows: service.policy.review_fields), and its kind's strict schema
  (outbound rules here; inbound rules, templates and the sending policy by their owners' loaders);
- the compliance manifest (policies/outbound/required.yaml): every required rule present, at its minimum
  severity; a missing or empty manifest is a finding;
- every outbound example through the real OutputGuard: a must_match example must be blocked *by its own
  rule*, a must_not_match example must pass the whole guard, and each of the manifest's examples must be blocked
  by the rule it lists, and the floor fixed in code (service.policy.floor: each text blocked by a rule the
  manifest requires; a finding names the category the policy set no longer covers); the same run start-up
  does, service.policy.selftest;
- every inbound and sending-policy example (the opt-out scope's brokerage examples included) through its
  owner's `example_findings()`, the report's verdict
  rule (policies/reporting/sufficiency.yaml) on its own examples, and the examples of
  the policy for a person's own texts (policies/sending/human.yaml) through the OutputGuard;
- the retention policy (policies/retention/retention.yaml): valid (communications at least Regulation N's 24
  months, opt-outs for good), its purge examples, and every table of the schema in exactly one category;
- every template rendered with sample broker data: borrower-facing ones through the OutputGuard with their
  required values (brokerage, NMLS ID) and their kind's required content, plus the template set's own
  findings (GSM-7, length);
- the brokers file serve would read (TEXTBACK_BROKERS_FILE, brokers.yaml, else brokers.example.yaml; or
  `--brokers`): every broker's values through the guard, alone and rendered into every borrower template;
  a finding names the file and the line of the value; under the opt-out scope `brokerage`, a broker without a
  company NMLS ID whose brokerage name is that of a broker with one;
- policies/approvals.yaml (service.policy.approvals), when present, is readable; whether this exact version
  is approved is reported (`CheckResult.approval`), never a finding: approving is a person's act.

A kind whose owning module is missing is a finding, not a silent skip.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.brokers import load_brokers
from service.errors import ConfigError, PolicyError
from service.policy.approvals import ApprovalState, approval_state
from service.policy.broker_values import broker_findings
from service.policy.files import LoadedRule, display_path, outbound_rules, policy_version, read_policy_files
from service.policy.floor import FLOOR
from service.policy.manifest import load_manifest, manifest_findings
from service.policy.review_fields import header_findings
from service.policy.selftest import run_examples
from service.sending.opt_out_policy import brokerage_findings, load_opt_out_policy
from service.templates import load_templates


@dataclass
class CheckResult:
    """Findings (each one a failure) and counts for the summary line."""
    findings: list[str] = field(default_factory=list)
    version: str = ""
    files: int = 0
    rules: int = 0
    must_match: int = 0
    must_not_match: int = 0
    floor: int = 0
    templates: int = 0
    checked: list[str] = field(default_factory=list)
    approval: ApprovalState | None = None  # None: policies/approvals.yaml could not be read (a finding)

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        parts = [
            f"{self.files} policy files",
            f"{self.rules} outbound rules "
            f"({self.must_match} must_match, {self.must_not_match} must_not_match examples)",
            f"{self.floor} floor texts fixed in code",
            f"{self.templates} borrower templates through the guard",
            *self.checked,
        ]
        return f"policy check: ok: {', '.join(parts)}; policy set {self.version}"


def _quote(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


def _describe(violations: list[Any]) -> str:
    return ", ".join(f"{v.rule} ({_quote(v.match)})" for v in violations)


def _missing(policies_dir: Path, folder: str, module: str, what: str) -> str:
    return f"{display_path(policies_dir / folder, policies_dir)}: {module} is missing; {what} not checked"


def _owner(module: str, attr: str) -> Callable[..., Any] | None:
    """The owning module's loader, or None when that module does not exist (yet)."""
    try:
        loader: Callable[..., Any] = getattr(importlib.import_module(module), attr)
        return loader
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return None
        raise


def check_outbound_examples(guard: Any, rules: list[LoadedRule], manifest: Any = None) -> list[str]:
    """Run every example of every outbound rule, and the manifest's own, through the guard."""
    failures, _ = run_examples(guard, rules, manifest)
    return [failure.check_line() for failure in failures]


def check_templates(guard: Any, policies_dir: Path, result: CheckResult) -> list[str]:
    """Render every template with sample data; borrower texts go through the guard with required values."""
    load_templates = _owner("service.templates", "load_templates")
    if load_templates is None:
        return [_missing(policies_dir, "templates", "service.templates", "templates")]
    try:
        template_set = load_templates(policies_dir)
    except PolicyError as exc:
        return [str(exc)]
    findings: list[str] = list(getattr(template_set, "findings", lambda: [])())
    sources = getattr(template_set, "sources", {})
    for rendered in template_set.sample_renders():
        if rendered.audience != "borrower":
            continue
        result.templates += 1
        verdict = guard.check(rendered.text, required=rendered.required, template=rendered.template_id)
        if not verdict.allowed:
            source = sources.get(rendered.template_id)
            if getattr(rendered, "language", "en") != "en" and hasattr(template_set, "source_of"):
                source = template_set.source_of(rendered)
            where = display_path(Path(source), policies_dir) if source else "policies/templates"
            findings.append(
                f"{where}: template {rendered.template_id} rendered with sample data was blocked by "
                f"{_describe(verdict.violations)}: {_quote(rendered.text)}"
            )
    return findings


def check_brokers(guard: Any, policies_dir: Path, path: Path, result: CheckResult, *, optional: bool) -> list[str]:
    """The brokers file as serve reads it: valid, and every value through the guard, alone and rendered."""
    if optional and not path.exists():
        result.checked.append(f"no brokers file ({path}): broker values not checked")
        return []
    try:
        brokers = load_brokers(path)
    except ConfigError as exc:
        return [str(exc)]

    try:
        template_set = load_templates(policies_dir)
    except PolicyError:
        template_set = None  # reported by check_templates; the values are still checked alone
    result.checked.append(f"brokers file {path} ({len(brokers)} brokers)")
    return broker_findings(guard, template_set, brokers, path) + opt_out_scope_findings(policies_dir, brokers, path)


def opt_out_scope_findings(policies_dir: Path, brokers: list[Any], path: Path) -> list[str]:
    """Under the opt-out scope `brokerage`: a broker without a company NMLS ID that has the brokerage name of a
    broker with one (they would be two brokerages; service.sending.opt_out_policy)."""
    try:
        policy = load_opt_out_policy(policies_dir)
    except PolicyError:
        return []  # reported by the sending policy's own check
    if policy.scope != "brokerage":
        return []
    return [f"{path}: {finding}" for finding in brokerage_findings(brokers)]


def check_inbound(policies_dir: Path, result: CheckResult) -> list[str]:
    load_rules = _owner("service.replies.rules", "load_rules")
    if load_rules is None:
        return [_missing(policies_dir, "inbound", "service.replies.rules", "inbound rules")]
    try:
        rule_set = load_rules(policies_dir)
    except PolicyError as exc:
        return [str(exc)]
    result.checked.append("inbound rules and examples")
    findings = list(rule_set.example_findings())
    if rule_set.speller.examples:
        result.checked.append("spelling vocabulary and examples")
        findings += rule_set.speller.example_findings()
    if rule_set.scopes:
        result.checked.append("scopes and examples")
        for scope in rule_set.scopes.values():
            findings += scope.example_findings()
    return findings


def check_sending(policies_dir: Path, result: CheckResult) -> list[str]:
    load_sending_policy = _owner("service.sending.policy", "load_sending_policy")
    if load_sending_policy is None:
        return [_missing(policies_dir, "sending", "service.sending.policy", "sending policy")]
    try:
        policy = load_sending_policy(policies_dir, check_examples=False)
    except PolicyError as exc:
        return [str(exc)]
    result.checked.append("sending policy and examples")
    return list(policy.example_findings())


def check_human(guard: Any, policies_dir: Path, result: CheckResult) -> list[str]:
    """policies/sending/human.yaml: valid, and its examples flagged or passed by the real guard as it says."""
    load_human_policy = _owner("service.sending.human_policy", "load_human_policy")
    if load_human_policy is None:
        return [_missing(policies_dir, "sending", "service.sending.human_policy", "a person's texts policy")]
    try:
        policy = load_human_policy(policies_dir)
    except PolicyError as exc:
        return [str(exc)]
    result.checked.append("a person's texts policy and examples")
    return list(policy.example_findings(guard))


def check_sufficiency(policies_dir: Path, result: CheckResult) -> list[str]:
    """policies/reporting/sufficiency.yaml: valid, and each example gets the verdict the file lists it under."""
    load_sufficiency = _owner("service.sufficiency", "load_sufficiency")
    if load_sufficiency is None:
        return [_missing(policies_dir, "reporting", "service.sufficiency", "the report's verdict rule")]
    try:
        rule = load_sufficiency(policies_dir)
    except PolicyError as exc:
        return [str(exc)]
    result.checked.append("the report's verdict rule and examples")
    return list(rule.example_findings())


def check_retention(policies_dir: Path, result: CheckResult) -> list[str]:
    """policies/retention/retention.yaml: valid, its examples, and every table of the schema in one category."""
    load_retention = _owner("service.retention_policy", "load_retention")
    if load_retention is None:
        return [_missing(policies_dir, "retention", "service.retention_policy", "the retention policy")]
    try:
        policy = load_retention(policies_dir)
    except PolicyError as exc:
        return [str(exc)]
    # Only this check needs the table list; the models take 2.5 s to import (measured).
    from sqlmodel import SQLModel  # lazy: see the line above

    import service.models  # noqa: F401  # lazy: registers every table in SQLModel.metadata

    result.checked.append(f"retention policy ({policy.months} months) and examples")
    return [*policy.example_findings(), *policy.coverage_findings(set(SQLModel.metadata.tables))]


def run_check(
    policies_dir: Path, *, guard: Any = None, brokers_file: Path | None = None, brokers_optional: bool = False
) -> CheckResult:
    """Everything `policy check` checks. `guard` may be passed in (tests reuse one); else it is built here.
    `brokers_file`: also check that file's values (`brokers_optional`: a missing file is not a finding)."""
    result = CheckResult(version=policy_version(policies_dir))
    try:
        result.approval = approval_state(policies_dir)
    except PolicyError as exc:
        result.findings.append(str(exc))
    files, errors = read_policy_files(policies_dir)
    result.files = len(files) + len(errors)
    result.findings += [str(e) for e in errors]
    result.findings += header_findings(files)
    rules, rule_errors = outbound_rules(files)
    result.findings += [str(e) for e in rule_errors]
    result.rules = len(rules)
    result.must_match = sum(len(r.rule.examples.must_match) for r in rules)
    result.must_not_match = sum(len(r.rule.examples.must_not_match) for r in rules)
    result.floor = sum(len(category.must_block) for category in FLOOR)

    manifest = None
    try:
        manifest = load_manifest(policies_dir)
    except PolicyError as exc:
        result.findings.append(str(exc))
    if manifest is not None:
        result.findings += [str(e) for e in manifest_findings(manifest, rules)]

    if guard is None and not errors and not rule_errors:
        from service.policy.guard import OutputGuard  # lazy: imports guardrails; only when needed

        try:
            guard = OutputGuard.from_rules(rules, result.version, policies_dir)
        except PolicyError as exc:
            result.findings.append(str(exc))
    if guard is None:
        where = display_path(policies_dir / "outbound", policies_dir)
        result.findings.append(f"{where}: the output guard was not built; examples and templates not run")
    else:
        result.findings += check_outbound_examples(guard, rules, manifest)

    kinds = {f.header.kind for f in files}
    if "spelling" in kinds and "inbound_rule" not in kinds:
        result.findings.append(f"{display_path(policies_dir / 'spelling', policies_dir)}: spelling files need "
                               "inbound rules to read the corrected replies")
    if "inbound_rule" in kinds:
        result.findings += check_inbound(policies_dir, result)
    if kinds & {"quiet_hours", "caps", "opt_out"}:
        result.findings += check_sending(policies_dir, result)
    if "human_texts" in kinds and guard is not None:
        result.findings += check_human(guard, policies_dir, result)
    if "sufficiency" in kinds:
        result.findings += check_sufficiency(policies_dir, result)
    if "retention" in kinds:
        result.findings += check_retention(policies_dir, result)
    else:
        result.checked.append("no retention policy file (the built-in 25 months apply)")
    if "templates" in kinds and guard is not None:
        result.findings += check_templates(guard, policies_dir, result)
    if brokers_file is not None and guard is not None:
        result.findings += check_brokers(guard, policies_dir, brokers_file, result, optional=brokers_optional)
    return result

