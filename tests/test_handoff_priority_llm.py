"""Handoff reasons win over closing paths when the LLM is the one that found them (respx-mocked OpenAI)."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session, select

from service.models import Decision
from service.replies.llm_fake import completion_json
from tests.helpers import BROKER_ALERT, sent_templates
from tests.test_conversation import OPENAI, lead, missed, reply, to_broker
from tests.test_conversation_llm import LLM_ANSWER, UNCLEAR
from tests.test_handoff_priority import borrower_templates, opted_out


@pytest.fixture
def settings_env() -> dict[str, object]:
    return {"openai_api_key": "sk-test-not-real", "llm_timeout_seconds": 2.0}


@pytest.mark.parametrize(
    ("answer", "templates", "note"),
    [
        ({"opt_out_request": True, "callback_requested": True}, ["opener", "optout_confirm"], "opted_out"),
        ({"wrong_number": True, "handoff_reasons": ["rate_or_terms"]}, ["opener"], "wrong_number"),
        ({"not_interested": True, "handoff_reasons": ["complaint"]}, ["opener"], "not_interested"),
    ],
)
def test_alert_broker_when_llm_closes_and_hands_off_at_once(client, post, twilio_api, ctx, answer, templates,
                                                            note) -> None:
    route = twilio_api.post(OPENAI).respond(200, json=completion_json(json.dumps({**LLM_ANSWER, **answer})))
    missed(client, post)
    reply(client, post, UNCLEAR)
    assert route.called
    assert borrower_templates(ctx) == templates
    [alert] = to_broker(twilio_api["messages"])
    assert ctx.templates.phrase(note) in alert
    assert sent_templates(ctx, twilio_api["messages"], BROKER_ALERT) == ["alert_handoff"]
    assert lead(ctx).state == "handoff"
    assert opted_out(ctx) == ("optout_confirm" in templates)
    with Session(ctx.engine) as session:
        decision = session.exec(select(Decision).where(Decision.action == "handoff")).one()
    assert decision.llm_model == "gpt-4o-mini"
