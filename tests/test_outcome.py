"""POST /api/leads/{id}/outcome: what became of a lead, recorded with who said so, sent to the CRM as
lead.outcome, and a takeover of the lead (reached or better is a human contact)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import Session, select

from service.models import Lead, LeadEvent, MessageStatus, OutboundMessage, WebhookDelivery
from service.takeover import CANCELED, OUTCOMES
from tests.api_helpers import MEMBER, TEAM_YAML, bearer, cookie_only, missed, reply, signed_in
from tests.helpers import BROKER2, BROKER_CELL, CALLER

HOOK = "https://crm.example.com/hooks/textback"
WITH_HOOK = TEAM_YAML.replace(
    "    team:\n", f'    webhooks:\n      - {{url: "{HOOK}", secret: "a-long-enough-secret-value"}}\n    team:\n', 1)
NIGHT = "2026-06-11T07:30:00+00:00"


@pytest.fixture
def brokers_file(tmp_path: Path) -> Path:
    """The team brokers file; Dana's CRM subscribes to every webhook event."""
    assert WITH_HOOK != TEAM_YAML
    path = tmp_path / "brokers.yaml"
    path.write_text(WITH_HOOK)
    return path


@pytest.fixture
def lead_id(client, post, ctx) -> int:
    missed(client, post)
    with Session(ctx.engine) as session:
        return session.exec(select(Lead.id).where(Lead.phone == CALLER, Lead.broker_id == 1)).one()


def mark(client, lead_id: int, headers: dict[str, str], **payload: object):
    return client.post(f"/api/leads/{lead_id}/outcome", json=payload, headers=headers)


def kinds(ctx) -> list[str]:
    with Session(ctx.engine) as session:
        return [e.kind for e in session.exec(select(LeadEvent).order_by(LeadEvent.id))]


@pytest.mark.parametrize(("outcome", "contact"), [
    ("reached", True), ("appointment", True), ("application", True),
    ("not_a_fit", False), ("lost", False), ("no_response", False),
])
def test_record_outcome_with_author_event_and_crm_webhook(client, ctx, twilio_api, lead_id, outcome, contact) -> None:
    response = mark(client, lead_id, signed_in(ctx), outcome=outcome, note="  talked about a refi in spring ")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["outcome"], body["outcome_note"], body["outcome_by"]) == (
        outcome, "talked about a refi in spring", BROKER_CELL)
    assert body["human_by"] == BROKER_CELL
    with Session(ctx.engine) as session:
        [event] = session.exec(select(LeadEvent).where(LeadEvent.kind == "outcome")).all()
        [hook] = session.exec(select(WebhookDelivery).where(WebhookDelivery.event == "lead.outcome")).all()
    assert (event.actor, event.actor_name, event.data) == (
        BROKER_CELL, "Dana Whitfield", {"outcome": outcome, "note": "talked about a refi in spring"})
    sent = json.loads(hook.body)
    assert (sent["lead"]["outcome"], sent["data"]["outcome"], hook.url) == (outcome, outcome, HOOK)
    assert ("human_contact" in kinds(ctx)) is contact
    assert kinds(ctx).count("bot_stopped") == 1


def test_record_outcome_without_note_and_change_it_later(client, ctx, twilio_api, lead_id) -> None:
    assert mark(client, lead_id, signed_in(ctx), outcome="no_response").json()["outcome_note"] is None
    assert mark(client, lead_id, bearer(ctx, 1), outcome="appointment").json()["outcome"] == "appointment"
    with Session(ctx.engine) as session:
        lead = session.get(Lead, lead_id)
    assert lead.outcome_by.startswith("token:")
    assert kinds(ctx).count("outcome") == 2


def test_cancel_held_question_when_outcome_recorded(client, post, ctx, twilio_api, clock) -> None:
    clock.move_to(NIGHT)
    missed(client, post)
    reply(client, post, "refinance")
    with Session(ctx.engine) as session:
        lead = session.exec(select(Lead).where(Lead.phone == CALLER)).one()
    assert mark(client, lead.id, signed_in(ctx), outcome="reached").status_code == 200
    with Session(ctx.engine) as session:
        [held] = session.exec(select(OutboundMessage).where(OutboundMessage.purpose == "question")).all()
    assert (held.status, held.last_error) == (MessageStatus.suppressed, CANCELED)


@pytest.mark.parametrize(("payload", "field"), [
    ({"outcome": "won"}, "outcome"),
    ({"outcome": "REACHED"}, "outcome"),
    ({}, "outcome"),
    ({"outcome": 3}, "outcome"),
    ({"outcome": "lost", "note": 7}, "note"),
    ({"outcome": "lost", "note": "x" * 2001}, "note"),
])
def test_refuse_bad_outcome_naming_field(client, ctx, twilio_api, lead_id, payload, field) -> None:
    response = client.post(f"/api/leads/{lead_id}/outcome", json=payload, headers=signed_in(ctx))
    assert response.status_code == 422
    assert response.json()["error"].startswith(f"{field}:")
    if field == "outcome":
        assert response.json()["details"]["outcomes"] == list(OUTCOMES)
        assert "reached, appointment, application, not_a_fit, lost, no_response" in response.json()["error"]
    assert "outcome" not in kinds(ctx)


@pytest.mark.parametrize(("who", "status"), [("none", 401), ("cookie_without_csrf", 403), ("member_foreign", 404),
                                             ("token_foreign", 404), ("missing", 404)])
def test_refuse_outcome_without_access(client, post, ctx, twilio_api, lead_id, who, status) -> None:
    missed(client, post, to=BROKER2)
    with Session(ctx.engine) as session:
        marcus_lead = session.exec(select(Lead.id).where(Lead.broker_id == 2)).one()
    target, headers = {"none": (lead_id, {}), "cookie_without_csrf": (lead_id, cookie_only(signed_in(ctx))),
                       "member_foreign": (marcus_lead, signed_in(ctx, MEMBER)),
                       "token_foreign": (marcus_lead, bearer(ctx, 1)), "missing": (999999, signed_in(ctx))}[who]
    assert mark(client, target, headers, outcome="reached").status_code == status
    assert "outcome" not in kinds(ctx)
