"""What the output guard decides, apart from guardrails: the verdict types, the regex matching over the
normalised text that the guard's validator and `scan` share, and the verdicts remembered by (policy version,
template, exact text, required values). Importing this module never imports guardrails; service.policy.guard
builds the Guard on top of it and re-exports these names.

- Every text is read through service.policy.normalize first (disguised figures and words undone), then each
  rule's regexes run over it (`rule_matches`).
- The guard remembers its verdicts (`VerdictCache`): the verdict is a pure function of the policy version, the
  template, the exact text and the required values, and an opener's bytes are the same for every call to one
  broker. Bounded (least recently used out), thread-safe; a guard error is never remembered (the next check
  asks guardrails again), and each caller gets its own copy of the lists. New bytes always go through the
  Guard.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from service.policy.files import OutboundRule
from service.policy.normalize import normalize
from service.policy.required_content import missing_content


@dataclass(frozen=True)
class Violation:
    """One thing a text must not say (`rule` is the rule id) or must say (`required-<name>`)."""

    rule: str
    match: str


@dataclass(frozen=True)
class GuardResult:
    """The guard's verdict on one text. `warnings` come from warn-severity rules and never block."""

    allowed: bool
    violations: list[Violation]
    policy_version: str
    warnings: list[Violation] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------
# The pure part: regex matching over the normalised text (service.policy.normalize), shared by the validator
# and `scan`.


def _mask(text: str, patterns: Sequence[re.Pattern[str]]) -> str:
    for pattern in patterns:
        text = pattern.sub(lambda m: " " * len(m.group(0)), text)
    return text


def rule_matches(rule: OutboundRule, normalized: str) -> list[str]:
    """Every match of one rule (overlapping ones merged) in an already normalized text, in order."""
    masked = _mask(normalized, rule.compiled_allow)
    spans: list[tuple[int, int]] = []
    for pattern in rule.compiled:
        spans.extend(m.span() for m in pattern.finditer(masked) if m.group(0).strip())
    kept: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if kept and start < kept[-1][1]:
            kept[-1] = (kept[-1][0], max(kept[-1][1], end))  # overlapping matches become one finding
            continue
        kept.append((start, end))
    return [normalized[start:end].strip() for start, end in kept]


def required_missing(text: str, required: Mapping[str, str]) -> list[Violation]:
    """A `required-<name>` violation for each required value that does not appear in the text."""
    folded = normalize(text).casefold()
    return [
        Violation(rule=f"required-{name}", match=value)
        for name, value in sorted(required.items())
        if not value or normalize(value).casefold() not in folded
    ]


def content_violations(text: str, required: Mapping[str, str], template: str | None) -> list[Violation]:
    """What the text must say and does not: the caller's required values, then what its template kind
    requires by code (service.policy.required_content: NMLS ID, brokerage, opt-out, help contact)."""
    found = required_missing(text, required)
    seen = {v.rule for v in found}
    for requirement in missing_content(normalize(text), template, required, normalize):
        rule = f"required-{requirement.name}"
        if rule not in seen:
            seen.add(rule)
            given = not requirement.value or required.get(requirement.value, "").strip()
            what = requirement.what if given else f"{requirement.what} (no value given to check the text against)"
            found.append(Violation(rule=rule, match=what))
    return found


def scan(text: str, rules: Sequence[OutboundRule], *, severity: str | None = "block") -> list[Violation]:
    """The rules' regex logic without guardrails: cheap, for reports and tools. Sending uses OutputGuard."""
    normalized = normalize(text)
    return [
        Violation(rule=rule.id, match=match)
        for rule in rules
        if severity is None or rule.severity == severity
        for match in rule_matches(rule, normalized)
    ]


VerdictKey = tuple[str, str | None, str, tuple[tuple[str, str], ...]]
VERDICT_CACHE_SIZE = 4096


class VerdictCache:
    """The guard's verdicts by (policy version, template, exact text, required values), least recently used
    out beyond `size`; thread-safe. Hands out copies: a caller changing its result's lists changes no other."""

    def __init__(self, size: int = VERDICT_CACHE_SIZE) -> None:
        self._size = size
        self._verdicts: OrderedDict[VerdictKey, GuardResult] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(version: str, template: str | None, text: str, required: Mapping[str, str] | None) -> VerdictKey:
        return version, template, text, tuple(sorted((required or {}).items()))

    def get(self, key: VerdictKey) -> GuardResult | None:
        with self._lock:
            known = self._verdicts.get(key)
            if known is None:
                return None
            self._verdicts.move_to_end(key)
        return copy_result(known)

    def put(self, key: VerdictKey, result: GuardResult) -> None:
        if any(v.rule == GUARD_ERROR for v in result.violations):
            return  # a guard error is asked again next time, never remembered
        with self._lock:
            self._verdicts[key] = copy_result(result)
            self._verdicts.move_to_end(key)
            while len(self._verdicts) > self._size:
                self._verdicts.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._verdicts)


def copy_result(result: GuardResult) -> GuardResult:
    return replace(result, violations=list(result.violations), warnings=list(result.warnings))


GUARD_ERROR = "guard-error"


def as_record(result: GuardResult) -> dict[str, Any]:
    return {"allowed": result.allowed, "violations": [(v.rule, v.match) for v in result.violations],
            "warnings": [(v.rule, v.match) for v in result.warnings]}
