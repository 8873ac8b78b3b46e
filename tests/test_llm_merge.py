"""The LLM may only move a reply toward a person or toward stopping: `merge` as a truth table.

Rules result x LLM answer -> merged analysis. The LLM can add handoff reasons (every one, rate_lock, closing,
deadline and transaction_issue included), add an opt-out and fill fields the rules left unknown; it can never
remove a reason the rules found, clear a rules STOP, set START or HELP, or close a lead the rules handed off.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from service.replies.analysis import HandoffReason, Keyword, LoanType, ReplyAnalysis, Source, Timeline
from service.replies.classify import merge
from service.replies.extraction import LLMExtraction, LLMHandoffReason

R = HandoffReason
NOTHING: dict[str, Any] = {
    "loan_type": "unknown", "timeline": "unknown", "applied_elsewhere": None, "wrong_number": False,
    "not_interested": False, "opt_out_request": False, "callback_requested": False, "handoff_reasons": [],
}


def rules(**fields: Any) -> ReplyAnalysis:
    return ReplyAnalysis(needs_llm=True, **fields)


def llm(**fields: Any) -> LLMExtraction:
    return LLMExtraction.model_validate({**NOTHING, **fields}, strict=False)


@pytest.mark.parametrize(
    ("by_rules", "answer", "expected"),
    [
        # Handoff reasons: a union; the LLM adds any reason, never removes one.
        pytest.param(rules(handoff_reasons=[R.RATE_LOCK]), llm(), {"handoff_reasons": [R.RATE_LOCK]},
                     id="rules-reason-kept-when-llm-sees-none"),
        pytest.param(rules(), llm(handoff_reasons=["rate_lock"]), {"handoff_reasons": [R.RATE_LOCK]},
                     id="llm-adds-rate-lock"),
        pytest.param(rules(), llm(handoff_reasons=["closing"]), {"handoff_reasons": [R.CLOSING]},
                     id="llm-adds-closing"),
        pytest.param(rules(), llm(handoff_reasons=["deadline"]), {"handoff_reasons": [R.DEADLINE]},
                     id="llm-adds-deadline"),
        pytest.param(rules(), llm(handoff_reasons=["transaction_issue"]),
                     {"handoff_reasons": [R.TRANSACTION_ISSUE]}, id="llm-adds-transaction-issue"),
        pytest.param(rules(handoff_reasons=[R.COMPLAINT]), llm(handoff_reasons=["human_request", "complaint"]),
                     {"handoff_reasons": [R.COMPLAINT, R.HUMAN_REQUEST]}, id="union-without-duplicates"),
        pytest.param(rules(), llm(callback_requested=True), {"handoff_reasons": [R.HUMAN_REQUEST]},
                     id="callback-request-is-human-request"),
        # Opt-out: the LLM can add a STOP, never clear one, never set START or HELP.
        pytest.param(rules(), llm(opt_out_request=True), {"keyword": Keyword.STOP}, id="llm-adds-stop"),
        pytest.param(rules(keyword=Keyword.STOP), llm(opt_out_request=False), {"keyword": Keyword.STOP},
                     id="rules-stop-never-cleared"),
        pytest.param(rules(keyword=Keyword.START), llm(opt_out_request=True), {"keyword": Keyword.STOP},
                     id="llm-stop-beats-rules-start"),
        pytest.param(rules(keyword=Keyword.HELP), llm(opt_out_request=True), {"keyword": Keyword.STOP},
                     id="llm-stop-beats-rules-help"),
        pytest.param(rules(keyword=Keyword.START), llm(), {"keyword": Keyword.START}, id="rules-start-kept"),
        pytest.param(rules(), llm(), {"keyword": None}, id="llm-never-sets-a-keyword-by-itself"),
        pytest.param(rules(handoff_reasons=[R.RATE_LOCK]), llm(opt_out_request=True),
                     {"keyword": Keyword.STOP, "handoff_reasons": [R.RATE_LOCK]}, id="stop-and-handoff-both-kept"),
        # Closing paths: the LLM may turn them on, never off, and never on a lead the rules handed off.
        pytest.param(rules(), llm(wrong_number=True), {"wrong_number": True}, id="llm-adds-wrong-number"),
        pytest.param(rules(), llm(not_interested=True), {"not_interested": True}, id="llm-adds-not-interested"),
        pytest.param(rules(wrong_number=True), llm(), {"wrong_number": True}, id="rules-wrong-number-kept"),
        pytest.param(rules(handoff_reasons=[R.RATE_LOCK]), llm(wrong_number=True),
                     {"wrong_number": False, "handoff_reasons": [R.RATE_LOCK]}, id="no-close-after-rules-handoff"),
        pytest.param(rules(handoff_reasons=[R.CLOSING]), llm(not_interested=True),
                     {"not_interested": False, "handoff_reasons": [R.CLOSING]},
                     id="no-not-interested-after-rules-handoff"),
        pytest.param(rules(), llm(wrong_number=True, handoff_reasons=["complaint"]),
                     {"wrong_number": True, "handoff_reasons": [R.COMPLAINT]}, id="llm-close-and-reason-both-kept"),
        # Fields: the rules' answer is final; the LLM fills only what they left unknown.
        pytest.param(rules(loan_type=LoanType.REFINANCE), llm(loan_type="purchase"),
                     {"loan_type": LoanType.REFINANCE}, id="rules-loan-type-final"),
        pytest.param(rules(), llm(loan_type="purchase", timeline="1_to_3_months", applied_elsewhere=True),
                     {"loan_type": LoanType.PURCHASE, "timeline": Timeline.ONE_TO_THREE_MONTHS,
                      "applied_elsewhere": True}, id="llm-fills-unknown-fields"),
        pytest.param(rules(applied_elsewhere=False), llm(applied_elsewhere=True), {"applied_elsewhere": False},
                     id="rules-applied-elsewhere-final"),
        pytest.param(rules(callback_window="after 5"), llm(), {"callback_window": "after 5"},
                     id="callback-window-rules-only"),
    ],
)
def test_merge_llm_answer_truth_table(by_rules: ReplyAnalysis, answer: LLMExtraction, expected: dict) -> None:
    merged = merge(by_rules, answer)

    assert {name: getattr(merged, name) for name in expected} == expected
    assert merged.needs_llm is by_rules.needs_llm
    assert merged.rules_fired == by_rules.rules_fired


@pytest.mark.parametrize(
    ("by_rules", "answer", "source"),
    [
        pytest.param(rules(), llm(), Source.RULES, id="llm-added-nothing"),
        pytest.param(rules(), llm(loan_type="purchase"), Source.LLM, id="only-llm"),
        pytest.param(rules(timeline=Timeline.RESEARCHING), llm(loan_type="purchase"), Source.RULES_LLM, id="both"),
    ],
)
def test_merge_llm_answer_records_source(by_rules: ReplyAnalysis, answer: LLMExtraction, source: Source) -> None:
    assert merge(by_rules, answer).source is source


REASON_SETS = [[], [R.RATE_LOCK], [R.HUMAN_REQUEST, R.TRANSACTION_ISSUE]]
KEYWORDS = [None, Keyword.STOP, Keyword.START, Keyword.HELP]


@pytest.mark.parametrize(
    ("rules_reasons", "keyword", "rules_closing"),
    [
        pytest.param(reasons, keyword, closing,
                     id=f"{'+'.join(reasons) or 'no-reason'}-{keyword or 'no-keyword'}-{'closing' if closing else 'open'}")
        for reasons, keyword, closing in itertools.product(REASON_SETS, KEYWORDS, [False, True])
    ],
)
def test_merge_llm_answer_only_moves_toward_a_person_or_stopping(
    rules_reasons: list[HandoffReason], keyword: Keyword | None, rules_closing: bool
) -> None:
    by_rules = rules(handoff_reasons=rules_reasons, keyword=keyword, wrong_number=rules_closing,
                     not_interested=rules_closing)
    for llm_reasons, opt_out, closing, callback in itertools.product(
        [[], [r.value for r in HandoffReason]], [False, True], [False, True], [False, True]
    ):
        answer = llm(handoff_reasons=llm_reasons, opt_out_request=opt_out, wrong_number=closing,
                     not_interested=closing, callback_requested=callback)
        merged = merge(by_rules, answer)

        assert set(rules_reasons) <= set(merged.handoff_reasons)
        assert set(llm_reasons) <= set(merged.handoff_reasons)
        assert merged.keyword in {keyword, Keyword.STOP}
        assert keyword is not Keyword.STOP or merged.keyword is Keyword.STOP
        assert merged.keyword is Keyword.STOP if opt_out else merged.keyword is keyword
        if rules_reasons:  # a lead the rules handed off is never closed by the LLM
            assert (merged.wrong_number, merged.not_interested) == (rules_closing, rules_closing)
        else:
            assert merged.wrong_number is (rules_closing or closing)


def test_llm_schema_offers_every_handoff_reason() -> None:
    assert {reason.value for reason in LLMHandoffReason} == {reason.value for reason in HandoffReason}
    assert "transaction_issue" in {reason.value for reason in HandoffReason}
    schema = LLMExtraction.model_json_schema()
    offered = next(node["enum"] for node in schema["$defs"].values() if "rate_lock" in node.get("enum", []))
    assert set(offered) == {reason.value for reason in HandoffReason}
