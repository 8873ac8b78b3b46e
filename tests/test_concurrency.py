"""Several service instances on one database: concurrent duplicates still give one text, one stored message.

Two app instances are two `create_app(ctx=...)` test clients, each with its own context and engine (its own
connection pool), on the same database: what two `textback serve` processes share. Every webhook is
delivered to both instances at the same instant (a barrier), twice each. SQLite always; PostgreSQL too when
TEXTBACK_TEST_POSTGRES_URL is set (the `database_url` fixture). The outbox claim is checked by running
`send_due` from several threads and both contexts over the same pending rows.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from sqlmodel import Session, func, select

from service import sender
from service.app import create_app
from service.context import AppContext
from service.models import CallEvent, InboundMessage, Lead, OutboundMessage
from service.twilio.signature import sign
from tests.helpers import (
    BROKER,
    BROKER2,
    PUBLIC_URL,
    TWILIO_TOKEN,
    call_params,
    sent_texts,
    sms_params,
    twilio_created,
)

pytestmark = pytest.mark.postgres

DIAL = "/twilio/voice/dial-status"
COPIES_PER_INSTANCE = 2
CALLERS = [f"+1415555{n:04d}" for n in range(2001, 2011)]  # under the per-broker breaker (15)


@pytest.fixture
def clients(ctx, second_ctx, twilio_api) -> Iterator[list[TestClient]]:
    """Two app instances on one database, each running its own after-response work."""
    with TestClient(app=create_app(ctx=ctx, run_worker=False), base_url="http://testserver.local") as one, \
         TestClient(app=create_app(ctx=second_ctx, run_worker=False), base_url="http://testserver.local") as two:
        yield [one, two]


def slow_twilio(delay: float = 0.01) -> Callable[[httpx.Request], httpx.Response]:
    """The Messages API taking a few milliseconds, so concurrent senders overlap."""

    def respond(request: httpx.Request) -> httpx.Response:
        time.sleep(delay)
        return twilio_created(request)

    return respond


def signed_post(client: TestClient, path: str, params: dict[str, str]) -> httpx.Response:
    signature = sign(token=TWILIO_TOKEN, url=PUBLIC_URL + path, params=params)
    return client.post(path, data=params, headers={"X-Twilio-Signature": signature})


def deliver_everywhere(clients: list[TestClient], path: str, params: dict[str, str]) -> list[int]:
    """The same webhook to every instance, COPIES_PER_INSTANCE times each, all released at once."""
    targets = [c for c in clients for _ in range(COPIES_PER_INSTANCE)]
    barrier = threading.Barrier(len(targets))

    def one(client: TestClient) -> int:
        barrier.wait()
        return signed_post(client, path, params).status_code

    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        return list(pool.map(one, targets))


def dial(call_sid: str, caller: str, to: str = BROKER) -> dict[str, str]:
    return call_params(call_sid, caller, to, CallStatus="in-progress", DialCallStatus="no-answer",
                       DialCallSid="CA" + "9" * 32)


def rows(ctx: AppContext, model: Any, *where: Any) -> list[Any]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(model).where(*where)))


def test_send_one_opener_when_dial_status_hits_two_instances_concurrently(clients, ctx, twilio_api) -> None:
    twilio_api["messages"].mock(side_effect=slow_twilio())
    for n, caller in enumerate(CALLERS):
        statuses = deliver_everywhere(clients, DIAL, dial(f"CA{n:032x}", caller))
        assert statuses == [200] * len(statuses)
    sent = Counter(t["To"] for t in sent_texts(twilio_api["messages"]))
    assert sent == dict.fromkeys(CALLERS, 1)
    openers = rows(ctx, OutboundMessage, OutboundMessage.purpose == "opener")
    assert sorted(m.to_phone for m in openers) == sorted(CALLERS)
    assert all(m.status == "sent" for m in openers)
    events = rows(ctx, CallEvent, CallEvent.kind == "dial-status")
    assert len(events) == len(CALLERS)
    leads = rows(ctx, Lead)
    assert len(leads) == len(CALLERS)


def test_send_one_opener_when_repeated_calls_hit_two_instances_concurrently(clients, ctx, twilio_api) -> None:
    """Different calls from one caller at once (redial): the cooldown claim lets one opener through."""
    twilio_api["messages"].mock(side_effect=slow_twilio())
    caller = CALLERS[0]
    calls = [dial(f"CA{n:032x}", caller) for n in range(4)]
    barrier = threading.Barrier(len(calls))

    def one(pair: tuple[TestClient, dict[str, str]]) -> int:
        barrier.wait()
        return signed_post(pair[0], DIAL, pair[1]).status_code

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        statuses = list(pool.map(one, zip(clients * 2, calls, strict=True)))
    assert statuses == [200] * len(calls)
    assert [t["To"] for t in sent_texts(twilio_api["messages"])] == [caller]
    assert len(rows(ctx, CallEvent, CallEvent.kind == "dial-status")) == len(calls)


def test_send_one_opener_per_broker_when_both_brokers_called_concurrently(clients, ctx, twilio_api) -> None:
    twilio_api["messages"].mock(side_effect=slow_twilio())
    caller = CALLERS[1]
    for n, broker in enumerate((BROKER, BROKER2)):
        deliver_everywhere(clients, DIAL, dial(f"CA{n + 100:032x}", caller, broker))
    assert sorted(t["From"] for t in sent_texts(twilio_api["messages"])) == sorted([BROKER, BROKER2])


def test_store_inbound_once_when_sms_hits_two_instances_concurrently(clients, ctx, twilio_api) -> None:
    twilio_api["messages"].mock(side_effect=slow_twilio())
    callers = CALLERS[:6]
    for n, caller in enumerate(callers):
        signed_post(clients[n % 2], DIAL, dial(f"CA{n:032x}", caller))
    assert len(sent_texts(twilio_api["messages"])) == len(callers)
    replies = [sms_params("refi, in the next month or so", sender=caller) for caller in callers]
    for params in replies:
        statuses = deliver_everywhere(clients, "/twilio/sms", params)
        assert statuses == [200] * len(statuses)
    stored = rows(ctx, InboundMessage)
    assert sorted(m.message_sid for m in stored) == sorted(p["MessageSid"] for p in replies)
    assert all(m.status == "processed" for m in stored)
    assert all(m.attempts == 1 for m in stored), "each reply processed by exactly one instance"
    # Each reply was answered once (one next question per borrower, possibly held for quiet hours).
    answers = rows(ctx, OutboundMessage, OutboundMessage.purpose != "opener", OutboundMessage.audience == "borrower")
    assert sorted(m.to_phone for m in answers) == sorted(callers)
    per_caller = Counter(t["To"] for t in sent_texts(twilio_api["messages"]))
    for answer in answers:
        assert per_caller[answer.to_phone] == 1 + (answer.status == "sent")


def test_apply_stop_once_when_stop_hits_two_instances_concurrently(clients, ctx, twilio_api) -> None:
    twilio_api["messages"].mock(side_effect=slow_twilio())
    caller = CALLERS[2]
    signed_post(clients[0], DIAL, dial("CA" + "4" * 32, caller))
    statuses = deliver_everywhere(clients, "/twilio/sms", sms_params("STOP", sender=caller))
    assert statuses == [200] * len(statuses)
    bodies = [t["Body"] for t in sent_texts(twilio_api["messages"]) if t["To"] == caller]
    assert len(bodies) == 2, "the opener and exactly one opt-out confirmation"
    assert len(rows(ctx, InboundMessage)) == 1


def _insert_pending(ctx: AppContext, count: int) -> list[int]:
    """Pending rows straight into the outbox (the claim is under test, not the gates before queueing)."""
    from service.models import Broker

    with Session(ctx.engine, expire_on_commit=False) as session:
        broker = session.exec(select(Broker).where(Broker.twilio_number == BROKER)).one()
        msgs = [OutboundMessage(broker_id=broker.id, audience="broker", purpose="alert", template_id="alert_reply",
                                to_phone=f"+1415555{3000 + n:04d}", from_phone=BROKER, body=f"claim test {n}")
                for n in range(count)]
        session.add_all(msgs)
        session.commit()
        return [m.id for m in msgs if m.id is not None]


@pytest.mark.parametrize("explicit_ids", [False, True], ids=["sweep", "ids"])
def test_send_each_pending_text_once_when_send_due_runs_in_parallel(ctx, second_ctx, twilio_api, explicit_ids) -> None:
    twilio_api["messages"].mock(side_effect=slow_twilio(0.005))
    ids = _insert_pending(ctx, 40)
    contexts = [ctx, second_ctx, ctx, second_ctx]
    barrier = threading.Barrier(len(contexts))
    errors: list[BaseException] = []

    def run(context: AppContext) -> dict[str, int]:
        barrier.wait()
        try:
            return sender.send_due(context, list(ids) if explicit_ids else None)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            raise

    with ThreadPoolExecutor(max_workers=len(contexts)) as pool:
        results = list(pool.map(run, contexts))
    assert not errors
    assert sum(r.get("sent", 0) for r in results) == len(ids)
    assert sum(1 for r in results if r.get("sent")) >= 1
    sent = Counter(t["To"] for t in sent_texts(twilio_api["messages"]))
    assert len(sent) == len(ids)
    assert set(sent.values()) == {1}
    with Session(ctx.engine) as session:
        statuses = dict(session.exec(
            select(OutboundMessage.status, func.count()).group_by(OutboundMessage.status)
        ).all())
        attempts = set(session.exec(select(OutboundMessage.attempts)).all())
    assert statuses == {"sent": len(ids)}
    assert attempts == {1}
