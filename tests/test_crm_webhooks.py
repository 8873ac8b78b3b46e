"""CRM webhooks end to end: signed Twilio webhooks drive a missed call and replies on a broker whose brokers
file has a webhook; the CRM endpoint is mocked with respx at its real URL; each body is checked and its
signature verified with an HMAC computed here, independently of the service's code."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
import respx
from sqlmodel import Session, select

from service import crm_delivery, crm_webhooks, events
from service.events import EventKind
from service.models import Broker, Lead, WebhookDelivery, utcnow
from service.privacy import forget_number, purge_older_than
from tests.helpers import BROKER, BROKERS_YAML, CALLER, dial_params, sms_params

DIAL = "/twilio/voice/dial-status"
CRM_URL = "https://hooks.zapier.com/hooks/catch/123456/abcdef/"
SECRET = "whsec-test-0123456789abcdef"  # a test value
OTHER_URL = "https://crm.example.com/textback"
OTHER_SECRET = "other-secret-fedcba9876543210"  # a test value


def webhooks_yaml(url: str, secret: str, events: list[str]) -> str:
    listed = ", ".join(f'"{e}"' for e in events)
    return f'    webhooks:\n      - url: "{url}"\n        secret: "{secret}"\n        events: [{listed}]\n'


@pytest.fixture
def webhook_events() -> list[str]:
    """The events Dana's CRM webhook subscribes to (a test may parametrize it)."""
    return ["lead.created", "lead.updated", "lead.handoff", "lead.outcome"]


def brokers_yaml(events: list[str], base: str = BROKERS_YAML) -> str:
    """`base` with a CRM webhook for each broker: Dana's subscribes to `events`, Marcus's to lead.created."""
    text = base.replace("    call_screening: true\n", "    call_screening: true\n"
                        + webhooks_yaml(CRM_URL, SECRET, events), 1)
    return text + webhooks_yaml(OTHER_URL, OTHER_SECRET, ["lead.created"])


@pytest.fixture
def brokers_file(tmp_path: Path, webhook_events: list[str]) -> Path:
    """The test brokers file, with a CRM webhook for each broker."""
    path = tmp_path / "brokers.yaml"
    path.write_text(brokers_yaml(webhook_events))
    return path


@pytest.fixture
def crm(twilio_api: respx.MockRouter) -> respx.Route:
    """Dana's CRM endpoint; it accepts every delivery unless a test says otherwise."""
    return twilio_api.post(CRM_URL, name="crm").mock(return_value=httpx.Response(200))


def missed(client, post, sid: str = "CA" + "1" * 32) -> None:
    assert post(client, DIAL, dial_params("no-answer", sid)).status_code == 200


def reply(client, post, text: str) -> None:
    assert post(client, "/twilio/sms", sms_params(text)).status_code == 200


def sweep(client) -> None:
    client.app.state.worker.run_once()


def deliveries(ctx) -> list[WebhookDelivery]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def received(route: respx.Route) -> list[dict]:
    """The JSON bodies the CRM received, each after checking its signature independently."""
    bodies = []
    for call in route.calls:
        request = call.request
        timestamp = request.headers["X-Textback-Timestamp"]
        mac = hmac.new(SECRET.encode(), timestamp.encode() + b"." + request.content, hashlib.sha256).hexdigest()
        assert request.headers["X-Textback-Signature"] == f"v1={mac}"
        assert abs(int(timestamp) - time.time()) < 300
        body = json.loads(request.content)
        assert request.headers["X-Textback-Event"] == body["event"]
        assert request.headers["X-Textback-Delivery"] == body["id"]
        bodies.append(body)
    return bodies


def later(clock, seconds: float) -> None:
    clock.move_to(utcnow() + timedelta(seconds=seconds))


# ---------------------------------------------------------------------------------------------------------
# Events


def test_send_lead_created_on_first_missed_call_signed(client, post, ctx, crm) -> None:
    missed(client, post)
    assert not crm.called  # queued in the webhook's transaction, sent by the delivery loop
    sweep(client)
    [body] = received(crm)
    assert body["event"] == "lead.created"
    assert body["cause"] == "missed_call"
    assert body["lead"]["phone"] == CALLER
    assert body["lead"]["broker"] == BROKER
    assert body["lead"]["state"] == "new"
    assert body["data"]["call_sid"] == "CA" + "1" * 32
    request = crm.calls[0].request
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("textback/")
    [row] = deliveries(ctx)
    assert (row.status, row.response_status, row.attempts) == ("delivered", 200, 1)
    assert row.delivered_at is not None
    assert row.delivery_id == body["id"]
    assert SECRET not in row.body


