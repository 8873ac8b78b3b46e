"""Missed call -> exactly one compliant opener, through signed webhooks and the real twilio SDK."""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET

import httpx
import pytest
from sqlmodel import Session, select

from service.models import CallEvent, DeliveryEvent, Lead, OutboundMessage
from tests.helpers import (
    BROKER,
    BROKER2,
    BROKER_ALERT,
    BROKER_CELL,
    CALLER,
    call_params,
    dial_params,
    message_json,
    rendered,
    sent_templates,
    sent_texts,
    sms_params,
    status_params,
)

DIAL = "/twilio/voice/dial-status"


def dial(status: str, call_sid: str = "CA" + "1" * 32, caller: str = CALLER, to: str = BROKER, **extra: str) -> dict[str, str]:
    return dial_params(status, call_sid, caller, to, **extra)


def twiml(response: httpx.Response) -> ET.Element:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    return ET.fromstring(response.text)


def outbound(ctx) -> list[OutboundMessage]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(OutboundMessage).order_by(OutboundMessage.id)))


def test_send_opener_on_missed_call_exactly_once(client, post, twilio_api, ctx) -> None:
    response = post(client, DIAL, dial("no-answer"))
    root = twiml(response)
    assert root.find("Say") is not None
    assert root.find("Record") is not None
    texts = sent_texts(twilio_api["messages"])
    assert len(texts) == 1
    assert texts[0]["From"] == BROKER
    assert texts[0]["To"] == CALLER
    body = texts[0]["Body"]
    assert "Dana Whitfield" in body
    assert "Summit Home Loans" in body
    assert "123456" in body
    assert body == rendered(ctx, "opener")
    assert sent_templates(ctx, twilio_api["messages"], CALLER) == ["opener"]
    assert texts[0]["StatusCallback"] == "https://textback.example.com/twilio/sms/status"


