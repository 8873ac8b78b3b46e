"""Scoring: from per-case outcomes to the numbers in the table and the report. Pure; no I/O.

Size: a little over 400 lines, because every reply metric is scored in the one pass below, overall and per
slice alike, so the two cannot drift apart.

Words used throughout:

- *pinned*: the case's ``expect`` names the field.
- *answered* by a layer: the layer's value differs from the empty analysis (a loan type other than unknown,
  a keyword, True for a boolean, a non-empty handoff set, a callback window). The rules' default is "I could
  not tell", never a claim, so it counts for accuracy but not for rules precision.
- *states* a field: the case is pinned and its accepted values exclude the default (there is something to
  answer). Coverage is measured on those cases: who answered, the rules, the LLM (only when the rules did
  not), or neither.
- *needs no person*: the case's only accepted handoff set is the empty one. It is a *needless handoff* when
  the rules alone would put it in front of a person (`hands_off_without_llm`: a handoff reason, or unsure
  about safety).
- *slice*: a tag in `service.evals.slices.SLICES`; every number here is computed overall and on each slice.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from service.evals.datasets import FIELDS, OutboundCase, ReplyCase, value_ok
from service.evals.slices import slices_of
from service.replies.analysis import (
    HandoffReason,
    Keyword,
    LoanType,
    ReplyAnalysis,
    Timeline,
    hands_off_without_llm,
)

DEFAULTS: dict[str, object] = {
    "keyword": None,
    "loan_type": "unknown",
    "timeline": "unknown",
    "applied_elsewhere": None,
    "wrong_number": False,
    "not_interested": False,
    "handoff_reasons": frozenset(),
    "callback_window": None,
}
LABELS: dict[str, tuple[Any, ...]] = {
    "keyword": tuple(k.value for k in Keyword),
    "loan_type": tuple(t.value for t in LoanType),
    "timeline": tuple(t.value for t in Timeline),
}
CONFUSION_FIELDS = ("loan_type", "timeline")
REASONS = tuple(r.value for r in HandoffReason)
_NO_PERSON: frozenset[frozenset[str]] = frozenset({frozenset()})  # the only accepted handoff set is the empty one


def plain(analysis: ReplyAnalysis) -> dict[str, Any]:
    """The content fields as plain values (enum values as strings, handoff reasons as a frozenset)."""
    return {
        "keyword": analysis.keyword.value if analysis.keyword is not None else None,
        "loan_type": analysis.loan_type.value,
        "timeline": analysis.timeline.value,
        "applied_elsewhere": analysis.applied_elsewhere,
        "wrong_number": analysis.wrong_number,
        "not_interested": analysis.not_interested,
        "handoff_reasons": frozenset(r.value for r in analysis.handoff_reasons),
        "callback_window": analysis.callback_window,
    }


def answered(name: str, value: object) -> bool:
    return value != DEFAULTS[name]


@dataclass(frozen=True)
class ReplyOutcome:
    """One case through the pipeline: what the rules said alone, and what the service would act on.

    `analysis` is the rules-only analysis itself (the runner keeps it): whether the rules alone hand the reply
    to a person depends on more than the plain fields. Without it only the rules' handoff reasons count.
    """

    case: ReplyCase
    rules: dict[str, Any]
    final: dict[str, Any]
    needs_llm: bool
    llm_error: str | None = None
    analysis: ReplyAnalysis | None = None

    @property
    def rules_hand_off(self) -> bool:
        """Whether the rules alone would put this reply in front of a person."""
        if self.analysis is not None:
            return hands_off_without_llm(self.analysis)
        return bool(self.rules["handoff_reasons"])


@dataclass(frozen=True)
class Failure:
    case_id: str
    field: str
    expected: str
    got: str


@dataclass
class FieldStats:
    pinned: int = 0
    correct: int = 0
    rules_answered: int = 0
    rules_right: int = 0
    stated: int = 0
    by_rules: int = 0
    by_llm: int = 0
    rules_wrong: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        return ratio(self.correct, self.pinned)

    @property
    def rules_precision(self) -> float | None:
        return ratio(self.rules_right, self.rules_answered)

    @property
    def rules_coverage(self) -> float | None:
        return ratio(self.by_rules, self.stated)

    @property
    def llm_coverage(self) -> float | None:
        return ratio(self.by_llm, self.stated)

    @property
    def uncovered(self) -> float | None:
        return ratio(self.stated - self.by_rules - self.by_llm, self.stated)


@dataclass
class LabelStats:
    predicted: int = 0
    predicted_right: int = 0
    actual: int = 0
    actual_found: int = 0

    @property
    def precision(self) -> float | None:
        return ratio(self.predicted_right, self.predicted)

    @property
    def recall(self) -> float | None:
        return ratio(self.actual_found, self.actual)


@dataclass
class ReasonStats:
    required: int = 0
    rules_found: int = 0
    final_found: int = 0
    predicted: int = 0
    predicted_right: int = 0
    missed_by_rules: list[str] = field(default_factory=list)

    @property
    def rules_recall(self) -> float | None:
        return ratio(self.rules_found, self.required)

    @property
    def recall(self) -> float | None:
        return ratio(self.final_found, self.required)

    @property
    def precision(self) -> float | None:
        return ratio(self.predicted_right, self.predicted)


@dataclass
class RepliesReport:
    total: int
    fields: dict[str, FieldStats]
    labels: dict[str, dict[str, LabelStats]]
    confusion: dict[str, Counter[tuple[str, str]]]
    reasons: dict[str, ReasonStats]
    optout_positives: int
    optout_found: int
    optout_missed: list[str]
    false_optouts: list[str]
    optout_negatives: int
    llm_calls: int
    llm_errors: int
    tags: dict[str, tuple[int, int]]  # tag -> (cases, cases with every pinned field right)
    tag_coverage: dict[str, dict[str, tuple[int, int]]]  # field -> tag -> (stated, answered by rules)
    failures: list[Failure]
    needs_no_person: int = 0  # cases whose only accepted handoff set is the empty one
    needless_handoffs: list[str] = field(default_factory=list)  # ... that the rules alone hand to a person
    slices: dict[str, RepliesReport] = field(default_factory=dict)  # the same numbers per slice with cases

    @property
    def needless_handoff_rate(self) -> float | None:
        return ratio(len(self.needless_handoffs), self.needs_no_person)

    @property
    def optout_recall(self) -> float | None:
        return ratio(self.optout_found, self.optout_positives)

    @property
    def false_optout_rate(self) -> float | None:
        return ratio(len(self.false_optouts), self.optout_negatives)

    @property
    def llm_call_rate(self) -> float | None:
        return ratio(self.llm_calls, self.total)

    @property
    def failed_ids(self) -> list[str]:
        return sorted({f.case_id for f in self.failures}, key=_id_order)


@dataclass
class GuardOutcome:
    case: OutboundCase
    allowed: bool
    rules: tuple[str, ...]


@dataclass
class GuardReport:
    total: int
    must_block: int
    blocked: int
    must_pass: int
    falsely_blocked: list[str]
    missed: list[str]
    outcomes: list[GuardOutcome]
    categories: dict[str, GuardReport] = field(default_factory=dict)  # the same numbers, one category each

    @property
    def block_recall(self) -> float | None:
        return ratio(self.blocked, self.must_block)

    @property
    def false_block_rate(self) -> float | None:
        return ratio(len(self.falsely_blocked), self.must_pass)


def ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _id_order(case_id: str) -> tuple[str, int]:
    digits = "".join(ch for ch in case_id if ch.isdigit())
    return (case_id.rstrip("0123456789"), int(digits) if digits else 0)


def _show(value: Any) -> str:
    if isinstance(value, frozenset):
        return "[" + ",".join(sorted(value)) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _show_accepted(name: str, accepted: frozenset[Any]) -> str:
    shown = sorted(_show(v) for v in accepted)
    return shown[0] if len(shown) == 1 else "{" + " | ".join(shown) + "}"


def _reason_ok(reason: str, accepted: frozenset[frozenset[str]]) -> bool:
    return any(reason in option for option in accepted)


def _rules_right(name: str, accepted: frozenset[Any], value: Any) -> bool:
    """Whether a rules claim is right: for handoff, every reason it named is allowed by some accepted set."""
    if name == "handoff_reasons":
        return all(_reason_ok(r, accepted) for r in value)
    return value_ok(name, accepted, value)


def score_replies(outcomes: list[ReplyOutcome], *, by_slice: bool = True) -> RepliesReport:
    """Score the outcomes overall and, when `by_slice`, again on the cases of each slice that has any."""
    fields = {name: FieldStats() for name in FIELDS}
    labels: dict[str, dict[str, LabelStats]] = {n: {lbl: LabelStats() for lbl in LABELS[n]} for n in LABELS}
    confusion: dict[str, Counter[tuple[str, str]]] = {n: Counter() for n in CONFUSION_FIELDS}
    reasons = {r: ReasonStats() for r in REASONS}
    failures: list[Failure] = []
    tags: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    tag_cov: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    optout_pos = optout_found = optout_neg = 0
    optout_missed: list[str] = []
    false_optouts: list[str] = []
    needless: list[str] = []
    llm_calls = llm_errors = needs_no_person = 0

    for out in outcomes:
        case = out.case
        llm_calls += out.needs_llm
        llm_errors += out.llm_error is not None
        all_right = True
        for name in FIELDS:
            accepted = case.accepted(name)
            if accepted is None:
                continue
            stats = fields[name]
            stats.pinned += 1
            final, rules = out.final[name], out.rules[name]
            if value_ok(name, accepted, final):
                stats.correct += 1
            else:
                all_right = False
                failures.append(Failure(case.id, name, _show_accepted(name, accepted), _show(final)))
            if answered(name, rules):
                stats.rules_answered += 1
                if _rules_right(name, accepted, rules):
                    stats.rules_right += 1
                else:
                    stats.rules_wrong.append(case.id)
            default_ok = value_ok(name, accepted, DEFAULTS[name])
            if not default_ok:
                stats.stated += 1
                if answered(name, rules):
                    stats.by_rules += 1
                elif answered(name, final):
                    stats.by_llm += 1
                for tag in case.tags:
                    cov = tag_cov[name][tag]
                    cov[0] += 1
                    cov[1] += answered(name, rules)
            if name in labels:
                single = next(iter(accepted)) if len(accepted) == 1 else object()
                for label, lstats in labels[name].items():
                    if final == label:
                        lstats.predicted += 1
                        lstats.predicted_right += label in accepted
                    if single == label:
                        lstats.actual += 1
                        lstats.actual_found += final == label
            if name in confusion and len(accepted) == 1:
                confusion[name][(_show(next(iter(accepted))), _show(final))] += 1
            if name == "keyword":
                if accepted == frozenset({"stop"}):
                    optout_pos += 1
                    if final == "stop":
                        optout_found += 1
                    else:
                        optout_missed.append(case.id)
                elif "stop" not in accepted:
                    optout_neg += 1
                    if final == "stop":
                        false_optouts.append(case.id)
            if name == "handoff_reasons":
                if accepted == _NO_PERSON:
                    needs_no_person += 1
                    if out.rules_hand_off:
                        needless.append(case.id)
                required = frozenset.intersection(*accepted) if accepted else frozenset()
                for reason in required:
                    rs = reasons[reason]
                    rs.required += 1
                    rs.rules_found += reason in rules
                    rs.final_found += reason in final
                    if reason not in rules:
                        rs.missed_by_rules.append(case.id)
                for reason in final:
                    reasons[reason].predicted += 1
                    reasons[reason].predicted_right += _reason_ok(reason, accepted)
        for tag in case.tags:
            tags[tag][0] += 1
            tags[tag][1] += all_right

    return RepliesReport(
        total=len(outcomes),
        fields=fields,
        labels=labels,
        confusion=confusion,
        reasons=reasons,
        optout_positives=optout_pos,
        optout_found=optout_found,
        optout_missed=optout_missed,
        false_optouts=false_optouts,
        optout_negatives=optout_neg,
        llm_calls=llm_calls,
        llm_errors=llm_errors,
        tags={t: (v[0], v[1]) for t, v in tags.items()},
        tag_coverage={f: {t: (v[0], v[1]) for t, v in per.items()} for f, per in tag_cov.items()},
        failures=failures,
        needs_no_person=needs_no_person,
        needless_handoffs=needless,
        slices=_by_slice(outcomes) if by_slice else {},
    )


def _by_slice(outcomes: list[ReplyOutcome]) -> dict[str, RepliesReport]:
    grouped: dict[str, list[ReplyOutcome]] = defaultdict(list)
    for outcome in outcomes:
        for name in slices_of(outcome.case):
            grouped[name].append(outcome)
    return {name: score_replies(group, by_slice=False) for name, group in grouped.items()}


def score_guard(outcomes: list[GuardOutcome], *, by_category: bool = True) -> GuardReport:
    must_block = [o for o in outcomes if o.case.expect == "block"]
    must_pass = [o for o in outcomes if o.case.expect == "pass"]
    categories: dict[str, GuardReport] = {}
    if by_category:
        grouped: dict[str, list[GuardOutcome]] = defaultdict(list)
        for outcome in outcomes:
            grouped[outcome.case.category].append(outcome)
        categories = {name: score_guard(group, by_category=False) for name, group in sorted(grouped.items())}
    return GuardReport(
        total=len(outcomes),
        must_block=len(must_block),
        blocked=sum(not o.allowed for o in must_block),
        must_pass=len(must_pass),
        falsely_blocked=[o.case.id for o in must_pass if not o.allowed],
        missed=[o.case.id for o in must_block if o.allowed],
        outcomes=outcomes,
        categories=categories,
    )
