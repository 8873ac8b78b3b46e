"""The examples whose outcome changes between two policy sets (`textback policy diff`).

Every example of BOTH sets (outbound rules' must_match and must_not_match, the manifest's must_match, inbound
rules' examples, the borrower templates rendered with the sample data `policy check` uses) is run under the
OLD rules and the NEW rules: outbound texts through the rules' regex logic (service.policy.guard.scan and the
content checks; guardrails is not imported), replies through the inbound rule engine (service.replies.rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template
from typing import Any

from service.errors import PolicyError
from service.policy.diff_sides import LoadedSet, templates_of
from service.policy.files import OutboundRule
from service.policy.verdicts import content_violations, scan
from service.replies.rules import EXAMPLES_RECEIVED_AT, load_rules
from service.templates import SAMPLE_VALUES, to_gsm7


@dataclass
class OutcomeChange:
    """An example whose outcome under the OLD rules differs from its outcome under the NEW ones."""

    kind: str  # outbound | inbound
    text: str
    source: str  # where the example comes from
    old: str
    new: str


@dataclass(frozen=True)
class _Example:
    kind: str
    text: str
    source: str
    required: tuple[tuple[str, str], ...] = ()
    template: str | None = None


def _outbound_examples(loaded: LoadedSet) -> list[_Example]:
    out: list[_Example] = []
    for rule in loaded.outbound.values():
        out += [_Example("outbound", t, f"{rule.id} must_match") for t in rule.examples.must_match]
        out += [_Example("outbound", t, f"{rule.id} must_not_match") for t in rule.examples.must_not_match]
    if loaded.manifest is not None:
        for required in loaded.manifest.required:
            out += [_Example("outbound", t, f"manifest {required.id}") for t in required.must_match]
    return out


def _rendered_templates(loaded: LoadedSet) -> list[_Example]:
    values = {k: to_gsm7(v) for k, v in SAMPLE_VALUES.items()}
    templates, _ = templates_of(loaded)
    out: list[_Example] = []
    for (tid, language), spec in sorted(templates.items()):
        if spec.get("audience") != "borrower" or not isinstance(spec.get("text"), str):
            continue
        text = Template(spec["text"]).safe_substitute(values)
        required = tuple((str(n), values[n]) for n in spec.get("requires") or [] if n in values)
        out.append(_Example("outbound", text, f"template {tid} ({language}) rendered", required, tid))
    return out


def _outbound_outcome(example: _Example, rules: list[OutboundRule]) -> str:
    found = scan(example.text, [r for r in rules if r.severity == "block"])
    if example.template is not None:
        found += content_violations(example.text, dict(example.required), example.template)
    warned = scan(example.text, [r for r in rules if r.severity == "warn"], severity="warn")
    blocked = sorted({v.rule for v in found})
    outcome = f"blocked by {', '.join(blocked)}" if blocked else "allowed"
    if warned:
        outcome += f", flagged by {', '.join(sorted({v.rule for v in warned}))} (warn)"
    return outcome


def _inbound_outcome(rule_set: Any, text: str) -> str:
    analysis = rule_set.analyze(text, EXAMPLES_RECEIVED_AT)
    data = analysis.model_dump(mode="json")
    settled = []
    for name in ("keyword", "loan_type", "timeline", "applied_elsewhere", "wrong_number", "not_interested",
                 "handoff_reasons", "callback_window"):
        value = data.get(name)
        if value in (None, [], "unknown") or (value is False and name != "applied_elsewhere"):
            continue
        shown = ",".join(str(v) for v in value) if isinstance(value, list) else str(value).lower()
        settled.append(f"{name}={shown}")
    outcome = f"sets {', '.join(settled)}" if settled else "nothing"
    if analysis.needs_llm:
        outcome += f", asks the LLM ({', '.join(str(u) for u in data.get('unsure') or [])})"
    return outcome


def _inbound_rule_set(loaded: LoadedSet, problems: list[str]) -> Any:
    if not any(f.header.kind == "inbound_rule" for f in loaded.files.values()):
        return None
    try:
        return load_rules(loaded.dir)
    except PolicyError as exc:
        problems.append(f"inbound examples not run on this side: {exc}")
        return None


def outcomes(old: LoadedSet, new: LoadedSet, old_problems: list[str], new_problems: list[str]) -> (
        tuple[list[OutcomeChange], int]):
    """Every example of both sets run under both sets' rules: those whose outcome differs, and how many ran.
    A side whose inbound rules do not load gets a problem instead of inbound outcomes."""
    outbound: dict[str, _Example] = {}
    for example in [*_outbound_examples(old), *_outbound_examples(new), *_rendered_templates(old),
                    *_rendered_templates(new)]:
        outbound.setdefault(f"{example.template}\0{example.text}\0{example.required}", example)
    changes: list[OutcomeChange] = []
    old_rules, new_rules = list(old.outbound.values()), list(new.outbound.values())
    for example in outbound.values():
        before, after = _outbound_outcome(example, old_rules), _outbound_outcome(example, new_rules)
        if before != after:
            changes.append(OutcomeChange("outbound", example.text, example.source, before, after))
    old_set, new_set = _inbound_rule_set(old, old_problems), _inbound_rule_set(new, new_problems)
    replies: dict[str, str] = {}
    for rule_set in (old_set, new_set):
        for _, rule_id, text, expected in rule_set.examples() if rule_set is not None else []:
            replies.setdefault(text, f"{rule_id} {'must_match' if expected else 'must_not_match'}")
    if old_set is None or new_set is None:  # one side has no inbound rules (or they did not load: a problem)
        return changes, len(outbound)
    for text, source in replies.items():
        before, after = _inbound_outcome(old_set, text), _inbound_outcome(new_set, text)
        if before != after:
            changes.append(OutcomeChange("inbound", text, source, before, after))
    return changes, len(outbound) + len(replies)
