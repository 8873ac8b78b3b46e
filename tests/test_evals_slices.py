"""The eval slices and the metrics the issue's "done when" names: needless handoffs, rules coverage on the cases
that state a field, every figure per slice, and the per-slice floors in the thresholds file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.evals.datasets import ReplyCase, load_reply_cases
from service.evals.metrics import ReplyOutcome, plain, score_replies
from service.evals.runner import run_replies
from service.evals.slices import SLICES, slices_of
from service.evals.thresholds import ThresholdError, broken, load_thresholds
from service.replies.analysis import (
    HandoffReason,
    LoanType,
    ReplyAnalysis,
    Timeline,
    Unsure,
    hands_off_without_llm,
)
from service.replies.rules import load_rules

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "policies"
AT = "2026-01-02T10:00:00-05:00"

NOTHING = ReplyAnalysis()
HUMAN = ReplyAnalysis(handoff_reasons=[HandoffReason.HUMAN_REQUEST])
UNSURE_SAFETY = ReplyAnalysis(needs_llm=True, unsure=[Unsure.SAFETY])
UNSURE_LOAN = ReplyAnalysis(needs_llm=True, unsure=[Unsure.LOAN_TYPE])


def _cases(tmp_path: Path, rows: list[dict[str, object]]) -> list[ReplyCase]:
    """Write `rows` as a replies.jsonl (each row: id, expect, tags; the text does not matter) and load it."""
    path = tmp_path / "replies.jsonl"
    lines = [json.dumps({"text": "reply", "received_at": AT, **row}) + "\n" for row in rows]
    path.write_text("".join(lines), encoding="utf-8")
    return load_reply_cases(path)


def _outcome(case: ReplyCase, rules: ReplyAnalysis) -> ReplyOutcome:
    return ReplyOutcome(case, plain(rules), plain(rules), rules.needs_llm, None, rules)


def _thresholds(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "thresholds.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------- the slices
def test_define_slices_exactly_the_issue_tags() -> None:
    assert SLICES == ("typo", "spanish", "voice", "negation", "idiom", "long", "injection", "date_edge", "plain")


def test_slices_of_case_ignores_tags_that_are_not_slices(tmp_path: Path) -> None:
    (case,) = _cases(
        tmp_path, [{"id": "a1", "expect": {"keyword": None}, "tags": ["optout", "spanish", "lookalike", "typo"]}]
    )
    assert slices_of(case) == ("typo", "spanish")


# ---------------------------------------------------------------------------------------- needless handoffs
@pytest.mark.parametrize(
    ("accepted", "rules", "needs_no_person", "needless"),
    [
        ([], NOTHING, 1, False),
        ([], HUMAN, 1, True),
        ([], UNSURE_SAFETY, 1, True),  # unsure about safety: with no LLM a person reads it
        ([], UNSURE_LOAN, 1, False),  # unsure about a plain field only asks the next question
        ([[], ["human_request"]], HUMAN, 0, False),  # a person is acceptable: not counted either way
        ([[], ["human_request"]], NOTHING, 0, False),
        (["human_request"], HUMAN, 0, False),
        (["closing"], NOTHING, 0, False),
    ],
)
def test_score_needless_handoffs_only_on_cases_accepting_no_person_alone(
    tmp_path: Path,
    accepted: list[object],
    rules: ReplyAnalysis,
    needs_no_person: int,
    needless: bool,  # a parametrize column
) -> None:
    (case,) = _cases(tmp_path, [{"id": "a1", "expect": {"handoff_reasons": accepted}}])
    report = score_replies([_outcome(case, rules)])
    assert report.needs_no_person == needs_no_person
    assert report.needless_handoffs == (["a1"] if needless else [])


def test_score_needless_handoff_rate_over_cases_needing_no_person(tmp_path: Path) -> None:
    cases = _cases(
        tmp_path,
        [
            {"id": "a1", "expect": {"handoff_reasons": []}},
            {"id": "a2", "expect": {"handoff_reasons": []}},
            {"id": "a3", "expect": {"handoff_reasons": []}},
            {"id": "a4", "expect": {"handoff_reasons": []}},
            {"id": "a5", "expect": {"handoff_reasons": [[], ["human_request"]]}},
        ],
    )
    rules = [UNSURE_SAFETY, NOTHING, NOTHING, NOTHING, HUMAN]
    report = score_replies([_outcome(c, r) for c, r in zip(cases, rules, strict=True)])
    assert (report.needless_handoffs, report.needs_no_person, report.needless_handoff_rate) == (["a1"], 4, 0.25)


def test_score_needless_handoff_without_analysis_falls_back_to_reasons(tmp_path: Path) -> None:
    (case,) = _cases(tmp_path, [{"id": "a1", "expect": {"handoff_reasons": []}}])
    outcome = ReplyOutcome(case, plain(UNSURE_SAFETY), plain(UNSURE_SAFETY), True)
    assert score_replies([outcome]).needless_handoffs == []


def test_run_replies_keeps_the_rules_analysis(tmp_path: Path) -> None:
    cases = _cases(tmp_path, [{"id": "a1", "expect": {"handoff_reasons": []}}])
    (outcome,) = run_replies(cases, load_rules(POLICIES))
    assert outcome.analysis is not None
    assert outcome.rules == plain(outcome.analysis)
    assert outcome.rules_hand_off is hands_off_without_llm(outcome.analysis)


# --------------------------------------------------------------------------------------------- coverage
@pytest.mark.parametrize(
    ("name", "expected", "rules", "stated", "covered"),
    [
        ("loan_type", "purchase", ReplyAnalysis(loan_type=LoanType.PURCHASE), 1, 1),
        ("loan_type", "purchase", NOTHING, 1, 0),
        ("loan_type", "refinance", ReplyAnalysis(loan_type=LoanType.PURCHASE), 1, 1),  # answered, wrong: precision
        ("loan_type", "unknown", NOTHING, 0, 0),
        ("loan_type", ["purchase", "unknown"], NOTHING, 0, 0),  # "unknown" accepted: states nothing
        ("timeline", "under_30_days", ReplyAnalysis(timeline=Timeline.UNDER_30_DAYS), 1, 1),
        ("timeline", "under_30_days", NOTHING, 1, 0),
        ("timeline", "unknown", ReplyAnalysis(timeline=Timeline.UNDER_30_DAYS), 0, 0),
    ],
)
def test_score_rules_coverage_on_cases_that_state_the_field(
    tmp_path: Path, name: str, expected: object, rules: ReplyAnalysis, stated: int, covered: int
) -> None:
    (case,) = _cases(tmp_path, [{"id": "a1", "expect": {name: expected}}])
    stats = score_replies([_outcome(case, rules)]).fields[name]
    assert (stats.stated, stats.by_rules) == (stated, covered)


def test_check_coverage_floor_untagged_measures_stated_cases(tmp_path: Path) -> None:
    cases = _cases(
        tmp_path,
        [
            {"id": "a1", "expect": {"timeline": "under_30_days"}},
            {"id": "a2", "expect": {"timeline": "under_30_days"}},
            {"id": "a3", "expect": {"timeline": "unknown"}},
        ],
    )
    rules = [ReplyAnalysis(timeline=Timeline.UNDER_30_DAYS), NOTHING, NOTHING]
    report = score_replies([_outcome(c, r) for c, r in zip(cases, rules, strict=True)])
    floors = load_thresholds(_thresholds(tmp_path, "replies:\n  rules_coverage_min:\n    timeline: {min: 0.9}\n"))
    assert broken(floors, report, None) == ["timeline rules coverage on stated cases 0.500 < 0.9 (1/2)"]


# --------------------------------------------------------------------------------------------- per slice
def test_score_replies_per_slice_counts_a_case_in_each_of_its_slices(tmp_path: Path) -> None:
    cases = _cases(
        tmp_path,
        [
            {"id": "a1", "expect": {"keyword": "stop", "handoff_reasons": []}, "tags": ["typo", "spanish", "optout"]},
            {"id": "a2", "expect": {"keyword": None, "handoff_reasons": []}, "tags": ["typo"]},
            {"id": "a3", "expect": {"keyword": None, "handoff_reasons": []}, "tags": ["optout"]},
        ],
    )
    rules = [NOTHING, HUMAN, NOTHING]
    report = score_replies([_outcome(c, r) for c, r in zip(cases, rules, strict=True)])
    assert set(report.slices) == {"typo", "spanish"}
    typo, spanish = report.slices["typo"], report.slices["spanish"]
    assert (typo.total, typo.optout_missed, typo.needless_handoffs, typo.needs_no_person) == (2, ["a1"], ["a2"], 2)
    assert (spanish.total, spanish.optout_recall, spanish.needless_handoff_rate) == (1, 0.0, 0.0)
    assert (typo.failed_ids, spanish.failed_ids) == (["a1", "a2"], ["a1"])
    assert (report.total, report.needless_handoffs, report.slices["typo"].slices) == (3, ["a2"], {})


# --------------------------------------------------------------------------------------------- floors
SLICE_FLOORS = """\
replies:
  slices:
    typo:
      needless_handoffs_max: 0.03
      rules_precision_min: {loan_type: 0.98}
      rules_coverage_min: {timeline: {min: 0.9}}
    plain: {optout_recall_min: 1.0, needless_handoffs_max: 0.03}
