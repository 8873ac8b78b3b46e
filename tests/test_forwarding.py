"""Texts after a handoff, a ready or a close reach the broker: deduplicated per MessageSid and rate-limited per
lead, with a follow-up alert counting what a burst coalesced and a new handoff reason never held back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from service import sender, worker
from service.models import DoNotText, InboundMessage, Lead, utcnow
from tests import test_concurrency
from tests.helpers import BROKER_ALERT, CALLER, sent_templates, sms_params
from tests.test_conversation import lead, missed, reply, to_borrower, to_broker
from tests.test_handoff_priority import borrower_templates, opted_out

WINDOW = 300.0

# The fixture of two app instances on one database, shared with test_concurrency (pytest finds it by this name).
clients = test_concurrency.clients


@pytest.fixture
def settings_env() -> dict[str, object]:
    return {"forward_window_seconds": WINDOW}


def hand_off(client, post) -> None:
    missed(client, post)
    reply(client, post, "can I lock my rate?")


def later(clock, seconds: float) -> None:
    clock.move_to(utcnow() + timedelta(seconds=seconds))


@pytest.mark.parametrize(
    ("closing_text", "closed_reason"),
    [
        ("please stop texting me", "opted_out"),
        ("wrong number", "wrong_number"),
        ("not interested anymore, thanks", "not_interested"),
    ],
)
@pytest.mark.parametrize(
    "urgent", ["call me, my rate lock expires friday", "stop texting me and call me, my rate lock expires friday"]
)
def test_forward_urgent_text_when_lead_closed(client, post, twilio_api, ctx, closing_text, closed_reason,
                                              urgent) -> None:
    missed(client, post)
    reply(client, post, closing_text)
    assert lead(ctx).closed_reason == closed_reason
    before = len(to_borrower(twilio_api["messages"]))
    reply(client, post, urgent)
    [alert] = to_broker(twilio_api["messages"])
    assert sent_templates(ctx, twilio_api["messages"], BROKER_ALERT) == ["alert_handoff"]
    assert ctx.templates.phrase("rate_lock") in alert
    assert "rate lock expires friday" in alert
    # Nothing automated goes back: no ack after a close; a new "stop" adds only a first-time confirmation.
    new = borrower_templates(ctx)[before:]
    assert new == ([] if closed_reason == "opted_out" or "stop" not in urgent else ["optout_confirm"])
    state = lead(ctx)
    assert state.state == "handoff"
    assert "rate_lock" in state.handoff_reasons
    if closed_reason == "opted_out":
        assert opted_out(ctx)


@pytest.mark.parametrize(("body", "extra"), [("STOP", {}), ("STOP", {"OptOutType": "STOP"}), ("HELP", {})])
def test_forward_carrier_keyword_when_handoff_not_worked(client, post, twilio_api, ctx, body, extra) -> None:
    """The broker is about to call: a STOP (or any keyword) from that borrower is news they need."""
    hand_off(client, post)
    post(client, "/twilio/sms", sms_params(body, **extra))
    alerts = to_broker(twilio_api["messages"])
    assert len(alerts) == 2
    assert f'"{body}"' in alerts[1]


def test_forward_plain_words_stop_when_handoff_not_worked(client, post, twilio_api, ctx) -> None:
    hand_off(client, post)
    reply(client, post, "never mind. STOP")
    assert borrower_templates(ctx)[-1] == "optout_confirm"
    alerts = to_broker(twilio_api["messages"])
    assert len(alerts) == 2
    assert "never mind. STOP" in alerts[1]
    assert opted_out(ctx)


def test_skip_forward_of_plain_text_when_handoff_worked(client, post, twilio_api, ctx) -> None:
    """The seam for the console: once a person has worked the handoff, chatter is kept, urgent news still alerts."""
    hand_off(client, post)
    with Session(ctx.engine) as session:
        row = session.exec(select(Lead)).one()
        row.handoff_worked_at = utcnow()
        session.add(row)
        session.commit()
    reply(client, post, "thanks, talk soon")
    assert len(to_broker(twilio_api["messages"])) == 1
    reply(client, post, "also our closing got moved to tomorrow")
    alerts = to_broker(twilio_api["messages"])
    assert len(alerts) == 2
    assert ctx.templates.phrase("closing") in alerts[1]
    assert lead(ctx).handoff_worked_at is None  # a new reason is a new handoff, not yet worked


def test_alert_new_reason_at_once_inside_rate_limit_window(client, post, twilio_api, ctx) -> None:
    hand_off(client, post)
    reply(client, post, "hello?")  # the first forward opens the window
    reply(client, post, "hello??")  # held for the follow-up
    assert len(to_broker(twilio_api["messages"])) == 2
    reply(client, post, "our closing is tomorrow morning")
    alerts = to_broker(twilio_api["messages"])
    assert len(alerts) == 3
    assert ctx.templates.phrase("closing") in alerts[2]
    assert "closing is tomorrow morning" in alerts[2]


@pytest.mark.parametrize("state", ["handoff", "ready", "new", "closed"])
def test_coalesce_burst_of_texts_into_one_follow_up(client, post, twilio_api, ctx, clock, state) -> None:
    if state == "handoff":
        hand_off(client, post)
    elif state == "ready":
        missed(client, post)
        reply(client, post, "we're buying in the next 2 weeks, no other lender")
    elif state == "closed":
        missed(client, post)
        reply(client, post, "not interested anymore, thanks")
    if state != "new":  # "new": no call came first, the burst's first text creates the lead
        assert lead(ctx).state == state
    first = len(to_broker(twilio_api["messages"]))
    later(clock, WINDOW + 1)  # a fresh window: the first text of the burst is forwarded at once
    burst = [f"hello? text number {n}" for n in range(1, 21)]
    for text in burst:
        reply(client, post, text)
    alerts = to_broker(twilio_api["messages"])[first:]
    assert len(alerts) == 1
    assert "text number 1" in alerts[0]
    later(clock, WINDOW / 2)
    client.app.state.worker.run_once()
    assert len(to_broker(twilio_api["messages"])) == first + 1  # the window has not ended
    later(clock, WINDOW / 2 + 2)
    client.app.state.worker.run_once()
    alerts = to_broker(twilio_api["messages"])[first:]
    assert len(alerts) == 2
    assert "19 more texts" in alerts[1]
    assert "text number 20" in alerts[1]
    client.app.state.worker.run_once()
    assert len(to_broker(twilio_api["messages"])) == first + 2


def test_forward_after_window_ends_without_follow_up(client, post, twilio_api, ctx, clock) -> None:
    hand_off(client, post)
    later(clock, WINDOW + 1)
    reply(client, post, "hello?")
    later(clock, WINDOW + 1)
    reply(client, post, "anyone there?")
    alerts = to_broker(twilio_api["messages"])
    assert len(alerts) == 3
    assert "anyone there?" in alerts[2]


def test_forward_each_message_sid_once_when_processed_twice(client, post, twilio_api, ctx, clock,
                                                            monkeypatch) -> None:
    """A reply re-claimed by the stale sweep (or redelivered) never doubles the broker's alert."""
    hand_off(client, post)
    later(clock, WINDOW + 1)
    app_worker = client.app.state.worker
    monkeypatch.setattr(app_worker, "after_webhook", lambda send_ids, inbound_ids: sender.send_due(ctx, send_ids))
    params = sms_params("are you there?")
    post(client, "/twilio/sms", params)
    post(client, "/twilio/sms", params)  # Twilio's retry of the same MessageSid
    with Session(ctx.engine) as session:
        inbound = session.exec(select(InboundMessage).where(InboundMessage.message_sid == params["MessageSid"])).one()
    sender.send_due(ctx, worker.process_inbound(ctx, inbound.id))
    with Session(ctx.engine) as session:  # the stale sweep gives it back, and it is processed again
        row = session.get(InboundMessage, inbound.id)
        row.status = "received"
        session.add(row)
        session.commit()
    sender.send_due(ctx, worker.process_inbound(ctx, inbound.id))
    alerts = to_broker(twilio_api["messages"])
    assert len(alerts) == 2
    assert "are you there?" in alerts[1]