def test_send_lead_updated_when_reply_captures_a_field(client, post, crm) -> None:
    missed(client, post)
    reply(client, post, "refi")
    sweep(client)
    bodies = received(crm)
    assert [b["event"] for b in bodies] == ["lead.created", "lead.updated"]
    assert bodies[1]["cause"] == "field_captured"
    assert bodies[1]["data"] == {"field": "loan_type", "value": "refinance"}
    assert bodies[1]["lead"]["loan_type"] == "refinance"
    assert bodies[0]["lead"]["last_message_at"] is None  # the opener is queued after the missed-call event
    assert bodies[1]["lead"]["last_message_at"] is not None  # the reply, as the API's lead list shows it


def test_send_lead_handoff_on_rate_lock_reply(client, post, crm) -> None:
    missed(client, post)
    reply(client, post, "can I lock my rate?")
    sweep(client)
    handoff = [b for b in received(crm) if b["event"] == "lead.handoff"]
    assert len(handoff) == 1
    assert handoff[0]["data"]["reasons"] == ["rate_lock"]
    assert handoff[0]["lead"]["needs_attention"] is True


def test_send_lead_outcome_when_outcome_event_recorded(client, post, ctx, crm) -> None:
    """The outcome route records EventKind.outcome through events.record; that is what queues lead.outcome."""
    missed(client, post)
    with Session(ctx.engine) as session:
        lead = session.exec(select(Lead).where(Lead.phone == CALLER)).one()
        broker = session.exec(select(Broker).where(Broker.twilio_number == BROKER)).one()
        events.record(session, broker=broker, lead=lead, kind=EventKind.outcome, actor="+14155550111",
                      data={"outcome": "appointment", "note": "Tuesday 3pm"})
        session.commit()
    sweep(client)
    outcome = [b for b in received(crm) if b["event"] == "lead.outcome"]
    assert [o["data"] for o in outcome] == [{"outcome": "appointment", "note": "Tuesday 3pm"}]


@pytest.mark.parametrize("webhook_events", [["lead.handoff"]])
def test_skip_events_not_subscribed(client, post, ctx, crm) -> None:
    missed(client, post)
    reply(client, post, "refi")
    sweep(client)
    assert not crm.called
    assert deliveries(ctx) == []
    reply(client, post, "can I lock my rate?")
    sweep(client)
    assert [b["event"] for b in received(crm)] == ["lead.handoff"]


def test_deliver_right_after_commit_without_a_sweep(client, post, ctx, crm) -> None:
    """The delivery loop is woken by the commit that queued the row; no sweep of the worker runs here."""
    loop = client.app.state.worker.crm_webhooks
    loop.start()
    try:
        missed(client, post)
        deadline = time.monotonic() + 10
        while not crm.called and time.monotonic() < deadline:
            time.sleep(0.02)
        assert crm.call_count == 1
    finally:
        loop.stop()
    deadline = time.monotonic() + 5
    while deliveries(ctx)[0].status != "delivered" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert deliveries(ctx)[0].status == "delivered"


def test_wake_listeners_only_after_outermost_commit(ctx) -> None:
    """A savepoint released after the row was queued (insert_once does that) commits nothing: no wake yet."""
    woken = threading.Event()
    stop = crm_webhooks.on_queued(ctx.engine, woken.set)
    try:
        with Session(ctx.engine) as session:
            broker = session.exec(select(Broker).where(Broker.twilio_number == BROKER)).one()
            lead = Lead(broker_id=broker.id or 0, phone=CALLER)
            session.add(lead)
            session.flush()
            events.record(session, broker=broker, lead=lead, kind=EventKind.missed_call, created=True)
            with session.begin_nested():
                session.add(Lead(broker_id=broker.id or 0, phone="+14155550198"))
            assert not woken.is_set()
            session.rollback()
            assert not woken.is_set()
            session.add(lead := Lead(broker_id=broker.id or 0, phone=CALLER))
            session.flush()
            events.record(session, broker=broker, lead=lead, kind=EventKind.missed_call, created=True)
            with session.begin_nested():
                session.add(Lead(broker_id=broker.id or 0, phone="+14155550198"))
            assert not woken.is_set()
            session.commit()
        assert woken.is_set()
    finally:
        stop()