"""


def test_check_slice_floor_broken_names_the_slice(tmp_path: Path) -> None:
    cases = _cases(
        tmp_path,
        [
            {"id": "a1", "expect": {"handoff_reasons": [], "loan_type": "refinance"}, "tags": ["typo"]},
            {"id": "a2", "expect": {"handoff_reasons": []}, "tags": ["plain"]},
        ],
    )
    rules = [ReplyAnalysis(handoff_reasons=[HandoffReason.HUMAN_REQUEST], loan_type=LoanType.PURCHASE), NOTHING]
    report = score_replies([_outcome(c, r) for c, r in zip(cases, rules, strict=True)])
    floors = load_thresholds(_thresholds(tmp_path, SLICE_FLOORS))
    # the overall defaults break too; plain has no opt-out and typo no stated timeline: those floors hold
    assert [line for line in broken(floors, report, None) if line.startswith("slice")] == [
        "slice typo: needless handoffs 1.000 > 0.03 (1/1; handed off: a1)",
        "slice typo: loan_type rules precision 0.000 < 0.98 (0/1; wrong: a1)",
    ]


def test_check_slice_floor_on_slice_without_cases_is_broken(tmp_path: Path) -> None:
    (case,) = _cases(tmp_path, [{"id": "a1", "expect": {"handoff_reasons": []}, "tags": ["plain"]}])
    floors = load_thresholds(_thresholds(tmp_path, "replies:\n  slices:\n    voice: {}\n    plain: {}\n"))
    assert broken(floors, score_replies([_outcome(case, NOTHING)]), None) == [
        "slice voice: no cases (its floors would hold on nothing)"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("replies:\n  slices:\n    voicemail: {}\n", r"unknown slice\(s\) \['voicemail'\]"),
        ("replies:\n  slices:\n    optout: {}\n", r"unknown slice\(s\) \['optout'\]"),
        ("replies:\n  slices:\n    typo: {needless_max: 0.03}\n", r"needless_max"),
        ("replies:\n  slices:\n    typo: {rules_precision_min: {loan: 0.98}}\n", r"slices.typo: loan"),
        ("replies:\n  slices:\n    typo: {rules_handoff_recall_min: {lock: 1.0}}\n", r"slices.typo: lock"),
        ("replies:\n  needless_handoffs_max: 3\n", r"needless_handoffs_max"),
    ],
)
def test_load_thresholds_bad_slice_block_is_an_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ThresholdError, match=message):
        load_thresholds(_thresholds(tmp_path, text))


def test_load_thresholds_precision_floor_scalar_or_per_field(tmp_path: Path) -> None:
    one = load_thresholds(_thresholds(tmp_path, "replies:\n  rules_precision_min: 1\n")).replies
    per = load_thresholds(_thresholds(tmp_path, "replies:\n  rules_precision_min: {timeline: 0.9}\n")).replies
    assert one.precision_floors()["loan_type"] == 1.0
    assert per.precision_floors() == {"timeline": 0.9}


def test_load_thresholds_repo_lists_only_slices_with_cases() -> None:
    cases = load_reply_cases(REPO / "evals" / "replies.jsonl")
    present = {name for case in cases for name in slices_of(case)}
    floors = load_thresholds(REPO / "evals" / "thresholds.yaml").replies
    assert set(floors.slices) == present
    assert floors.needless_handoffs_max is not None
    assert {"loan_type", "timeline"} <= set(floors.rules_coverage_min)
