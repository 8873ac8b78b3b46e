"""Each kind of after-response work has its own bounded threads (service.lanes): a slow dependency delays only
its own kind of work.

With every Twilio send hanging (more hanging sends than the send lane has threads, and more than the event
loop's default executor has, where this work used to run), a borrower's plain-words STOP is still recorded,
another borrower's reply is still processed and a new missed call is still stored. With reply processing held up, a new caller's opener still reaches the Messages API. Every wait is an
event or a bounded poll of the database, never a timing.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from sqlmodel import Session, select

from service import worker as worker_module
from service.models import CallEvent, InboundMessage, OptOut
from service.twilio.forms import DialStatusForm
from tests.helpers import CALLER, call_params, sent_texts, sms_params, twilio_created
from tests.llm_helpers import signed_post

DIAL = "/twilio/voice/dial-status"
WAIT = 30.0  # generous: the assertion is that it happens while the other kind of work is held, not how fast
# More than the event loop's default executor has threads (where this work used to run) and than either lane.
HELD = min(32, (os.cpu_count() or 1) + 4) + 2


@pytest.fixture
def settings_env() -> dict[str, object]:
    return {"send_threads": 2, "reply_threads": 2, "webhook_threads": 2}


def caller(i: int) -> str:
    return f"+1415555{1000 + i:04d}"


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {WAIT} s"
        time.sleep(0.05)


def in_thread(client, path: str, params: dict[str, str]) -> threading.Thread:
    """Post a signed webhook from a thread of its own (the test client returns once its follow-up is done)."""
    thread = threading.Thread(target=signed_post, args=(client, path, params), daemon=True)
    thread.start()
    return thread


def opted_out(ctx, phone: str) -> bool:
    with Session(ctx.engine) as session:
        row = session.exec(select(OptOut).where(OptOut.phone == phone)).first()
    return row is not None and row.opted_out


def reply_status(ctx, phone: str) -> str | None:
    with Session(ctx.engine) as session:
        row = session.exec(select(InboundMessage).where(InboundMessage.from_phone == phone)).first()
    return None if row is None else row.status


def stored_replies(ctx) -> int:
    with Session(ctx.engine) as session:
        return len(session.exec(select(InboundMessage.id)).all())


def call_stored(ctx, call_sid: str) -> bool:
    with Session(ctx.engine) as session:
        return session.exec(select(CallEvent).where(CallEvent.call_sid == call_sid)).first() is not None


class Hang:
    """A Messages API whose requests block until released, counting those that arrived."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.arrived = threading.Semaphore(0)
        self.to: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.to.append(dict(httpx.QueryParams(request.content.decode()))["To"])
        self.arrived.release()
        self.release.wait(WAIT * 4)
        return twilio_created(request)


@pytest.fixture
def joined() -> Iterator[list[threading.Thread]]:
    threads: list[threading.Thread] = []
    yield threads
    for thread in threads:
        thread.join(WAIT * 4)


