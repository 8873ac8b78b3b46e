"""Forgetting a number and the retention purge reach the console's rows too: a forgotten lead's history
(LeadEvent), click-to-calls (HumanCall), alert links (LeadLink) and CRM deliveries go, and a session opened from
a link to it is revoked; another lead's rows stay."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from service.models import HumanCall, Lead, LeadEvent, LeadLink, UserSession, WebhookDelivery, utcnow
from service.privacy import forget_number, purge_older_than
from service.twilio import fake
from service.web.principal import digest
from tests.api_helpers import TEAM_YAML, missed, reply, signed_in
from tests.helpers import BROKER, BROKER2, BROKER_ALERT, CALLER, TWILIO_SID

OTHER = "+14155550177"
CALLS_URL = f"https://api.twilio.com/2010-04-01/Accounts/{TWILIO_SID}/Calls.json"
WITH_HOOK = TEAM_YAML.replace(
    "    team:\n", '    webhooks:\n      - {url: "https://crm.example.com/hook", secret: "a-long-enough-secret-value"}\n'
    "    team:\n", 1)


@pytest.fixture
def brokers_file(tmp_path: Path) -> Path:
    path = tmp_path / "brokers.yaml"
    path.write_text(WITH_HOOK)
    return path


@pytest.fixture
def calls_api(twilio_api):
    def created(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        return httpx.Response(201, json=fake.call_json(form["To"], form["From"], account_sid=TWILIO_SID))

    return twilio_api.post(CALLS_URL).mock(side_effect=created)


def lead_of(ctx, phone: str, broker_id: int = 1) -> int:
    with Session(ctx.engine) as session:
        return session.exec(select(Lead.id).where(Lead.phone == phone, Lead.broker_id == broker_id)).one()


def worked(client, post, ctx, phone: str, to: str = BROKER, broker_id: int = 1) -> int:
    """A lead with everything the console adds: replies, a person's text, a call, an outcome, a link."""
    missed(client, post, caller=phone, to=to)
    reply(client, post, "refinance please", caller=phone, to=to)
    lead_id = lead_of(ctx, phone, broker_id)
    user = signed_in(ctx) if broker_id == 1 else signed_in(ctx, "+12125550111")
    assert client.post(f"/api/leads/{lead_id}/messages", json={"body": "Hi, this is your loan officer."},
                       headers=user).status_code == 201
    assert client.post(f"/api/leads/{lead_id}/call", headers=user).status_code == 202
    assert client.post(f"/api/leads/{lead_id}/outcome", json={"outcome": "reached"}, headers=user).status_code == 200
    with Session(ctx.engine) as session:
        session.add(LeadLink(token_hash=digest(f"link-{lead_id}"), lead_id=lead_id, phone=BROKER_ALERT,
                             expires_at=utcnow() + timedelta(days=1)))
        session.commit()
    signed_in(ctx, BROKER_ALERT, lead_id=lead_id)  # a session opened from that link
    return lead_id


def rows(ctx, model, lead_id: int) -> int:
    with Session(ctx.engine) as session:
        return len(session.exec(select(model).where(model.lead_id == lead_id)).all())


def revoked(ctx, lead_id: int) -> list[bool]:
    with Session(ctx.engine) as session:
        found = session.exec(select(UserSession).where(UserSession.lead_id == lead_id)).all()
        return [s.revoked_at is not None for s in found]


def test_forget_number_deletes_console_rows_of_its_leads_only(client, post, ctx, calls_api) -> None:
    forgotten = worked(client, post, ctx, CALLER)
    kept = worked(client, post, ctx, OTHER)
    assert rows(ctx, LeadEvent, forgotten) > 0
    assert rows(ctx, WebhookDelivery, forgotten) > 0

    counts = forget_number(ctx.engine, CALLER)

    assert (counts["human_calls"], counts["lead_links"], counts["link_sessions_revoked"]) == (1, 1, 1)
    assert counts["lead_events"] > 0
    assert counts["webhook_deliveries"] > 0
    for model in (LeadEvent, HumanCall, LeadLink, WebhookDelivery):
        assert rows(ctx, model, forgotten) == 0, model.__name__
        assert rows(ctx, model, kept) > 0, model.__name__
    assert revoked(ctx, forgotten) == [True]
    assert revoked(ctx, kept) == [False]


def test_forget_number_for_one_broker_keeps_its_other_broker_rows(client, post, ctx, calls_api) -> None:
    dana = worked(client, post, ctx, CALLER)
    marcus = worked(client, post, ctx, CALLER, to=BROKER2, broker_id=2)

    forget_number(ctx.engine, CALLER, broker_id=1)

    assert rows(ctx, LeadEvent, dana) == rows(ctx, HumanCall, dana) == 0
    assert rows(ctx, LeadEvent, marcus) > 0
    assert rows(ctx, HumanCall, marcus) == 1


def test_purge_deletes_console_rows_of_old_conversations(client, post, ctx, calls_api) -> None:
    lead_id = worked(client, post, ctx, CALLER)

    counts = purge_older_than(ctx.engine, 30, now=utcnow() + timedelta(days=40))

    assert counts["leads"] == 1
    assert (counts["human_calls"], counts["lead_links"], counts["link_sessions_revoked"]) == (1, 1, 1)
    for model in (LeadEvent, HumanCall, LeadLink, WebhookDelivery):
        assert rows(ctx, model, lead_id) == 0, model.__name__


def test_purge_keeps_conversation_with_recent_click_to_call(client, post, ctx, calls_api) -> None:
    lead_id = worked(client, post, ctx, CALLER)
    with Session(ctx.engine) as session:
        call = session.exec(select(HumanCall)).one()
        call.created_at = utcnow() + timedelta(days=20)  # after the cutoff below
        session.add(call)
        session.commit()

    counts = purge_older_than(ctx.engine, 30, now=utcnow() + timedelta(days=40))

    assert counts["leads"] == 0
    assert rows(ctx, HumanCall, lead_id) == 1
    assert rows(ctx, LeadEvent, lead_id) > 0


def test_forget_by_policy_keeps_young_conversation_but_deletes_its_console_rows(client, post, ctx, calls_api) -> None:
    """`privacy forget` without --force: the conversation (and its click-to-call, a communication) is kept until
    the retention period ends; its history, CRM deliveries and links go now, and link sessions are revoked."""
    from service.retention import forget_request
    from service.retention_policy import load_retention
    from tests.helpers import POLICIES

    lead_id = worked(client, post, ctx, CALLER)

    request = forget_request(ctx.engine, load_retention(POLICIES), POLICIES, CALLER)

    assert request.outcome.kept["leads"] == 1
    assert request.outcome.kept["human_calls"] == 1
    assert rows(ctx, HumanCall, lead_id) == 1
    for model in (LeadEvent, LeadLink, WebhookDelivery):
        assert rows(ctx, model, lead_id) == 0, model.__name__
    assert revoked(ctx, lead_id) == [True]
    with Session(ctx.engine) as session:
        lead = session.get(Lead, lead_id)
    assert lead is not None
    assert (lead.outcome_note, lead.loan_type, lead.name) == (None, None, None)
