"""`GET /ready`: 503 when the database is unreachable or the work backlog is stuck (a due text, a reply or a
spooled webhook older than TEXTBACK_READY_BACKLOG_SECONDS), with a JSON body saying which; a text deferred to
the end of quiet hours is not stuck before then."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlmodel import Session, select

from service.models import InboundMessage, Lead, MessageStatus, OutboundMessage, utcnow
from tests.helpers import BROKER, CALLER, dial_params
from tests.outage import database_down

DIAL = "/twilio/voice/dial-status"
BOUND = 300.0


@pytest.fixture
def settings_env() -> dict[str, object]:
    # Openers obey quiet hours here (the shipped policy may exempt them as a reply to the caller's own call).
    return {"ready_backlog_seconds": BOUND, "opener_is_reply_override": False}


def _openers(ctx) -> list[OutboundMessage]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(OutboundMessage).where(OutboundMessage.to_phone == CALLER)).all())


def test_answer_ready_when_database_up_and_nothing_waits(client) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["backlog"] == {
        "status": "ok", "stuck": [], "bound_seconds": BOUND, "due_texts": 0, "oldest_due_seconds": 0.0,
        "unprocessed_replies": 0, "oldest_reply_seconds": 0.0, "spooled_files": 0, "oldest_spool_seconds": 0.0}


def test_answer_503_when_database_unreachable(client, ctx) -> None:
    with database_down(ctx):
        response = client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "not ready",
                               "checks": {"database": "unreachable", "backlog": {"status": "unknown"},
                                          "output_guard": "ok"}}
    assert client.get("/ready").status_code == 200  # back as soon as the database answers


def test_answer_503_when_failed_send_left_due_past_bound(client, post, twilio_api, clock, ctx) -> None:
    """Twilio failed the opener; with no worker sweeping, the retry falls due and then waits past the bound."""
    twilio_api.routes["messages"].mock(return_value=httpx.Response(500, json={"message": "boom"}))
    assert post(client, DIAL, dial_params("no-answer")).status_code == 200
    [opener] = _openers(ctx)
    assert opener.status == MessageStatus.pending
    clock.move_to(opener.next_attempt_at + timedelta(seconds=BOUND - 30))
    assert client.get("/ready").status_code == 200  # due, but not for long
    clock.move_to(opener.next_attempt_at + timedelta(seconds=BOUND + 60))
    response = client.get("/ready")
    assert response.status_code == 503
    backlog = response.json()["checks"]["backlog"]
    assert response.json()["status"] == "not ready"
    assert backlog["status"] == "stuck"
    assert backlog["stuck"] == ["texts"]
    assert backlog["due_texts"] == 1
    assert BOUND + 60 <= backlog["oldest_due_seconds"] < BOUND + 120


def test_answer_ready_while_opener_deferred_to_quiet_hours_end(client, post, twilio_api, clock, ctx) -> None:
    """23:00 in California: the opener waits for 08:00 and is not stuck before; it is once 08:00 is long past."""
    clock.move_to(datetime(2026, 6, 11, 6, 0, tzinfo=UTC))  # 23:00 PDT
    assert post(client, DIAL, dial_params("no-answer")).status_code == 200
    [opener] = _openers(ctx)
    assert opener.status == MessageStatus.pending
    assert opener.next_attempt_at == datetime(2026, 6, 11, 15, 0, tzinfo=UTC)  # 08:00 PDT
    clock.move_to(datetime(2026, 6, 11, 14, 59, tzinfo=UTC))  # 8 h 59 min later: still before 08:00
    response = client.get("/ready")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["backlog"]["due_texts"] == 0
    clock.move_to(datetime(2026, 6, 11, 15, 10, tzinfo=UTC))  # 08:10, nobody sent it
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["backlog"]["stuck"] == ["texts"]


def test_answer_503_when_reply_left_unprocessed_past_bound(client, ctx) -> None:
    """A reply stored as received (what a crash leaves) and not processed within the bound."""
    with Session(ctx.engine) as session:
        broker = ctx.broker_for(BROKER)
        lead = Lead(broker_id=broker.id, phone=CALLER)
        session.add(lead)
        session.flush()
        session.add(InboundMessage(message_sid="SM" + "e" * 32, broker_id=broker.id, lead_id=lead.id,
                                   from_phone=CALLER, body="purchase", received_at=utcnow() - timedelta(minutes=10)))
        session.commit()
    response = client.get("/ready")
    assert response.status_code == 503
    backlog = response.json()["checks"]["backlog"]
    assert backlog["stuck"] == ["replies"]
    assert backlog["unprocessed_replies"] == 1
    assert backlog["oldest_reply_seconds"] >= 600


def test_answer_503_when_spooled_webhook_not_replayed_past_bound(client, ctx) -> None:
    """A spool file nobody replayed (no worker on this host) while the database answers."""
    assert ctx.spool is not None
    ctx.spool.append("/twilio/sms", {"From": CALLER, "Body": "purchase"})
    assert client.get("/ready").status_code == 200  # just written
    [spooled] = [p for p in ctx.spool.directory.iterdir() if p.name.startswith("spool-")]
    old = time.time() - BOUND - 60
    os.utime(spooled, (old, old))
    response = client.get("/ready")
    assert response.status_code == 503
    backlog = response.json()["checks"]["backlog"]
    assert backlog["stuck"] == ["spool"]
    assert backlog["spooled_files"] == 1
