"""The borrower's words go to the LLM only when its answer could change what happens next (respx-mocked
OpenAI at its real URL): never when the rules already hand off, the lead is with a person or closed, or no
call came first."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session, select

from service.models import Decision, InboundMessage
from service.replies.llm_fake import completion_json
from tests.test_conversation import OPENAI, lead, missed, reply, to_broker
from tests.test_conversation_llm import LLM_ANSWER, UNCLEAR


@pytest.fixture
def settings_env() -> dict[str, object]:
    return {"openai_api_key": "sk-test-not-real", "llm_timeout_seconds": 2.0}


def last_decision(ctx) -> Decision:
    with Session(ctx.engine) as session:
        inbound = session.exec(select(InboundMessage).order_by(InboundMessage.id.desc())).first()
        return session.exec(select(Decision).where(Decision.inbound_id == inbound.id)).one()


def to_lead_state(client, post, state: str) -> None:
    """Bring the caller's lead to `state` without the LLM (every text here is settled by the rules)."""
    if state == "new":
        return
    missed(client, post)
    text = {"opened": None, "asking": "purchase", "handoff": "can I lock my rate?",
            "ready": "we're buying in the next 2 weeks, no other lender",
            "closed": "not interested anymore, thanks"}[state]
    if text:
        reply(client, post, text)


@pytest.mark.parametrize(
    ("state", "text", "why"),
    [
        ("opened", "FHA loan, call me", "rules hand off"),  # the rules found a reason and wanted the LLM too
        ("asking", "thinking about an FHA loan, what's your rate?", "rules hand off"),
        ("handoff", UNCLEAR, "lead handoff"),
        ("ready", UNCLEAR, "lead ready"),
        ("closed", UNCLEAR, "lead closed"),
        ("new", UNCLEAR, "no opener"),
    ],
)
def test_skip_llm_when_its_answer_changes_nothing(client, post, twilio_api, ctx, state, text, why) -> None:
    route = twilio_api.post(OPENAI).respond(200, json=completion_json(json.dumps(LLM_ANSWER)))
    to_lead_state(client, post, state)
    reply(client, post, text)
    assert not route.called
    decision = last_decision(ctx)
    assert decision.llm_model is None
    assert decision.llm_skipped is not None
    assert why in decision.llm_skipped
    assert to_broker(twilio_api["messages"])  # a person reads it instead


@pytest.mark.parametrize("state", ["opened", "asking"])
def test_call_llm_when_conversation_reply_is_unclear(client, post, twilio_api, ctx, state) -> None:
    route = twilio_api.post(OPENAI).respond(200, json=completion_json(json.dumps(LLM_ANSWER)))
    to_lead_state(client, post, state)
    reply(client, post, UNCLEAR)
    assert route.call_count == 1
    decision = last_decision(ctx)
    assert decision.llm_model == "gpt-4o-mini"
    assert decision.llm_skipped is None
    assert lead(ctx).timeline == "3_to_6_months"


@pytest.mark.parametrize(
    ("state", "reasons", "consulted"),
    [
        ("opened", [], True),
        ("asking", [], True),
        ("opened", ["human_request"], False),
        ("asking", ["rate_lock"], False),
        ("handoff", [], False),
        ("ready", [], False),
        ("closed", [], False),
        ("new", [], False),
        (None, [], False),  # no lead at all
    ],
)
def test_decide_llm_consultation_by_state_and_rules(state, reasons, consulted) -> None:
    from service.conversation import llm_skip_reason
    from service.replies.analysis import ReplyAnalysis

    analysis = ReplyAnalysis(needs_llm=True, handoff_reasons=reasons)
    assert (llm_skip_reason(state, analysis) is None) is consulted
