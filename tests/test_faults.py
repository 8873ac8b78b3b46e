"""Faults: Twilio API errors and timeouts, and a database that is briefly unreachable."""

from __future__ import annotations

import httpx
import pytest
from sqlmodel import Session, select

from service.models import CallEvent, InboundMessage, Lead, OutboundMessage
from tests.helpers import (
    BROKER,
    BROKER_ALERT,
    CALLER,
    MESSAGES_URL,
    call_params,
    message_json,
    messages_page,
    sent_templates,
    sent_texts,
    sms_params,
)
from tests.outage import database_down

DIAL = "/twilio/voice/dial-status"
EMPTY_LIST = messages_page([])


def rows(ctx, model) -> list:
    with Session(ctx.engine) as session:
        return list(session.exec(select(model)))


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(429, json={"code": 20429, "message": "Too Many Requests", "status": 429}),
        httpx.Response(503, text="<html>Service Unavailable</html>"),
        httpx.ConnectError("connection refused"),
        httpx.RemoteProtocolError("connection reset by peer"),
    ],
    ids=["429", "503", "connect-error", "reset"],
)
def test_retry_send_after_transient_failure(client, post, twilio_api, ctx, failure) -> None:
    route = twilio_api["messages"]
    ok = httpx.Response(201, json=message_json(CALLER, BROKER, "opener", sid="SM" + "a" * 32))
    route.side_effect = [failure, ok]
    # Where the request may have left (a dropped connection), the retry first checks Twilio's list: empty.
    twilio_api.get(url__startswith=MESSAGES_URL).respond(200, json=EMPTY_LIST)
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    [row] = rows(ctx, OutboundMessage)
    assert row.status == "pending"
    assert row.next_attempt_at is not None
    client.app.state.worker.run_once()
    [row] = rows(ctx, OutboundMessage)
    assert row.status == "sent"
    assert len(route.calls) == 2


def test_reconcile_timed_out_send_instead_of_resending(client, post, twilio_api, ctx) -> None:
    """A timeout after the request left: the retry first asks Twilio's message list, and finds it sent."""
    route = twilio_api["messages"]
    route.side_effect = [httpx.ReadTimeout("no answer")]
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    [row] = rows(ctx, OutboundMessage)
    assert row.unknown_outcome
    list_route = twilio_api.get(url__startswith=MESSAGES_URL).respond(200, json=messages_page(
        [message_json(CALLER, BROKER, row.body, sid="SM" + "b" * 32, status="delivered")]))
    client.app.state.worker.run_once()
    [row] = rows(ctx, OutboundMessage)
    assert row.status == "sent"
    assert row.twilio_sid == "SM" + "b" * 32
    assert list_route.called
    assert len(route.calls) == 1  # never sent twice


def test_hand_off_after_send_keeps_failing(client, post, twilio_api, ctx) -> None:
    ctx.settings.send_max_attempts = 3
    route = twilio_api["messages"]
    route.side_effect = [httpx.Response(500, json={"code": 20500, "message": "err", "status": 500})] * 3 + [
        httpx.Response(201, json=message_json(BROKER_ALERT, BROKER, "alert"))]
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    for _ in range(3):
        client.app.state.worker.run_once()
    opener = [r for r in rows(ctx, OutboundMessage) if r.to_phone == CALLER]
    assert opener[0].status == "failed"
    assert opener[0].attempts == 3
    texts = sent_texts(route)
    assert texts[-1]["To"] == BROKER_ALERT
    assert sent_templates(ctx, route, BROKER_ALERT)[-1] == "alert_send_failed"


