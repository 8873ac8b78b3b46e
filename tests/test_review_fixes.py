"""Defects found in review, each pinned: atomic webhooks on SQLite, locked leads, superseded questions,
quiet hours at send time, suppressed openers, broker numbers texting in, and alerts that must not be lost."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from service import outbox, sender
from service.models import InboundMessage, Lead, OutboundMessage
from tests.helpers import (
    BROKER, BROKER_ALERT, BROKER_CELL, CALLER, MESSAGES_URL, call_params, message_json, sent_texts, sms_params,
)

DIAL = "/twilio/voice/dial-status"


def borrower(route) -> list[str]:  # noqa: ANN001
    return [t["Body"] for t in sent_texts(route) if t["To"] == CALLER]


def broker_alerts(route) -> list[str]:  # noqa: ANN001
    return [t["Body"] for t in sent_texts(route) if t["To"] == BROKER_ALERT]


def test_keep_webhook_atomic_when_it_fails_after_first_write(client, post, twilio_api, ctx, monkeypatch) -> None:
    """A failure after the call event is written rolls everything back, so Twilio's retry (or the replay of the
    spooled webhook) gives the text, exactly once."""
    real = outbox.queue_text
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return real(*args, **kwargs)

    monkeypatch.setattr("service.conversation.queue_text", flaky)
    params = call_params(DialCallStatus="no-answer")
    assert post(client, DIAL, params).status_code == 200  # the locked database: spooled, answered from memory
    assert borrower(twilio_api["messages"]) == []  # nothing half-written
    assert post(client, DIAL, params).status_code == 200
    client.app.state.worker.run_once()  # replays the spooled copy: a no-op
    assert len(borrower(twilio_api["messages"])) == 1


def test_ask_each_question_once_when_replies_arrive_together(client, post, twilio_api, ctx) -> None:
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    barrier = threading.Barrier(2)

    def send(text: str) -> None:
        barrier.wait()
        post(client, "/twilio/sms", sms_params(text))

    threads = [threading.Thread(target=send, args=(t,)) for t in ("refi", "in about 2 months")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bodies = borrower(twilio_api["messages"])
    assert len(bodies) == len(set(bodies))  # nothing asked twice
    with Session(ctx.engine) as session:
        lead = session.exec(select(Lead)).one()
    assert (lead.loan_type, lead.timeline) == ("refinance", "1_to_3_months")
    assert lead.automated_count == len(bodies)


def test_supersede_held_question_when_borrower_replies_again(client, post, twilio_api, ctx) -> None:
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    night = (datetime.now(UTC) + timedelta(days=2)).replace(hour=10, minute=0)
    with Session(ctx.engine, expire_on_commit=False) as session:
        lead = session.exec(select(Lead)).one()
        queued = outbox.queue_text(session, ctx, broker=ctx.broker_for(BROKER), lead=lead, to=CALLER,
                                   template_id="ask_timeline", purpose="question", now=night)
        session.commit()
    assert queued is not None
    held = queued.msg
    assert held.status == "pending"
    post(client, "/twilio/sms", sms_params("refi, in 2 months"))
    with Session(ctx.engine) as session:
        row = session.get(OutboundMessage, held.id)
    assert row.status == "suppressed"
    assert row.last_error == "superseded by a newer reply"


def test_hold_retry_that_would_cross_into_quiet_hours(client, post, twilio_api, ctx) -> None:
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    with Session(ctx.engine, expire_on_commit=False) as session:
        lead = session.exec(select(Lead)).one()
        msg = outbox.queue_text(session, ctx, broker=ctx.broker_for(BROKER), lead=lead, to=CALLER,
                                template_id="ask_timeline", purpose="question", now=datetime.now(UTC)).msg
        session.commit()
    night = (datetime.now(UTC) + timedelta(days=1)).replace(hour=10, minute=0)  # 2-3 a.m. in California
    with Session(ctx.engine) as session:
        row = session.get(OutboundMessage, msg.id)
        row.next_attempt_at, row.last_error = night - timedelta(minutes=1), None
        session.add(row)
        session.commit()
    assert sender.send_one(ctx, msg.id, now=night) == "pending"
    with Session(ctx.engine) as session:
        row = session.get(OutboundMessage, msg.id)
    assert row.next_attempt_at > night
    assert row.last_error == "deferred: quiet hours at send time"
    assert len(borrower(twilio_api["messages"])) == 1  # only the opener


def test_forward_reply_when_opener_was_suppressed(client, post, twilio_api, ctx) -> None:
    from service.models import DoNotText  # noqa: PLC0415

    with Session(ctx.engine) as session:
        session.add(DoNotText(phone=CALLER, broker_id=None, source="api"))
        session.commit()
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    post(client, "/twilio/sms", sms_params("purchase"))
    assert borrower(twilio_api["messages"]) == []
    [alert] = broker_alerts(twilio_api["messages"])
    assert "purchase" in alert
    with Session(ctx.engine) as session:
        lead = session.exec(select(Lead)).one()
    assert lead.opener_at is None


def test_store_text_from_broker_number_without_a_lead(client, post, twilio_api, ctx) -> None:
    for text in ("ok calling him now", "STOP"):
        assert post(client, "/twilio/sms", sms_params(text, sender=BROKER_CELL)).status_code == 200
    assert sent_texts(twilio_api["messages"]) == []
    with Session(ctx.engine) as session:
        assert session.exec(select(Lead)).all() == []
        assert len(session.exec(select(InboundMessage)).all()) == 2


def test_alert_operator_when_broker_alert_fails(client, post, twilio_api, ctx) -> None:
    operator = "+14155550177"
    ctx.settings.operator_alert_to = [operator]
    route = twilio_api["messages"]

    def answer(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        if form["To"] == BROKER_ALERT:
            return httpx.Response(400, json={"code": 21610, "message": "unsubscribed", "status": 400})
        return httpx.Response(201, json=message_json(form["To"], form["From"], form["Body"]))

    route.side_effect = answer
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    post(client, "/twilio/sms", sms_params("can I lock my rate?"))
    for _ in range(2):  # 21610 is about this sender: the alert is tried from another number before escalating
        client.app.state.worker.run_once()
    assert len({t["From"] for t in sent_texts(route) if t["To"] == BROKER_ALERT}) == 2
    to_operator = [t["Body"] for t in sent_texts(route) if t["To"] == operator]
    assert len(to_operator) == 1
    assert "failed" in to_operator[0]


def test_alert_broker_when_lookup_says_not_textable(client, post, twilio_api, ctx) -> None:
    ctx.settings.line_type_lookup = True
    twilio_api.get(f"https://lookups.twilio.com/v2/PhoneNumbers/{CALLER}").respond(200, json={
        "phone_number": CALLER, "valid": True, "line_type_intelligence": {"type": "landline", "error_code": None}})
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    client.app.state.worker.run_once()
    assert borrower(twilio_api["messages"]) == []
    [alert] = broker_alerts(twilio_api["messages"])
    assert "cannot take texts" in alert


def test_forward_reply_to_broker_when_processing_keeps_failing(client, post, twilio_api, ctx, monkeypatch) -> None:
    from service import worker  # noqa: PLC0415

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("a bug in processing")

    post(client, DIAL, call_params(DialCallStatus="no-answer"))
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
    assert any("buy in spring" in a for a in broker_alerts(twilio_api["messages"]))


def test_apply_failed_status_found_when_reconciling(client, post, twilio_api, ctx) -> None:
    route = twilio_api["messages"]
    route.side_effect = [httpx.ReadTimeout("no answer"),
                         *[httpx.Response(201, json=message_json(BROKER_ALERT, BROKER, "alert")) for _ in range(2)]]
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    with Session(ctx.engine) as session:
        body = session.exec(select(OutboundMessage)).one().body
    failed = message_json(CALLER, BROKER, body, sid="SM" + "d" * 32, status="undelivered")
    failed["error_code"] = 30006
    twilio_api.get(url__startswith=MESSAGES_URL).respond(200, json={
        "messages": [failed], "end": 0, "first_page_uri": "", "next_page_uri": None, "page": 0, "page_size": 50,
        "previous_page_uri": None, "start": 0, "uri": ""})
    client.app.state.worker.run_once()
    client.app.state.worker.run_once()
    with Session(ctx.engine) as session:
        lead = session.exec(select(Lead)).one()
    assert lead.not_textable_reason == "landline_or_unreachable"
    assert any("could not text" in a for a in broker_alerts(route))