# ---------------------------------------------------------------------------------------------------------
# Retries, give-up and refusals


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, "delivered"), (201, "delivered"), (204, "delivered"),
        (500, "retry"), (502, "retry"), (503, "retry"), (504, "retry"), (408, "retry"), (429, "retry"),
        (None, "retry"),  # a timeout or a connection error
        (400, "failed"), (401, "failed"), (403, "failed"), (404, "failed"), (410, "failed"), (422, "failed"),
        (301, "failed"), (302, "failed"), (307, "failed"),  # redirects are not followed
    ],
)
def test_classify_crm_answer(status: int | None, expected: str) -> None:
    assert crm_delivery.verdict(status) == expected


def attempt_due(client, clock, ctx) -> WebhookDelivery:
    """Travel to the delivery's next attempt and sweep; the row afterwards (`attempted` says when the sweep ran)."""
    [row] = deliveries(ctx)
    if row.next_attempt_at > utcnow():
        clock.move_to(row.next_attempt_at + timedelta(seconds=1))
    started = utcnow()
    sweep(client)
    [row] = deliveries(ctx)
    attempted[row.id] = (started, utcnow())
    return row


attempted: dict[int, tuple[datetime, datetime]] = {}


def assert_waits(row: WebhookDelivery, seconds: float, jitter: float = crm_delivery.JITTER) -> None:
    """The row's next attempt is `seconds` (+-jitter) after the attempt that just failed."""
    started, ended = attempted[row.id]
    assert row.next_attempt_at - started >= timedelta(seconds=seconds * (1 - jitter))
    assert row.next_attempt_at - ended <= timedelta(seconds=seconds * (1 + jitter))


@pytest.mark.parametrize("webhook_events", [["lead.created"]])
@pytest.mark.parametrize(
    "failure",
    [httpx.Response(500), httpx.ReadTimeout("timed out"), httpx.ConnectError("refused")],
    ids=["500", "timeout", "connect-error"],
)
def test_retry_with_backoff_then_deliver(client, post, ctx, crm, clock, failure) -> None:
    crm.side_effect = [failure, failure, httpx.Response(200)]
    missed(client, post)
    row = attempt_due(client, clock, ctx)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error == ("HTTP 500 Internal Server Error" if isinstance(failure, httpx.Response)
                              else f"{'timeout' if isinstance(failure, httpx.ReadTimeout) else 'connection error'}"
                              f" ({type(failure).__name__})")
    assert_waits(row, 30)
    sweep(client)  # not due yet: nothing sent
    assert crm.call_count == 1
    row = attempt_due(client, clock, ctx)
    assert (row.status, row.attempts) == ("pending", 2)
    assert_waits(row, 120)
    row = attempt_due(client, clock, ctx)
    assert (row.status, row.attempts, row.response_status, row.last_error) == ("delivered", 3, 200, None)
    assert len(received(crm)) == 3
    assert len({b["id"] for b in received(crm)}) == 1  # one delivery id across its attempts


@pytest.mark.parametrize("webhook_events", [["lead.created"]])
@pytest.mark.parametrize("status", [400, 401, 404, 410, 301])
def test_fail_at_once_on_client_error(client, post, ctx, crm, clock, status) -> None:
    crm.return_value = httpx.Response(status, headers={"Location": "https://elsewhere.example.com/"})
    missed(client, post)
    row = attempt_due(client, clock, ctx)
    assert (row.status, row.attempts, row.response_status) == ("failed", 1, status)
    assert row.last_error.startswith(f"HTTP {status}")
    later(clock, 7 * 3600)
    sweep(client)
    assert crm.call_count == 1  # never retried on its own


@pytest.mark.parametrize("webhook_events", [["lead.created"]])
@pytest.mark.parametrize(
    ("retry_after", "wait"),
    [("120", 120), ("999999", 3600), (None, 30)],
    ids=["seconds", "capped", "absent"],
)
def test_honour_retry_after_on_429(client, post, ctx, crm, clock, retry_after, wait) -> None:
    headers = {"Retry-After": retry_after} if retry_after else {}
    crm.side_effect = [httpx.Response(429, headers=headers), httpx.Response(200)]
    missed(client, post)
    row = attempt_due(client, clock, ctx)
    assert (row.status, row.response_status) == ("pending", 429)
    assert_waits(row, wait, jitter=0.0 if retry_after else crm_delivery.JITTER)
    assert attempt_due(client, clock, ctx).status == "delivered"


def test_parse_retry_after_http_date() -> None:
    now = datetime(2026, 6, 10, 21, 0, tzinfo=UTC)
    assert crm_delivery.parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert crm_delivery.parse_retry_after("soon", now) is None


