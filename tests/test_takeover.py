"""A person takes a lead over (service.takeover.human_acted): the bot stops, its pending automated texts are
canceled (opt-out confirmations and keyword answers aside), and every later borrower text goes to the team."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlmodel import Session, select

from service.access import Principal
from service.conversation import TAKEN_OVER, llm_skip_reason, should_forward
from service.models import Lead, LeadEvent, MessageStatus, OutboundMessage, Purpose, utcnow
from service.replies.analysis import ReplyAnalysis
from service.takeover import CANCELED, human_acted, locked_lead, taken_over
from tests.api_helpers import missed, reply
from tests.helpers import BROKER, BROKER_ALERT, BROKER_CELL, CALLER, sent_templates, sent_texts

NIGHT = "2026-06-11T07:30:00+00:00"  # 00:30 in California: automated texts wait for the morning


def dana(ctx) -> Principal:
    broker = ctx.broker_for(BROKER)
    return Principal(kind="session", name="Dana Whitfield", broker_ids=frozenset({broker.id}), phone=BROKER_CELL)


def act(ctx, how: str = "text") -> bool:
    """Dana acts on the caller's lead, in a transaction of its own (as every route does)."""
    with Session(ctx.engine) as session:
        lead = session.exec(select(Lead).where(Lead.phone == CALLER)).one()
        locked = locked_lead(session, lead.id)
        first = human_acted(session, ctx, broker=ctx.broker_for(BROKER), lead=locked, principal=dana(ctx), how=how)
        session.commit()
    return first


def the_lead(ctx) -> Lead:
    with Session(ctx.engine) as session:
        return session.exec(select(Lead).where(Lead.phone == CALLER)).one()


def event_kinds(ctx) -> list[str]:
    with Session(ctx.engine) as session:
        return [e.kind for e in session.exec(select(LeadEvent).order_by(LeadEvent.id))]


def to_team(route) -> list[str]:
    return [t["Body"] for t in sent_texts(route) if t["To"] == BROKER_ALERT]


def test_cancel_question_held_for_quiet_hours_when_person_takes_over(client, post, twilio_api, ctx, clock) -> None:
    """Reproduction: a question held overnight still went out in the morning after the broker had texted."""
    clock.move_to(NIGHT)
    missed(client, post)  # the opener answers the call at once
    reply(client, post, "refinance")  # the next question waits for 8 a.m.
    with Session(ctx.engine) as session:
        [held] = session.exec(select(OutboundMessage).where(OutboundMessage.status == MessageStatus.pending)).all()
    assert held.purpose == Purpose.question
    assert act(ctx) is True
    with Session(ctx.engine) as session:
        row = session.get(OutboundMessage, held.id)
    assert (row.status, row.last_error) == (MessageStatus.suppressed, CANCELED)
    assert event_kinds(ctx)[-2:] == ["human_contact", "bot_stopped"]
    lead = the_lead(ctx)
    assert lead.human_by == BROKER_CELL
    assert taken_over(lead)


@pytest.mark.parametrize(("purpose", "audience", "canceled"), [
    (Purpose.opener, "borrower", True),
    (Purpose.question, "borrower", True),
    (Purpose.ack, "borrower", True),
    (Purpose.ready, "borrower", True),
    (Purpose.closing, "borrower", True),
    (Purpose.optout_confirm, "borrower", False),
    (Purpose.optin_confirm, "borrower", False),
    (Purpose.help, "borrower", False),
    (Purpose.human, "borrower", False),
    (Purpose.alert, "broker", False),
])
def test_cancel_only_automated_borrower_texts(client, post, ctx, purpose, audience, canceled) -> None:
    missed(client, post)
    lead = the_lead(ctx)
    later = utcnow() + timedelta(hours=8)  # waiting, as a text held for quiet hours waits
    with Session(ctx.engine) as session:
        row = OutboundMessage(broker_id=lead.broker_id, lead_id=lead.id, audience=audience, purpose=purpose,
                              template_id=str(purpose), to_phone=CALLER if audience == "borrower" else BROKER_ALERT,
                              from_phone=BROKER, body="held", next_attempt_at=later)
        session.add(row)
        session.commit()
        row_id = row.id
    act(ctx)
    with Session(ctx.engine) as session:
        status = session.get(OutboundMessage, row_id).status
    assert status == (MessageStatus.suppressed if canceled else MessageStatus.pending)


