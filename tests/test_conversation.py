"""The conversation after the opener, end to end through signed webhooks (rules, LLM fallback, handoff)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import respx
from sqlmodel import Session, select

from service import outbox
from service.models import Decision, Lead, OutboundMessage
from service.replies.llm_fake import completions_url
from tests.api_helpers import bearer, signed_in
from tests.helpers import BROKER, BROKER_ALERT, CALLER, call_params, sent_templates, sent_texts, sms_params

DIAL = "/twilio/voice/dial-status"
OPENAI = completions_url()


def missed(client, post, sid: str = "CA" + "1" * 32) -> None:
    assert post(client, DIAL, call_params(sid, DialCallStatus="no-answer")).status_code == 200


def reply(client, post, text: str) -> None:
    assert post(client, "/twilio/sms", sms_params(text)).status_code == 200


def to_borrower(route: respx.Route) -> list[str]:
    return [t["Body"] for t in sent_texts(route) if t["To"] == CALLER]


def to_broker(route: respx.Route) -> list[str]:
    return [t["Body"] for t in sent_texts(route) if t["To"] == BROKER_ALERT]


def lead(ctx) -> Lead:
    with Session(ctx.engine) as session:
        return session.exec(select(Lead).where(Lead.phone == CALLER, Lead.broker_id == 1)).one()


def test_advance_conversation_when_reply_gives_loan_type_and_timeline(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "refi, hoping to get it done in the next 2 weeks")
    texts = to_borrower(twilio_api["messages"])
    assert len(texts) == 2
    # loan type and timeline known: the next question
    assert sent_templates(ctx, twilio_api["messages"], CALLER)[1] == "ask_applied_elsewhere"
    state = lead(ctx)
    assert (state.loan_type, state.timeline, state.state) == ("refinance", "under_30_days", "asking")
    assert to_broker(twilio_api["messages"]) == []


def test_reach_ready_and_alert_broker_once_with_summary(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "Purchase")
    reply(client, post, "probably in 2 months")
    reply(client, post, "no")
    borrower = sent_templates(ctx, twilio_api["messages"], CALLER)
    assert borrower[1:4] == ["ask_timeline", "ask_applied_elsewhere", "ready"]
    [alert] = to_broker(twilio_api["messages"])
    assert sent_templates(ctx, twilio_api["messages"], BROKER_ALERT) == ["alert_ready"]
    assert "purchase" in alert
    assert "1-3 months" in alert
    assert "not applied elsewhere" in alert
    reply(client, post, "thanks!")
    assert len(to_broker(twilio_api["messages"])) == 2  # later replies are forwarded, not answered
    assert len(to_borrower(twilio_api["messages"])) == 4


def test_never_repeat_an_answered_question(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "we want to buy in about 3 months, haven't applied anywhere else")
    borrower = sent_templates(ctx, twilio_api["messages"], CALLER)
    assert len(borrower) == 2
    assert borrower[1] == "ready"


def test_hand_off_rate_lock_question_with_ack_and_alert(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "can I lock my rate?")
    borrower = sent_templates(ctx, twilio_api["messages"], CALLER)
    assert len(borrower) == 2
    assert borrower[1] == "handoff_ack"  # only the acknowledgement
    [alert] = to_broker(twilio_api["messages"])
    assert CALLER in alert
    assert ctx.templates.phrase("rate_lock") in alert
    assert "can I lock my rate?" in alert
    assert lead(ctx).state == "handoff"
    reply(client, post, "hello??")
    assert len(to_borrower(twilio_api["messages"])) == 2  # the bot stays quiet after a handoff
    assert "hello??" in to_broker(twilio_api["messages"])[-1]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("our closing is friday and the title company needs wire instructions", "closing"),
        ("the contract deadline is Monday, need the approval letter", "deadline"),
        ("what's your rate on a 30 year fixed?", "rate_or_terms"),
        ("can you call me after 5?", "human_request"),
        ("this is harassment, I'm reporting you to the CFPB", "complaint"),
        ("I'm already a client, why did my mortgage payment go up?", "existing_loan"),
        ("got a foreclosure notice, please help", "existing_loan"),
    ],
)
def test_hand_off_reply_needing_a_person(client, post, twilio_api, ctx, text, reason) -> None:
    missed(client, post)
    reply(client, post, text)
    assert len(to_borrower(twilio_api["messages"])) == 2
    [alert] = to_broker(twilio_api["messages"])
    assert ctx.templates.phrase(reason) in alert


@pytest.mark.parametrize("body", ["", "here is the letter from my bank"])
def test_hand_off_picture_to_a_person_instead_of_reading_it_as_an_answer(client, post, twilio_api, ctx, body) -> None:
    """A picture or file, with or without words, is read by a person: an empty body is no answer to the bot's
    question, and words beside a picture do not let the bot go on as if there were none."""
    missed(client, post)
    media = {"NumMedia": "1", "MediaUrl0": "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
             "MediaContentType0": "image/jpeg"}
    assert post(client, "/twilio/sms", sms_params(body, **media)).status_code == 200
    assert sent_templates(ctx, twilio_api["messages"], CALLER)[-1] == "handoff_ack"
    [alert] = to_broker(twilio_api["messages"])
    assert ctx.templates.phrase("sent_media") in alert
    assert lead(ctx).state == "handoff"
    shown = client.get(f"/api/leads/{lead(ctx).id}", headers=bearer(ctx, 1)).json()["messages"]
    assert [(m["direction"], m["body"], m["media"]) for m in shown if m["direction"] == "in"] == [("in", body, 1)]
    page = client.get(f"/console/leads/{lead(ctx).id}", headers=signed_in(ctx)).text
    assert "1 picture or file attached" in page


def test_close_lead_politely_on_wrong_number(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "wrong number")
    assert sent_templates(ctx, twilio_api["messages"], CALLER)[-1] == "closing_wrong_number"
    assert lead(ctx).closed_reason == "wrong_number"
    missed(client, post, sid="CA" + "2" * 32)
    assert len(to_borrower(twilio_api["messages"])) == 2


def test_close_lead_politely_when_not_interested(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "not interested anymore, thanks")
    assert sent_templates(ctx, twilio_api["messages"], CALLER)[-1] == "closing_not_interested"
    assert lead(ctx).state == "closed"


def test_alert_broker_not_borrower_when_not_interested_caller_calls_again(client, post, twilio_api, ctx) -> None:
    """'We won't text you again' is kept: a later missed call sends no opener, whatever the cooldown; the broker
    is asked to call instead."""
    missed(client, post)
    reply(client, post, "not interested anymore, thanks")
    with Session(ctx.engine) as session:  # a day later: the opener's cooldown is over
        row = session.exec(select(Lead).where(Lead.phone == CALLER)).one()
        row.opener_at = datetime.now(UTC) - timedelta(days=2)
        session.add(row)
        session.commit()
    missed(client, post, sid="CA" + "2" * 32)
    assert sent_templates(ctx, twilio_api["messages"], CALLER) == ["opener", "closing_not_interested"]
    [alert] = to_broker(twilio_api["messages"])
    assert CALLER in alert
    assert "called again and was missed" in alert
    assert "not interested" in alert


@pytest.mark.parametrize("text", ["STOP", "please stop texting me"])
def test_move_lead_updated_at_when_opt_out_closes_it(client, post, twilio_api, ctx, text) -> None:
    """A CRM syncing leads by updated_at sees the opt-out: closing the lead moves it."""
    missed(client, post)
    before = lead(ctx).updated_at
    reply(client, post, text)
    after = lead(ctx)
    assert (after.state, after.closed_reason) == ("closed", "opted_out")
    assert after.updated_at > before


def test_opt_out_on_plain_words_request(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "please stop texting me")
    assert sent_templates(ctx, twilio_api["messages"], CALLER)[-1] == "optout_confirm"
    missed(client, post, sid="CA" + "2" * 32)
    reply(client, post, "purchase")
    assert len(to_borrower(twilio_api["messages"])) == 2


def test_hand_off_reply_unsure_about_safety_when_no_llm_configured(client, post, twilio_api, ctx) -> None:
    """Words near a safety category that no rule settled go to a person when no LLM can read them."""
    missed(client, post)
    reply(client, post, "got a question about escrow")
    assert sent_templates(ctx, twilio_api["messages"], CALLER)[-1] == "handoff_ack"
    [alert] = to_broker(twilio_api["messages"])
    assert ctx.templates.phrase("needs_review") in alert
    with Session(ctx.engine) as session:
        decision = session.exec(select(Decision).where(Decision.action == "handoff")).one()
    assert decision.analysis["needs_llm"] is True
    assert "safety" in decision.analysis["unsure"]


def test_ask_next_question_on_unclear_reply_when_no_llm_configured(client, post, twilio_api, ctx) -> None:
    """A reply the rules could not read, with nothing near a safety category, asks on instead of alerting."""
    missed(client, post)
    reply(client, post, "my cousin said you were good, she used you last year")
    assert sent_templates(ctx, twilio_api["messages"], CALLER)[-1].startswith("ask_")
    assert to_broker(twilio_api["messages"]) == []
    with Session(ctx.engine) as session:
        decision = session.exec(select(Decision)).one()
    assert decision.analysis["needs_llm"] is True
    assert "safety" not in decision.analysis["unsure"]


def test_stop_automated_texts_at_per_lead_cap(client, post, twilio_api, ctx) -> None:
    ctx.settings.max_automated_texts_per_lead = 2
    missed(client, post)
    reply(client, post, "purchase")  # asks timeline: 2 automated texts
    reply(client, post, "in about 2 months")  # the cap: a person takes over
    assert len(to_borrower(twilio_api["messages"])) == 2
    assert ctx.templates.phrase("cap_reached") in to_broker(twilio_api["messages"])[-1]


def test_forward_text_to_broker_when_no_opener_was_sent(client, post, twilio_api, ctx) -> None:
    """Someone texts the number without a missed call: the bot stays silent, the broker gets the text."""
    reply(client, post, "hi is this the mortgage guy? looking to refi")
    assert to_borrower(twilio_api["messages"]) == []
    [alert] = to_broker(twilio_api["messages"])
    assert "looking to refi" in alert
    assert lead(ctx).loan_type == "refinance"  # still captured for the broker


def test_ask_each_question_once_when_replies_arrive_together(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    barrier = threading.Barrier(2)

    def send(text: str) -> None:
        barrier.wait()
        post(client, "/twilio/sms", sms_params(text))

    threads = [threading.Thread(target=send, args=(t,)) for t in ("refi", "in about 2 months")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bodies = to_borrower(twilio_api["messages"])
    assert len(bodies) == len(set(bodies))  # nothing asked twice
    with Session(ctx.engine) as session:
        the_lead = session.exec(select(Lead)).one()
    assert (the_lead.loan_type, the_lead.timeline) == ("refinance", "1_to_3_months")
    assert the_lead.automated_count == len(bodies)


def test_supersede_held_question_when_borrower_replies_again(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    night = (datetime.now(UTC) + timedelta(days=2)).replace(hour=10, minute=0)
    with Session(ctx.engine, expire_on_commit=False) as session:
        the_lead = session.exec(select(Lead)).one()
        queued = outbox.queue_text(session, ctx, broker=ctx.broker_for(BROKER), lead=the_lead, to=CALLER,
                                   template_id="ask_timeline", purpose="question", now=night)
        session.commit()
    assert queued is not None
    held = queued.msg
    assert held.status == "pending"
    reply(client, post, "refi, in 2 months")
    with Session(ctx.engine) as session:
        row = session.get(OutboundMessage, held.id)
    assert row.status == "suppressed"
    assert row.last_error == "superseded by a newer reply"