@pytest.mark.parametrize("webhook_events", [["lead.created"]])
def test_give_up_after_max_attempts(client, post, ctx, crm, clock) -> None:
    crm.return_value = httpx.Response(503)
    missed(client, post)
    for attempt in range(1, ctx.settings.crm_webhook_max_attempts):
        row = attempt_due(client, clock, ctx)
        assert (row.status, row.attempts) == ("pending", attempt)
    row = attempt_due(client, clock, ctx)
    assert (row.status, row.attempts) == ("failed", ctx.settings.crm_webhook_max_attempts)
    assert row.last_error == f"HTTP 503 Service Unavailable; gave up after {row.attempts} attempts"
    later(clock, 7 * 3600)
    sweep(client)
    assert crm.call_count == ctx.settings.crm_webhook_max_attempts


@pytest.mark.parametrize("webhook_events", [["lead.created"]])
def test_fail_delivery_of_removed_webhook(client, post, ctx, crm) -> None:
    missed(client, post)
    with Session(ctx.engine) as session:
        broker = session.exec(select(Broker).where(Broker.twilio_number == BROKER)).one()
        broker.webhooks = []  # as a restart with the webhook gone from the brokers file leaves the row
        session.add(broker)
        session.commit()
    sweep(client)
    assert not crm.called
    [row] = deliveries(ctx)
    assert (row.status, row.last_error) == ("failed", "webhook removed from brokers file")


@pytest.mark.parametrize("webhook_events", [["lead.created"]])
def test_sign_with_current_secret(client, post, ctx, crm) -> None:
    """A secret rotated in the brokers file signs every attempt from then on; no row holds a secret."""
    missed(client, post)
    rotated = "rotated-secret-00000000000000"
    with Session(ctx.engine) as session:
        broker = session.exec(select(Broker).where(Broker.twilio_number == BROKER)).one()
        broker.webhooks = [{"url": CRM_URL, "secret": rotated, "events": ["lead.created"]}]
        session.add(broker)
        session.commit()
    sweep(client)
    request = crm.calls[0].request
    timestamp = request.headers["X-Textback-Timestamp"]
    mac = hmac.new(rotated.encode(), f"{timestamp}.".encode() + request.content, hashlib.sha256).hexdigest()
    assert request.headers["X-Textback-Signature"] == f"v1={mac}"


@pytest.mark.parametrize("webhook_events", [["lead.created"]])
def test_take_over_stale_sending_claim(client, post, ctx, crm, clock) -> None:
    missed(client, post)
    [row] = deliveries(ctx)
    token = crm_delivery._claim(ctx, row.id, utcnow())  # a process claimed it, then died before recording
    assert token == 1
    sweep(client)
    assert not crm.called  # a live claim is left alone
    later(clock, crm_delivery.stale_after(ctx.settings).total_seconds() + 1)
    sweep(client)
    [row] = deliveries(ctx)
    assert (row.status, row.attempts, crm.call_count) == ("delivered", 2, 1)


@pytest.mark.parametrize("webhook_events", [["lead.created"]])
def test_log_failure_without_body(client, post, ctx, crm, caplog) -> None:
    crm.return_value = httpx.Response(500, json={"echo": CALLER})
    missed(client, post)
    with caplog.at_level(logging.WARNING, logger="textback.crm_webhooks"):
        sweep(client)
    [record] = [r for r in caplog.records if r.name == "textback.crm_webhooks"]
    fields = record.fields
    [row] = deliveries(ctx)
    assert record.levelno == logging.WARNING
    assert (fields["delivery_id"], fields["host"], fields["status"]) == (row.delivery_id, "hooks.zapier.com", 500)
    assert fields["outcome"] == "retry scheduled"
    logged = json.dumps(fields) + record.getMessage()
    assert CALLER[2:] not in logged
    assert "abcdef" not in logged  # the URL's path (a Zapier hook's key) stays out too


# ---------------------------------------------------------------------------------------------------------
# Privacy: a delivery's body holds the number


def test_forget_number_deletes_its_deliveries_sent_or_not(client, post, ctx, crm) -> None:
    missed(client, post)
    sweep(client)
    reply(client, post, "refi")  # queued, not yet sent
    assert {r.status for r in deliveries(ctx)} == {"delivered", "pending"}
    counts = forget_number(ctx.engine, CALLER)
    assert counts["webhook_deliveries"] == 2
    assert deliveries(ctx) == []
    sweep(client)
    assert crm.call_count == 1  # the pending one never leaves


def test_purge_old_lead_deletes_its_deliveries(client, post, ctx, crm, clock) -> None:
    missed(client, post)
    sweep(client)
    later(clock, 31 * 86400)
    assert purge_older_than(ctx.engine, 30)["webhook_deliveries"] == 1
    assert deliveries(ctx) == []
