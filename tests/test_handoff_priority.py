"""Handoff reasons win over every closing path: an opt-out, a wrong number or "not interested" that carries a
reason for a person still reaches the broker, with the reasons and the message (issue 9, section 1)."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from service import sender, store, worker
from service.conversation import _opt_out
from service.models import Broker, InboundMessage, Lead, OutboundMessage
from service.replies.analysis import Keyword, ReplyAnalysis
from tests.helpers import CALLER, sent_templates
from tests.test_conversation import lead, missed, reply, to_broker

URGENT_STOP = "please stop texting me and just call me, my rate lock expires friday"


def opted_out(ctx) -> bool:
    with Session(ctx.engine) as session:
        return store.is_opted_out(session, 1, CALLER)


def borrower_templates(ctx) -> list[str]:
    """Template ids of every text to the borrower that went (or will go) out."""
    with Session(ctx.engine) as session:
        rows = session.exec(select(OutboundMessage).where(OutboundMessage.audience == "borrower")
                            .order_by(OutboundMessage.id)).all()
    return [r.template_id for r in rows if r.status in {"pending", "sending", "sent", "dry_run"}]


def test_alert_broker_when_opt_out_reply_carries_handoff_reason(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, URGENT_STOP)
    assert borrower_templates(ctx) == ["opener", "optout_confirm"]  # one confirmation, no ack, nothing else
    [alert] = to_broker(twilio_api["messages"])
    assert ctx.templates.phrase("rate_lock") in alert
    assert ctx.templates.phrase("human_request") in alert
    assert ctx.templates.phrase("opted_out") in alert  # the broker calls, never texts
    assert "my rate lock expires friday" in alert
    state = lead(ctx)
    assert state.state == "handoff"
    assert {"rate_lock", "human_request"} <= set(state.handoff_reasons)
    assert state.closed_reason is None
    assert opted_out(ctx)
    missed(client, post, sid="CA" + "2" * 32)  # still opted out of automated texts
    assert borrower_templates(ctx) == ["opener", "optout_confirm"]


@pytest.mark.parametrize("text", ["can you not text me, just call", "don't text, call",
                                  "don't text this number, call me instead"])
def test_opt_out_and_alert_broker_when_borrower_wants_calls_not_texts(client, post, twilio_api, ctx, text) -> None:
    """Texts refused in favour of a call: the number is opted out (one confirmation) and the broker is asked to
    call, marked "call don't text"; the call request is not dropped with the texts."""
    missed(client, post)
    reply(client, post, text)
    assert borrower_templates(ctx) == ["opener", "optout_confirm"]
    [alert] = to_broker(twilio_api["messages"])
    assert ctx.templates.phrase("human_request") in alert
    assert ctx.templates.phrase("opted_out") in alert
    assert lead(ctx).state == "handoff"
    assert opted_out(ctx)


def test_alert_broker_when_webhook_already_applied_the_opt_out(client, post, twilio_api, ctx, monkeypatch) -> None:
    """The webhook may apply a plain-words opt-out itself and leave the reply for processing: the processing
    then alerts the broker, and sends neither a second confirmation nor the acknowledgement."""
    missed(client, post)
    app_worker = client.app.state.worker
    monkeypatch.setattr(app_worker, "after_webhook", lambda send_ids, inbound_ids: sender.send_due(ctx, send_ids))
    reply(client, post, URGENT_STOP)
    with Session(ctx.engine) as session:
        inbound = session.exec(select(InboundMessage)).one()
        state = session.get(Lead, inbound.lead_id)
        # As the webhook does it: the opt-out, its one confirmation, and a Decision saying so.
        store.record_decision(session, inbound, state, "opt_out", ReplyAnalysis(keyword=Keyword.STOP))
        ids = _opt_out(session, ctx, session.get(Broker, 1), state, inbound, "plain_words", twilio_confirmed=False)
        session.commit()
        inbound_id = inbound.id
    sender.send_due(ctx, ids)
    sender.send_due(ctx, worker.process_inbound(ctx, inbound_id))
    assert borrower_templates(ctx) == ["opener", "optout_confirm"]
    [alert] = to_broker(twilio_api["messages"])
    assert ctx.templates.phrase("rate_lock") in alert
    assert lead(ctx).state == "handoff"
    assert opted_out(ctx)


@pytest.mark.parametrize(
    ("text", "note", "reason"),
    [
        ("you have the wrong number. but my rate lock expires tomorrow, call me", "wrong_number", "rate_lock"),
        ("wrong number, but can someone call me about my closing friday", "wrong_number", "closing"),
        ("not interested anymore, call me", "not_interested", "human_request"),
        ("not interested. nobody ever called me back, I'm reporting you to the CFPB", "not_interested", "complaint"),
    ],
)
def test_hand_off_instead_of_closing_when_reply_carries_reason(client, post, twilio_api, ctx, text, note,
                                                                reason) -> None:
    missed(client, post)
    reply(client, post, text)
    assert borrower_templates(ctx) == ["opener"]  # no closing text, no acknowledgement
    [alert] = to_broker(twilio_api["messages"])
    assert ctx.templates.phrase(reason) in alert
    assert ctx.templates.phrase(note) in alert
    state = lead(ctx)
    assert (state.state, state.closed_reason) == ("handoff", None)
    assert not opted_out(ctx)


def test_alert_broker_when_text_without_opener_opts_out_with_reason(client, post, twilio_api, ctx) -> None:
    reply(client, post, URGENT_STOP)  # no call came first
    assert borrower_templates(ctx) == ["optout_confirm"]
    [alert] = to_broker(twilio_api["messages"])
    assert ctx.templates.phrase("rate_lock") in alert
    assert opted_out(ctx)


def test_keep_closing_path_when_reply_carries_no_reason(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "wrong number")
    assert borrower_templates(ctx) == ["opener", "closing_wrong_number"]
    assert to_broker(twilio_api["messages"]) == []
    assert lead(ctx).closed_reason == "wrong_number"
    assert sent_templates(ctx, twilio_api["messages"], CALLER)[-1] == "closing_wrong_number"


def test_name_every_reason_and_note_in_broker_phrases() -> None:
    """Every reason the service can hand off for, and every note, reads as reviewed wording in broker.yaml."""
    from service.replies.analysis import HandoffReason
    from service.templates import load_templates
    from tests.helpers import POLICIES

    phrases = load_templates(POLICIES).phrases
    service_reasons = {"needs_review", "llm_unavailable", "blocked_text", "cap_reached"}
    notes = {"opted_out", "wrong_number", "not_interested"}
    missing = ({r.value for r in HandoffReason} | service_reasons | notes) - set(phrases)
    assert not missing