def test_count_coalesced_text_once_when_processed_twice(client, post, twilio_api, ctx, clock, monkeypatch) -> None:
    hand_off(client, post)
    app_worker = client.app.state.worker
    monkeypatch.setattr(app_worker, "after_webhook", lambda send_ids, inbound_ids: sender.send_due(ctx, send_ids))
    for text in ("hello?", "hello??", "hello???"):
        reply(client, post, text)
    with Session(ctx.engine) as session:
        ids = [row.id for row in session.exec(select(InboundMessage).order_by(InboundMessage.id)).all()][1:]
    for inbound_id in [*ids, ids[1]]:  # the second text is processed twice
        with Session(ctx.engine) as session:
            row = session.get(InboundMessage, inbound_id)
            row.status = "received"
            session.add(row)
            session.commit()
        sender.send_due(ctx, worker.process_inbound(ctx, inbound_id))
    assert len(to_broker(twilio_api["messages"])) == 2  # the handoff, then "hello?"
    later(clock, WINDOW + 1)
    client.app.state.worker.run_once()
    alerts = to_broker(twilio_api["messages"])
    assert len(alerts) == 3
    assert "2 more texts" in alerts[2]
    assert "hello???" in alerts[2]


def test_forward_every_text_when_window_is_zero(client, post, twilio_api, ctx) -> None:
    ctx.settings.forward_window_seconds = 0
    hand_off(client, post)
    for text in ("hello?", "hello??", "hello???"):
        reply(client, post, text)
    assert len(to_broker(twilio_api["messages"])) == 4