def test_forward_reply_to_team_after_takeover_instead_of_asking(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    act(ctx)
    reply(client, post, "refinance, in two months")
    assert sent_templates(ctx, twilio_api["messages"], CALLER) == ["opener"]  # no question after the person
    [alert] = to_team(twilio_api["messages"])
    assert "refinance, in two months" in alert
    lead = the_lead(ctx)
    assert (lead.loan_type, lead.timeline) == ("refinance", "1_to_3_months")  # still captured for the page


def test_answer_keywords_after_takeover_and_tell_the_team(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    act(ctx)
    reply(client, post, "HELP")
    assert sent_templates(ctx, twilio_api["messages"], CALLER) == ["opener", "help"]
    reply(client, post, "STOP")
    assert sent_templates(ctx, twilio_api["messages"], CALLER) == ["opener", "help", "optout_confirm"]
    team = to_team(twilio_api["messages"])
    assert any("HELP" in t for t in team)


def test_alert_team_at_once_on_new_reason_after_takeover_without_ack(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    act(ctx)
    reply(client, post, "can I lock my rate today?")
    assert sent_templates(ctx, twilio_api["messages"], CALLER) == ["opener"]  # no acknowledgement
    assert len(to_team(twilio_api["messages"])) == 1
    lead = the_lead(ctx)
    assert lead.state == "handoff"
    assert lead.handoff_worked_at is None  # a new reason is a new handoff for the person


def test_work_open_handoff_when_person_acts(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "can I lock my rate today?")
    assert the_lead(ctx).handoff_worked_at is None
    act(ctx, "call")
    lead = the_lead(ctx)
    assert lead.handoff_worked_at is not None
    assert event_kinds(ctx)[-3:] == ["handoff_worked", "human_contact", "bot_stopped"]


@pytest.mark.parametrize(("actions", "contacts"), [
    (["text", "call"], 2),
    (["lost"], 0),
    (["no_response", "reached"], 1),
    (["appointment", "application", "not_a_fit"], 2),
])
def test_record_bot_stopped_once_and_each_contact(client, post, ctx, actions, contacts) -> None:
    missed(client, post)
    firsts = [act(ctx, how) for how in actions]
    assert firsts == [True] + [False] * (len(actions) - 1)
    kinds = event_kinds(ctx)
    assert kinds.count("bot_stopped") == 1
    assert kinds.count("human_contact") == contacts


def test_refuse_unknown_human_action(client, post, ctx) -> None:
    missed(client, post)
    with pytest.raises(ValueError, match="unknown human action 'waved'"):
        act(ctx, "waved")


def test_alert_instead_of_opener_when_taken_over_lead_calls_again(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    act(ctx)
    missed(client, post, sid="CA" + "7" * 32)
    assert sent_templates(ctx, twilio_api["messages"], CALLER) == ["opener"]
    assert any("called again" in t for t in to_team(twilio_api["messages"]))


@pytest.mark.parametrize(("human_at", "opener_at", "expected"), [
    (None, None, False),
    (None, "10:00", False),
    ("10:05", "10:00", True),  # acted after the opener
    ("10:00", "10:00", True),
    ("09:00", "10:00", False),  # a later missed call started a new conversation with a new opener
    ("10:00", None, True),  # no opener ever (known contact, suppressed): the person still has it
])
def test_decide_taken_over_by_human_and_opener_times(human_at, opener_at, expected) -> None:
    def at(hhmm: str | None) -> datetime | None:
        return None if hhmm is None else datetime.fromisoformat(f"2026-06-10T{hhmm}:00+00:00")

    assert taken_over(Lead(broker_id=1, phone=CALLER, human_at=at(human_at), opener_at=at(opener_at))) is expected


@pytest.mark.parametrize("state", ["new", "opened", "asking", "handoff", "ready", "closed"])
@pytest.mark.parametrize("keyword", [False, True])
def test_forward_every_text_of_a_taken_over_lead(state, keyword) -> None:
    assert should_forward(state, worked=True, keyword=keyword, human=True) is True


def test_skip_llm_on_taken_over_lead() -> None:
    reason = llm_skip_reason(TAKEN_OVER, ReplyAnalysis(needs_llm=True))
    assert reason == "a person took the lead over: they read the text"