def test_record_stop_and_missed_call_while_every_send_hangs(client, post, twilio_api, ctx, joined) -> None:
    # Two borrowers' openers went out before Twilio started hanging: no send to their numbers is in flight.
    assert post(client, DIAL, call_params(DialCallStatus="no-answer")).status_code == 200
    replier = caller(50)
    assert post(client, DIAL, call_params("CA" + "5" * 32, caller=replier, DialCallStatus="no-answer")).status_code == 200
    hang = Hang()
    twilio_api["messages"].mock(side_effect=hang)
    try:
        for i in range(HELD):
            joined.append(in_thread(client, DIAL, call_params(f"CA{i:032d}", caller=caller(i),
                                                              DialCallStatus="no-answer")))
        for _ in range(2):  # every send thread is held in a request
            assert hang.arrived.acquire(timeout=WAIT), "the openers never reached the Messages API"

        joined.append(in_thread(client, "/twilio/sms", sms_params("please stop texting me")))
        joined.append(in_thread(client, "/twilio/sms", sms_params("purchase", sender=replier)))
        joined.append(in_thread(client, DIAL, call_params("CA" + "7" * 32, caller=caller(99),
                                                          DialCallStatus="no-answer")))

        wait_for(lambda: opted_out(ctx, CALLER), "the plain-words STOP being recorded")
        wait_for(lambda: call_stored(ctx, "CA" + "7" * 32), "the new missed call being stored")
        wait_for(lambda: reply_status(ctx, replier) == "processed", "the other borrower's reply being processed")
        assert not hang.release.is_set()
        assert hang.to.count(CALLER) == 0  # nothing went to the borrower while held
    finally:
        hang.release.set()
    for thread in joined:
        thread.join(WAIT * 4)
    assert client.app.state.worker.wait_idle(WAIT)
    assert reply_status(ctx, CALLER) == "processed"
    assert hang.to.count(replier) == 1  # the next question, once released


def test_send_opener_while_reply_processing_is_held(client, post, twilio_api, ctx, monkeypatch, joined) -> None:
    for i in range(HELD):
        assert post(client, DIAL, call_params(f"CA{i:032d}", caller=caller(i),
                                              DialCallStatus="no-answer")).status_code == 200
    release, started = threading.Event(), threading.Semaphore(0)
    real = worker_module.conversation.analyze_reply

    def held(ctx_, inbound):  # the real analysis, once released
        started.release()
        release.wait(WAIT * 4)
        return real(ctx_, inbound)

    monkeypatch.setattr(worker_module.conversation, "analyze_reply", held)
    newcomer = caller(99)
    try:
        for i in range(HELD):
            joined.append(in_thread(client, "/twilio/sms", sms_params("purchase", sender=caller(i))))
        for _ in range(2):  # every reply thread is held
            assert started.acquire(timeout=WAIT), "the replies were never processed"
        wait_for(lambda: stored_replies(ctx) == HELD, "every reply being stored")  # their follow-ups come first

        joined.append(in_thread(client, DIAL, call_params("CA" + "7" * 32, caller=newcomer,
                                                          DialCallStatus="no-answer")))

        wait_for(lambda: newcomer in [t["To"] for t in sent_texts(twilio_api["messages"])],
                 "the newcomer's opener reaching the Messages API")
        assert not release.is_set()
    finally:
        release.set()
    for thread in joined:
        thread.join(WAIT * 4)
    assert client.app.state.worker.wait_idle(WAIT)
    with Session(ctx.engine) as session:
        statuses = set(session.exec(select(InboundMessage.status)).all())
    assert statuses == {"processed"}


def test_run_webhook_transactions_on_at_most_webhook_threads(client, post, ctx, monkeypatch, joined) -> None:
    """TEXTBACK_WEBHOOK_THREADS bounds the webhooks' transactions; the others wait their turn, and all are stored."""
    release, inside, most = threading.Event(), [0], [0]
    lock = threading.Lock()
    real = DialStatusForm.parse.__func__  # type: ignore[attr-defined]

    def held(cls, form, broker_for):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        release.wait(WAIT * 4)
        with lock:
            inside[0] -= 1
        return real(cls, form, broker_for)

    monkeypatch.setattr(DialStatusForm, "parse", classmethod(held))
    sids = [f"CA{i:032d}" for i in range(5)]
    limiter = client.app.state.webhooks
    try:
        for i, sid in enumerate(sids):
            joined.append(in_thread(client, DIAL, call_params(sid, caller=caller(i), DialCallStatus="no-answer")))
        wait_for(lambda: limiter.statistics().tasks_waiting == 3, "three webhooks waiting for a thread")
        assert inside[0] == 2
    finally:
        release.set()
    for thread in joined:
        thread.join(WAIT * 4)
    assert most[0] == 2
    assert all(call_stored(ctx, sid) for sid in sids)