def test_send_opener_when_same_webhook_delivered_five_times_concurrently(client, post, twilio_api) -> None:
    params = dial("no-answer")
    results: list[int] = []
    barrier = threading.Barrier(5)

    def deliver() -> None:
        barrier.wait()
        results.append(post(client, DIAL, params).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 5
    assert len(sent_texts(twilio_api["messages"])) == 1


@pytest.mark.parametrize(
    ("status", "extra", "missed"),
    [
        ("no-answer", {}, True),
        ("busy", {}, True),
        ("failed", {}, True),
        ("canceled", {}, True),
        ("completed", {"DialCallDuration": "31", "DialBridged": "false"}, True),  # voicemail / unaccepted screen
        ("completed", {"DialCallDuration": "12"}, True),  # screening on, no key press recorded
        ("completed", {"DialCallDuration": "240", "DialBridged": "true"}, False),  # a person talked
        ("answered", {"DialCallDuration": "95", "DialBridged": "true"}, False),
    ],
)
def test_detect_missed_call_from_dial_status(client, post, twilio_api, status, extra, missed) -> None:
    root = twiml(post(client, DIAL, dial(status, **extra)))
    assert (root.find("Record") is not None) is missed
    assert len(sent_texts(twilio_api["messages"])) == (1 if missed else 0)


def test_treat_screened_and_accepted_call_as_answered(client, post, twilio_api) -> None:
    parent = "CA" + "1" * 32
    whisper = twiml(post(client, "/twilio/voice/screen", call_params("CA" + "7" * 32, ParentCallSid=parent)))
    gather = whisper.find("Gather")
    assert gather is not None
    assert gather.get("action") == "https://textback.example.com/twilio/voice/screen/accept"
    accept = twiml(post(client, "/twilio/voice/screen/accept",
                        call_params("CA" + "7" * 32, ParentCallSid=parent, Digits="1")))
    assert list(accept) == []  # empty TwiML bridges the call
    root = twiml(post(client, DIAL, dial("completed", DialCallDuration="95", DialBridged="true")))
    assert root.find("Hangup") is not None
    assert root.find("Record") is None
    assert sent_texts(twilio_api["messages"]) == []


def test_treat_voicemail_pickup_as_missed_when_screen_not_accepted(client, post, twilio_api) -> None:
    """The broker's own voicemail answers the leg: the whisper plays to it, no key is pressed."""
    parent = "CA" + "1" * 32
    silent = twiml(post(client, "/twilio/voice/screen/accept", call_params("CA" + "7" * 32, ParentCallSid=parent)))
    assert silent.find("Hangup") is not None
    post(client, DIAL, dial("completed", DialCallDuration="12"))
    assert len(sent_texts(twilio_api["messages"])) == 1


def test_detect_missed_call_without_screening_when_not_bridged(client, post, twilio_api) -> None:
    twiml(post(client, DIAL, dial("completed", to=BROKER2, DialBridged="false", DialCallDuration="0")))
    texts = sent_texts(twilio_api["messages"])
    assert len(texts) == 1
    assert "https://cal.example.com/marcus" in texts[0]["Body"]  # the booking link is the next step


def test_treat_bridged_call_without_screening_as_answered(client, post, twilio_api) -> None:
    twiml(post(client, DIAL, dial("completed", to=BROKER2, DialBridged="true", DialCallDuration="240")))
    assert sent_texts(twilio_api["messages"]) == []


def test_answer_incoming_call_with_dial_to_broker(client, post, twilio_api) -> None:
    root = twiml(post(client, "/twilio/voice", call_params()))
    dial_el = root.find("Dial")
    assert dial_el is not None
    assert dial_el.get("timeout") == "18"
    assert dial_el.get("callerId") == CALLER
    assert dial_el.get("action") == "https://textback.example.com/twilio/voice/dial-status"
    number = dial_el.find("Number")
    assert number is not None
    assert number.text == BROKER_CELL
    assert number.get("url") == "https://textback.example.com/twilio/voice/screen"
    assert sent_texts(twilio_api["messages"]) == []


def test_send_opener_at_once_for_forwarded_call(client, post, twilio_api) -> None:
    root = twiml(post(client, "/twilio/voice", call_params(ForwardedFrom="+14155550111")))
    assert root.find("Dial") is None
    assert root.find("Record") is not None
    assert len(sent_texts(twilio_api["messages"])) == 1


@pytest.mark.parametrize("caller", ["anonymous", "Restricted", "+266696687", "", "12", "+1555"])
def test_skip_opener_for_withheld_or_invalid_caller(client, post, twilio_api, caller) -> None:
    params = dial("no-answer", caller=caller)
    if not caller:
        params.pop("From")
    response = post(client, DIAL, params)
    assert response.status_code == 200
    assert sent_texts(twilio_api["messages"]) == []


@pytest.mark.parametrize("caller", [BROKER_CELL, BROKER_ALERT, BROKER, BROKER2, "+12125550111"])
def test_skip_opener_for_looping_caller(client, post, twilio_api, caller) -> None:
    post(client, DIAL, dial("no-answer", caller=caller))
    assert sent_texts(twilio_api["messages"]) == []


def test_send_one_opener_inside_cooldown_for_repeated_calls(client, post, twilio_api, ctx) -> None:
    for index in range(4):
        post(client, DIAL, dial("no-answer", call_sid=f"CA{index:032d}"))
    assert len(sent_texts(twilio_api["messages"])) == 1
    with Session(ctx.engine) as session:
        reasons = [e.reason for e in session.exec(select(CallEvent).where(CallEvent.kind == "dial-status"))]
    assert sum("cooldown" in (r or "") for r in reasons) == 3


def test_send_second_opener_after_cooldown(client, post, twilio_api, ctx) -> None:
    from datetime import timedelta

    post(client, DIAL, dial("no-answer", call_sid="CA" + "a" * 32))
    with Session(ctx.engine) as session:
        lead = session.exec(select(Lead)).one()
        assert lead.opener_at is not None
        lead.opener_at = lead.opener_at - timedelta(hours=25)
        session.add(lead)
        session.commit()
    post(client, DIAL, dial("no-answer", call_sid="CA" + "b" * 32))
    assert len(sent_texts(twilio_api["messages"])) == 2


def test_send_opener_to_same_caller_for_each_broker(client, post, twilio_api) -> None:
    post(client, DIAL, dial("no-answer", call_sid="CA" + "a" * 32))
    post(client, DIAL, dial("no-answer", call_sid="CA" + "b" * 32, to=BROKER2))
    assert [t["From"] for t in sent_texts(twilio_api["messages"])] == [BROKER, BROKER2]


def test_skip_opener_for_caller_who_opted_out(client, post, twilio_api, ctx) -> None:
    post(client, "/twilio/sms", sms_params("STOP"))
    confirmations = sent_texts(twilio_api["messages"])
    assert len(confirmations) == 1
    assert confirmations[0]["Body"] == rendered(ctx, "optout_confirm")
    post(client, DIAL, dial("no-answer", call_sid="CA" + "c" * 32))
    assert len(sent_texts(twilio_api["messages"])) == 1


def test_retry_opener_after_messages_api_500(client, post, twilio_api, ctx) -> None:
    route = twilio_api["messages"]
    route.side_effect = [
        httpx.Response(500, json={"code": 20500, "message": "Internal Server Error", "status": 500}),
        httpx.Response(201, json=message_json(CALLER, BROKER, "opener", sid="SM" + "f" * 32)),
    ]
    post(client, DIAL, dial("no-answer"))
    [row] = outbound(ctx)
    assert row.status == "pending"
    assert row.attempts == 1
    client.app.state.worker.run_once()
    [row] = outbound(ctx)
    assert row.status == "sent"
    assert row.twilio_sid == "SM" + "f" * 32
    assert row.attempts == 2
    assert len(route.calls) == 2
    assert len({c.request.content for c in route.calls}) == 1  # the same text, once delivered


def test_stop_retrying_after_21610_unsubscribed(client, post, twilio_api, ctx) -> None:
    route = twilio_api["messages"]
    route.side_effect = [httpx.Response(400, json={
        "code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400,
        "more_info": "https://www.twilio.com/docs/errors/21610"})]
    post(client, DIAL, dial("no-answer"))
    client.app.state.worker.run_once()
    [row] = outbound(ctx)
    assert row.status == "failed"
    assert row.error_code == 21610
    assert len(route.calls) == 1
    # Twilio says the number unsubscribed: we treat it as opted out.
    post(client, DIAL, dial("no-answer", call_sid="CA" + "d" * 32))
    assert len(route.calls) == 1


@pytest.mark.parametrize("code", [21211, 21614])
def test_record_permanent_error_on_lead_and_alert_broker(client, post, twilio_api, ctx, code) -> None:
    route = twilio_api["messages"]
    route.side_effect = [
        httpx.Response(400, json={"code": code, "message": "bad number", "status": 400}),
        *[httpx.Response(201, json=message_json(BROKER_ALERT, BROKER, "alert")) for _ in range(3)],
    ]
    post(client, DIAL, dial("no-answer"))
    client.app.state.worker.run_once()
    with Session(ctx.engine) as session:
        lead = session.exec(select(Lead)).one()
    assert lead.not_textable_reason
    texts = sent_texts(route)
    assert texts[-1]["To"] == BROKER_ALERT
    assert sent_templates(ctx, route, BROKER_ALERT)[-1] == "alert_send_failed"
    assert len([t for t in texts if t["To"] == CALLER]) == 1


def test_record_call_status_callback(client, post, ctx) -> None:
    response = post(client, "/twilio/voice/status", call_params(CallStatus="completed", CallDuration="42"))
    assert response.status_code == 200
    with Session(ctx.engine) as session:
        event = session.exec(select(CallEvent).where(CallEvent.kind == "status")).one()
    assert event.status == "completed"
    assert event.duration == 42


def test_record_delivery_status_on_outbound_message(client, post, twilio_api, ctx) -> None:
    post(client, DIAL, dial("no-answer"))
    [row] = outbound(ctx)
    status = status_params(row.twilio_sid, "undelivered", error_code=30006)
    assert post(client, "/twilio/sms/status", status).status_code == 200
    [row] = outbound(ctx)[:1]
    assert row.delivery_status == "undelivered"
    assert row.error_code == 30006
    with Session(ctx.engine) as session:
        assert session.exec(select(Lead)).one().not_textable_reason == "landline_or_unreachable"


@pytest.mark.parametrize(("callbacks", "kept"), [
    (["delivered", "sent"], "delivered"),
    (["delivered", "queued", "accepted"], "delivered"),
    (["sent", "queued"], "sent"),
    (["queued", "sent", "delivered"], "delivered"),
    (["read", "delivered"], "read"),
    (["delivered", "undelivered"], "undelivered"),
])
def test_keep_furthest_delivery_status_when_callbacks_arrive_out_of_order(client, post, twilio_api, ctx, callbacks,
                                                                          kept) -> None:
    post(client, DIAL, dial("no-answer"))
    [row] = outbound(ctx)
    for status in callbacks:
        assert post(client, "/twilio/sms/status", status_params(row.twilio_sid, status)).status_code == 200
    [row] = outbound(ctx)[:1]
    assert row.delivery_status == kept
    with Session(ctx.engine) as session:  # every callback is kept as an event, late ones included
        stored = session.exec(select(DeliveryEvent).where(DeliveryEvent.message_sid == row.twilio_sid)).all()
    assert sorted(e.status for e in stored) == sorted(callbacks)