def test_answer_503_when_database_unreachable_then_recover_on_retry(client, post, twilio_api, ctx, tmp_path) -> None:
    """Twilio retries a 5xx: nothing half-written, and the retry gives exactly one text. (A 503 only when the
    spool cannot be written either; tests/test_db_outage.py covers the spooled path.)"""
    (tmp_path / "full-disk").write_text("")
    ctx.spool.directory = tmp_path / "full-disk" / "spool"
    with database_down(ctx):
        params = call_params(DialCallStatus="no-answer")
        assert post(client, DIAL, params).status_code == 503
        assert post(client, "/twilio/sms", sms_params("purchase", sid="SM" + "c" * 32)).status_code == 503
        assert client.get("/ready").status_code == 503
    assert rows(ctx, CallEvent) == []
    assert rows(ctx, InboundMessage) == []
    assert post(client, DIAL, params).status_code == 200
    assert post(client, "/twilio/sms", sms_params("purchase", sid="SM" + "c" * 32)).status_code == 200
    assert len([t for t in sent_texts(twilio_api["messages"]) if t["To"] == CALLER]) == 2
    assert len(rows(ctx, InboundMessage)) == 1


@pytest.mark.parametrize(
    ("failure", "unknown"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("slow connect"), False),
        (httpx.ReadTimeout("no answer"), True),
        (httpx.RemoteProtocolError("dropped after the request"), True),
        (httpx.ReadError("reset while reading"), True),
    ],
)
def test_mark_outcome_unknown_only_when_request_may_have_left(client, post, twilio_api, ctx, failure, unknown) -> None:
    twilio_api["messages"].side_effect = [failure]
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    [row] = rows(ctx, OutboundMessage)
    assert row.status == "pending"
    assert row.unknown_outcome is unknown


def test_reject_stale_claim_shorter_than_a_send() -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="stale_claim_seconds"):
        Settings(_env_file=None, send_timeout_seconds=60, stale_claim_seconds=30)


def test_apply_failed_status_found_when_reconciling(client, post, twilio_api, ctx) -> None:
    route = twilio_api["messages"]
    route.side_effect = [httpx.ReadTimeout("no answer"),
                         *[httpx.Response(201, json=message_json(BROKER_ALERT, BROKER, "alert")) for _ in range(2)]]
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    with Session(ctx.engine) as session:
        body = session.exec(select(OutboundMessage)).one().body
    failed = message_json(CALLER, BROKER, body, sid="SM" + "d" * 32, status="undelivered", error_code=30006)
    twilio_api.get(url__startswith=MESSAGES_URL).respond(200, json=messages_page([failed]))
    client.app.state.worker.run_once()
    client.app.state.worker.run_once()
    with Session(ctx.engine) as session:
        lead = session.exec(select(Lead)).one()
    assert lead.not_textable_reason == "landline_or_unreachable"
    assert "alert_send_failed" in sent_templates(ctx, route, BROKER_ALERT)


@pytest.mark.parametrize(("callbacks", "history"), [
    ((), []),  # the row says delivered; the callback still to come records it once
    (("delivered",), ["opener_delivered"]),  # it came while the SID was unknown: recorded now
    (("sent", "delivered"), ["opener_delivered"]),
])
def test_record_callback_that_came_before_a_reconciled_send_once(client, post, twilio_api, ctx, callbacks,
                                                                 history) -> None:
    """A send that timed out is found in Twilio's list; a "delivered" callback stored while its SID was unknown
    goes into the lead's history then, and a later copy of it adds nothing."""
    from service.models import LeadEvent

    twilio_api["messages"].side_effect = [httpx.ReadTimeout("no answer")]
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    sid = "SM" + "b" * 32
    for status in callbacks:
        assert post(client, "/twilio/sms/status", {"MessageSid": sid, "MessageStatus": status}).status_code == 200
    with Session(ctx.engine) as session:
        body = session.exec(select(OutboundMessage)).one().body
    twilio_api.get(url__startswith=MESSAGES_URL).respond(200, json=messages_page(
        [message_json(CALLER, BROKER, body, sid=sid, status="delivered")]))
    client.app.state.worker.run_once()
    for status in callbacks:  # Twilio retries a callback: the copy is recorded once, as before
        assert post(client, "/twilio/sms/status", {"MessageSid": sid, "MessageStatus": status}).status_code == 200
    with Session(ctx.engine) as session:
        row = session.exec(select(OutboundMessage)).one()
        kinds = [e.kind for e in session.exec(select(LeadEvent)) if e.kind.startswith("opener_")]
    assert (row.status, row.delivery_status) == ("sent", "delivered")
    assert [k for k in kinds if k != "opener"] == history