def test_reject_negative_forward_window() -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="forward_window_seconds"):
        Settings(_env_file=None, forward_window_seconds=-1)


def test_hold_burst_to_one_forward_when_texts_arrive_at_once(clients, ctx, twilio_api, clock) -> None:
    """Two instances, texts (and a STOP) released together: still one forward now and one follow-up later."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from tests.helpers import call_params
    from tests.test_concurrency import signed_post

    signed_post(clients[0], "/twilio/voice/dial-status", call_params(DialCallStatus="no-answer"))
    signed_post(clients[0], "/twilio/sms", sms_params("can I lock my rate?"))
    assert lead(ctx).state == "handoff"
    later(clock, WINDOW + 1)
    texts = [sms_params(f"hello? number {n}") for n in range(8)] + [sms_params("STOP")]
    barrier = Barrier(len(texts))

    def one(index: int) -> int:
        barrier.wait()
        return signed_post(clients[index % 2], "/twilio/sms", texts[index]).status_code

    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        assert list(pool.map(one, range(len(texts)))) == [200] * len(texts)
    alerts = to_broker(twilio_api["messages"])
    assert len(alerts) == 2  # the handoff, then the first of the burst
    later(clock, WINDOW + 1)
    clients[0].app.state.worker.run_once()
    alerts = to_broker(twilio_api["messages"])
    assert len(alerts) == 3
    assert f"{len(texts) - 1} more texts" in alerts[2]


@pytest.mark.parametrize(
    ("state", "worked", "keyword", "forwarded"),
    [
        ("handoff", False, False, True),
        ("handoff", False, True, True),  # the broker about to call hears of the STOP
        ("handoff", True, False, False),  # worked: kept for the console (a new reason still alerts)
        ("handoff", True, True, False),
        ("ready", False, False, True),
        ("ready", False, True, True),
        ("ready", True, False, False),
        ("closed", False, False, True),  # a closed lead writing again may be back
        ("closed", False, True, False),  # a bare keyword on a closed lead is no news
        ("new", False, False, True),
        ("new", False, True, False),
    ],
)
def test_decide_forward_by_state_worked_and_keyword(state, worked, keyword, forwarded) -> None:
    from service.conversation import should_forward

    assert should_forward(state, worked=worked, keyword=keyword) is forwarded


def test_forward_reply_when_opener_was_suppressed(client, post, twilio_api, ctx) -> None:
    with Session(ctx.engine) as session:
        session.add(DoNotText(phone=CALLER, broker_id=None, source="api"))
        session.commit()
    missed(client, post)
    reply(client, post, "purchase")
    assert to_borrower(twilio_api["messages"]) == []
    [alert] = to_broker(twilio_api["messages"])
    assert "purchase" in alert
    with Session(ctx.engine) as session:
        the_lead = session.exec(select(Lead)).one()
    assert the_lead.opener_at is None


def test_forward_reply_to_broker_when_processing_keeps_failing(client, post, twilio_api, ctx, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("a bug in processing")

    missed(client, post)
    monkeypatch.setattr("service.conversation.analyze_reply", broken)
    post(client, "/twilio/sms", sms_params("we want to buy in spring"))
    for _ in range(worker.MAX_INBOUND_ATTEMPTS):
        with Session(ctx.engine) as session:
            row = session.exec(select(InboundMessage)).one()
        worker.process_inbound(ctx, row.id)
        with Session(ctx.engine) as session:
            row = session.exec(select(InboundMessage)).one()
        if row.status == "failed":
            break
    assert row.status == "failed"
    sender.send_due(ctx)
    assert any("buy in spring" in a for a in to_broker(twilio_api["messages"]))
