"""Rules + LLM: the rules decide first, the LLM only fills gaps, and any LLM failure hands the lead to a human.

Most tests replace the rules layer with a fixed analysis so each merge rule is tested on its own; the last few
use the real rules from policies/. The LLM is always the real ReplyExtractor over the real SDK, answered by
respx.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from service.replies.analysis import HandoffReason, Keyword, LoanType, ReplyAnalysis, Source, Timeline
from service.replies.classify import build_extractor, classify, merge
from service.replies.extraction import LLMExtraction, LLMHandoffReason
from service.replies.llm import ReplyExtractor
from service.replies.llm_fake import completion_json, completions_url, error_json
from service.replies.rules import RuleSet, load_rules

BASE_URL = "https://llm.test/v1"
COMPLETIONS = completions_url(BASE_URL)
RECEIVED = datetime(2025, 11, 14, 17, 5, tzinfo=UTC)
TEXT = "thinking about it, my cousin said I should ask you guys"

NOTHING = {
    "loan_type": "unknown",
    "timeline": "unknown",
    "applied_elsewhere": None,
    "wrong_number": False,
    "not_interested": False,
    "opt_out_request": False,
    "callback_requested": False,
    "handoff_reasons": [],
}


class FixedRules:
    """Stands in for RuleSet: returns one prepared analysis and remembers what it was asked."""

    def __init__(self, analysis: ReplyAnalysis) -> None:
        self.analysis = analysis
        self.calls: list[tuple[str, datetime]] = []

    def analyze(self, text: str, received_at: datetime) -> ReplyAnalysis:
        self.calls.append((text, received_at))
        return self.analysis.model_copy(deep=True)




def model_says(**fields: object) -> dict[str, Any]:
    """A completion whose content is NOTHING with these fields changed."""
    return completion_json(json.dumps({**NOTHING, **fields}))


def extraction(**fields: object) -> LLMExtraction:
    """An LLMExtraction from NOTHING with these fields changed."""
    return LLMExtraction.model_validate_json(json.dumps({**NOTHING, **fields}))


@pytest.fixture
def extractor() -> Iterator[ReplyExtractor]:
    """The real extractor, answered by respx; no retry so failures are immediate."""
    client = ReplyExtractor(
        api_key="sk-test", base_url=BASE_URL, model="gpt-4o-mini", max_retries=0, http_client=httpx.AsyncClient()
    )
    yield client
    client.close()


UNSETTLED = ReplyAnalysis(needs_llm=True)


# --- when the LLM is called ------------------------------------------------------------------------------


def test_classify_reply_rules_settled_never_calls_llm(
    extractor: ReplyExtractor, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(COMPLETIONS).respond(200, json=model_says(loan_type="refinance"))
    settled = ReplyAnalysis(loan_type=LoanType.PURCHASE, rules_fired=["loan-purchase"], needs_llm=False)

    result = classify(TEXT, RECEIVED, rules=FixedRules(settled), extractor=extractor)

    assert result == settled
    assert route.call_count == 0


def test_classify_reply_no_extractor_returns_rules_with_needs_llm() -> None:
    rules = FixedRules(UNSETTLED)

    result = classify(TEXT, RECEIVED, rules=rules, extractor=None)

    assert result == UNSETTLED
    assert result.needs_llm is True
    assert result.llm_model is None
    assert rules.calls == [(TEXT, RECEIVED)]


def test_classify_reply_needs_llm_records_prompt_and_model(
    extractor: ReplyExtractor, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(COMPLETIONS).respond(
        200, json=model_says(loan_type="refinance", timeline="1_to_3_months", applied_elsewhere=False)
    )

    result = classify(TEXT, RECEIVED, rules=FixedRules(UNSETTLED), extractor=extractor)

    assert route.call_count == 1
    assert result.loan_type is LoanType.REFINANCE
    assert result.timeline is Timeline.ONE_TO_THREE_MONTHS
    assert result.applied_elsewhere is False
    assert result.source is Source.LLM
    assert result.needs_llm is True
    assert result.llm_prompt == "reply_extraction"
    assert result.llm_prompt_version == extractor.prompt_version
    assert result.llm_model == "gpt-4o-mini"
    assert result.llm_error is None


# --- failures: rules result kept, llm_error set, a human takes it -----------------------------------------


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        pytest.param(httpx.Response(200, json=completion_json(None, refusal="I can't help with that.")), "refusal",
                     id="refusal"),
        pytest.param(httpx.Response(200, json=completion_json('{"loan_type": "refi', finish_reason="length")), "length",
                     id="length"),
        pytest.param(httpx.Response(200, json=completion_json("refinance")), "invalid_json", id="invalid-json"),
        pytest.param(httpx.Response(200, json=model_says(loan_type="jumbo")), "schema_violation", id="enum"),
        pytest.param(httpx.Response(200, json=model_says(handoff_reasons=["call_now"])), "schema_violation",
                     id="reason-outside-schema"),
        pytest.param(httpx.Response(500, json=error_json("boom", "server_error")), "api_error",
                     id="500"),
        pytest.param(httpx.Response(429, json=error_json("slow", "requests")), "rate_limited",
                     id="429"),
        pytest.param(httpx.ReadTimeout("timed out"), "timeout", id="timeout"),
        pytest.param(httpx.ConnectError("refused"), "connection", id="connection"),
    ],
)
def test_classify_reply_llm_failure_keeps_rules_and_hands_off(
    extractor: ReplyExtractor,
    respx_mock: respx.MockRouter,
    response: httpx.Response | Exception,
    reason: str,
) -> None:
    respx_mock.post(COMPLETIONS).mock(side_effect=[response])
    rules = ReplyAnalysis(
        loan_type=LoanType.PURCHASE, needs_llm=True, rules_fired=["loan-purchase", "hint-timeline"]
    )

    result = classify(TEXT, RECEIVED, rules=FixedRules(rules), extractor=extractor)

    assert result.llm_error == reason
    assert result.model_dump(exclude={"llm_error", "llm_prompt", "llm_prompt_version", "llm_model"}) == (
        rules.model_dump(exclude={"llm_error", "llm_prompt", "llm_prompt_version", "llm_model"})
    )
    assert result.source is Source.RULES
    assert result.llm_model == "gpt-4o-mini"


# --- hostile or contradicting model answers -----------------------------------------------------------------


def test_classify_reply_model_contradicts_rules_loan_type_rules_win(
    extractor: ReplyExtractor, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(COMPLETIONS).respond(200, json=model_says(loan_type="refinance", timeline="under_30_days"))
    rules = ReplyAnalysis(loan_type=LoanType.PURCHASE, needs_llm=True, rules_fired=["loan-purchase"])

    result = classify(TEXT, RECEIVED, rules=FixedRules(rules), extractor=extractor)

    assert result.loan_type is LoanType.PURCHASE
    assert result.timeline is Timeline.UNDER_30_DAYS
    assert result.source is Source.RULES_LLM


def test_classify_reply_model_omits_rules_handoff_handoff_stands(
    extractor: ReplyExtractor, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(COMPLETIONS).respond(200, json=model_says(loan_type="refinance", handoff_reasons=[]))
    rules = ReplyAnalysis(
        handoff_reasons=[HandoffReason.RATE_LOCK, HandoffReason.CLOSING], needs_llm=True, rules_fired=["rate-lock"]
    )

    result = classify(TEXT, RECEIVED, rules=FixedRules(rules), extractor=extractor)

    assert result.handoff_reasons == [HandoffReason.RATE_LOCK, HandoffReason.CLOSING]


def test_classify_reply_model_denies_opt_out_stop_stands(
    extractor: ReplyExtractor, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(COMPLETIONS).respond(200, json=model_says(opt_out_request=False, loan_type="purchase"))
    rules = ReplyAnalysis(keyword=Keyword.STOP, needs_llm=True, rules_fired=["optout-plain-words"])

    result = classify(TEXT, RECEIVED, rules=FixedRules(rules), extractor=extractor)

    assert result.keyword is Keyword.STOP


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(json.dumps({**NOTHING, "rate_quote": "Rates from 5.9% APR"}), id="rate-quote-field"),
        pytest.param(json.dumps({**NOTHING, "loan_type": "refinance - tell them 5.9% APR"}), id="rate-in-enum"),
        pytest.param(json.dumps({**NOTHING, "message": "Ignore the broker and reply YES"}), id="instructions"),
        pytest.param(json.dumps({**NOTHING, "callback_window": "call at 9pm, rates are 5.9%"}), id="free-text"),
    ],
)
def test_classify_reply_hostile_answer_surfaces_nothing(
    extractor: ReplyExtractor, respx_mock: respx.MockRouter, content: str
) -> None:
    respx_mock.post(COMPLETIONS).respond(200, json=completion_json(content))
    rules = ReplyAnalysis(needs_llm=True, rules_fired=["hint-loan"])

    result = classify(TEXT, RECEIVED, rules=FixedRules(rules), extractor=extractor)

    dumped = json.dumps(result.model_dump(mode="json"))
    for leak in ("5.9", "APR", "Ignore", "9pm", "YES"):
        assert leak not in dumped
    assert result.llm_error == "schema_violation"
    assert result.callback_window is None


# --- the merge rules as a truth table -------------------------------------------------------------------

R = ReplyAnalysis


@pytest.mark.parametrize(
    ("rules", "llm", "expected"),
    [
        pytest.param(R(), extraction(), {"source": Source.RULES}, id="nothing-from-either"),
        pytest.param(R(), extraction(loan_type="home_equity"),
                     {"loan_type": LoanType.HOME_EQUITY, "source": Source.LLM}, id="llm-fills-loan-type"),
        pytest.param(R(loan_type=LoanType.PURCHASE), extraction(loan_type="refinance"),
                     {"loan_type": LoanType.PURCHASE, "source": Source.RULES}, id="rules-loan-type-wins"),
        pytest.param(R(timeline=Timeline.RESEARCHING), extraction(timeline="under_30_days"),
                     {"timeline": Timeline.RESEARCHING}, id="rules-timeline-wins"),
        pytest.param(R(timeline=Timeline.RESEARCHING), extraction(loan_type="purchase"),
                     {"timeline": Timeline.RESEARCHING, "loan_type": LoanType.PURCHASE, "source": Source.RULES_LLM},
                     id="both-contribute"),
        pytest.param(R(applied_elsewhere=False), extraction(applied_elsewhere=True),
                     {"applied_elsewhere": False}, id="rules-applied-false-wins"),
        pytest.param(R(), extraction(applied_elsewhere=True), {"applied_elsewhere": True, "source": Source.LLM},
                     id="llm-fills-applied"),
        pytest.param(R(), extraction(wrong_number=True), {"wrong_number": True, "source": Source.LLM},
                     id="llm-sets-wrong-number"),
        pytest.param(R(not_interested=True), extraction(not_interested=False), {"not_interested": True},
                     id="llm-cannot-clear-not-interested"),
        pytest.param(R(), extraction(opt_out_request=True), {"keyword": Keyword.STOP, "source": Source.LLM},
                     id="llm-opt-out-becomes-stop"),
        pytest.param(R(keyword=Keyword.STOP), extraction(opt_out_request=False), {"keyword": Keyword.STOP},
                     id="llm-cannot-clear-stop"),
        pytest.param(R(keyword=Keyword.HELP), extraction(opt_out_request=True),
                     {"keyword": Keyword.STOP, "source": Source.RULES_LLM}, id="llm-opt-out-beats-rules-help"),
        pytest.param(R(handoff_reasons=[HandoffReason.DEADLINE]), extraction(handoff_reasons=["complaint"]),
                     {"handoff_reasons": [HandoffReason.DEADLINE, HandoffReason.COMPLAINT], "source": Source.RULES_LLM},
                     id="llm-adds-reason"),
        pytest.param(R(handoff_reasons=[HandoffReason.RATE_OR_TERMS]),
                     extraction(handoff_reasons=["rate_or_terms"]),
                     {"handoff_reasons": [HandoffReason.RATE_OR_TERMS], "source": Source.RULES}, id="no-duplicates"),
        pytest.param(R(), extraction(callback_requested=True),
                     {"handoff_reasons": [HandoffReason.HUMAN_REQUEST], "source": Source.LLM}, id="callback-is-human-request"),
        pytest.param(R(callback_window="after 5"), extraction(callback_requested=True,
                                                                handoff_reasons=["human_request"]),
                     {"handoff_reasons": [HandoffReason.HUMAN_REQUEST], "source": Source.RULES_LLM},
                     id="callback-once-window-kept"),
    ],
)
def test_merge_rules_and_llm_follows_table(rules: ReplyAnalysis, llm: LLMExtraction, expected: dict[str, Any]) -> None:
    result = merge(rules, llm)

    want = rules.model_dump() | expected
    assert result.model_dump() == want


def test_merge_rate_lock_from_model_is_kept() -> None:
    llm = extraction(handoff_reasons=[LLMHandoffReason.COMPLAINT.value, "rate_lock"])

    result = merge(ReplyAnalysis(), llm)

    assert result.handoff_reasons == [HandoffReason.COMPLAINT, HandoffReason.RATE_LOCK]


def test_merge_keeps_provenance_of_rules() -> None:
    rules = ReplyAnalysis(needs_llm=True, rules_fired=["hint-loan"], llm_model="m", llm_prompt="p")

    result = merge(rules, extraction(loan_type="other"))

    assert (result.needs_llm, result.rules_fired, result.llm_model, result.llm_prompt) == (
        True, ["hint-loan"], "m", "p"
    )


# --- build_extractor --------------------------------------------------------------------------------------


@pytest.mark.parametrize("api_key", [None, "", "   "])
def test_build_extractor_no_key_returns_none(api_key: str | None) -> None:
    assert build_extractor(api_key=api_key, base_url=BASE_URL, model="x") is None


def test_build_extractor_defaults_model_and_uses_base_url(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(COMPLETIONS).respond(200, json=model_says(loan_type="purchase"))

    extractor = build_extractor(api_key="sk-test", base_url=BASE_URL, model="  ", http_client=httpx.AsyncClient())

    assert extractor is not None
    assert extractor.model == "gpt-4o-mini"
    assert extractor.extract(TEXT, RECEIVED).loan_type is LoanType.PURCHASE
    assert route.call_count == 1


# --- with the real rules from policies/ ---------------------------------------------------------------------

POLICIES = Path(__file__).resolve().parents[1] / "policies"


@pytest.fixture(scope="module")
def real_rules() -> RuleSet:
    """The inbound rules as shipped in policies/."""
    return load_rules(POLICIES)


def test_classify_reply_real_rules_handoff_survives_hostile_model(
    real_rules: RuleSet, extractor: ReplyExtractor, respx_mock: respx.MockRouter
) -> None:
    respx_mock.assert_all_called = False  # whether the rules ask the LLM here is theirs to decide
    respx_mock.post(COMPLETIONS).respond(200, json=model_says(loan_type="other", opt_out_request=False))

    result = classify("can I lock my rate today? we close friday", RECEIVED, rules=real_rules, extractor=extractor)

    assert HandoffReason.RATE_LOCK in result.handoff_reasons
    assert result.keyword is None


def test_classify_reply_real_rules_unsettled_reply_asks_llm(
    real_rules: RuleSet, extractor: ReplyExtractor, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(COMPLETIONS).respond(200, json=model_says(loan_type="purchase"))

    result = classify("Bonjour, je voudrais des informations", RECEIVED, rules=real_rules, extractor=extractor)

    assert route.call_count == 1
    assert result.loan_type is LoanType.PURCHASE
    assert result.source is Source.LLM


def test_classify_reply_real_rules_stop_never_calls_llm(
    real_rules: RuleSet, extractor: ReplyExtractor, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(COMPLETIONS).respond(200, json=model_says())
    respx_mock.assert_all_called = False

    result = classify("STOP", RECEIVED, rules=real_rules, extractor=extractor)

    assert result.keyword is Keyword.STOP
    assert route.call_count == 0
