"""A send of a queued opener is at most three SQL statements on both databases, with the same outcome.

Counted with a `before_cursor_execute` listener on the context's engine, transaction control (BEGIN, COMMIT,
ROLLBACK) aside: the claim returning the row with the opt-out re-checked in its WHERE, the opt-out lock's read
(on PostgreSQL the lock is taken before the claim, whose WHERE is then that read), and the outcome's UPDATE,
which also counts the delivery callbacks already stored for the SID.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import event
from sqlmodel import Session, select

from service import optout_lock, outbox, row_objects, sender, store
from service.db import session_scope
from service.models import DeliveryEvent, Lead, LeadEvent, MessageStatus, OptOut, OutboundMessage
from tests.helpers import BROKER, BROKER2, CALLER, message_json, rendered, sent_texts

pytestmark = pytest.mark.postgres

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK")
SID = "SM" + "5" * 32


@contextmanager
def counted(ctx) -> Iterator[list[str]]:
    """The SQL statements the engine runs inside the block (transaction control not counted)."""
    statements: list[str] = []

    def note(_conn, _cursor, statement: str, *_args: object) -> None:
        if not statement.lstrip().upper().startswith(TRANSACTION_CONTROL):
            statements.append(statement)

    event.listen(ctx.engine, "before_cursor_execute", note)
    try:
        yield statements
    finally:
        event.remove(ctx.engine, "before_cursor_execute", note)


def queue_opener(ctx, broker_phone: str = BROKER) -> int:
    """A pending opener to CALLER, queued as the missed-call webhook queues it (gates and guard at queue time)."""
    with Session(ctx.engine, expire_on_commit=False) as session:
        broker = ctx.broker_for(broker_phone)
        lead = store.get_or_create_lead(session, broker.id, CALLER)
        queued = outbox.queue_text(session, ctx, broker=broker, lead=lead, to=CALLER, template_id="opener",
                                   purpose="opener", now=datetime.now(UTC))
        session.commit()
        assert queued is not None
        assert queued.msg.status == MessageStatus.pending
        return queued.msg.id


def row(ctx, msg_id: int) -> OutboundMessage:
    with Session(ctx.engine) as session:
        found = session.get(OutboundMessage, msg_id)
        assert found is not None
        return found


def answer_with_sid(twilio_api) -> None:
    twilio_api["messages"].mock(side_effect=lambda request: httpx.Response(201, json=message_json(
        CALLER, BROKER, dict(httpx.QueryParams(request.content.decode()))["Body"], sid=SID)))


def test_send_opener_in_at_most_three_statements(ctx, twilio_api) -> None:
    answer_with_sid(twilio_api)
    msg_id = queue_opener(ctx)
    with counted(ctx) as statements:
        assert sender.send_one(ctx, msg_id) == MessageStatus.sent
    assert len(statements) <= 3, "\n".join(statements)
    [text] = sent_texts(twilio_api["messages"])
    assert (text["To"], text["From"], text["Body"]) == (CALLER, BROKER, rendered(ctx, "opener"))
    sent = row(ctx, msg_id)
    assert (sent.status, sent.twilio_sid, sent.attempts, sent.last_error) == (MessageStatus.sent, SID, 1, None)
    assert sent.sent_at is not None
    assert sent.claimed_at is not None
    assert sent.verdicts is not None
    assert sent.verdicts[-1]["stage"] == "send"
    assert sent.verdicts[-1]["verdict"] == "allow"


def test_send_opener_once_when_claimed_twice(ctx, twilio_api) -> None:
    msg_id = queue_opener(ctx)
    assert sender.send_one(ctx, msg_id) == MessageStatus.sent
    assert sender.send_one(ctx, msg_id) is None  # claimed (and sent) already
    assert len(sent_texts(twilio_api["messages"])) == 1


def opt_out_directly(ctx, broker_phone: str) -> None:
    """An opt-out row recorded with `broker_phone`'s broker, without touching any queued text (as a STOP to
    another broker of the scope leaves them): only the send-time check can stop the opener."""
    with Session(ctx.engine) as session:
        session.add(OptOut(broker_id=ctx.broker_for(broker_phone).id, phone=CALLER, opted_out=True,
                           source="keyword:STOP", said_at=datetime.now(UTC)))
        session.commit()


def test_suppress_send_when_number_opted_out_after_queueing(ctx, twilio_api) -> None:
    msg_id = queue_opener(ctx)
    opt_out_directly(ctx, BROKER)
    assert sender.send_one(ctx, msg_id) == MessageStatus.suppressed
    assert sent_texts(twilio_api["messages"]) == []
    held = row(ctx, msg_id)
    assert held.last_error is not None
    assert held.last_error.startswith("opted out before send (brokerage scope: STOP")
    assert held.attempts == 1  # the claim counted, as before the claim checked the opt-out itself


def test_send_opener_when_another_brokerage_has_the_opt_out(ctx, twilio_api) -> None:
    msg_id = queue_opener(ctx)
    opt_out_directly(ctx, BROKER2)  # Harbor Mortgage Group: not Summit Home Loans' brokerage
    assert sender.send_one(ctx, msg_id) == MessageStatus.sent
    assert len(sent_texts(twilio_api["messages"])) == 1


@pytest.mark.parametrize(("status", "code", "reason"), [
    ("undelivered", 30006, "landline_or_unreachable"),
    ("failed", 30003, "unreachable"),
])
def test_mark_lead_when_failure_callback_beat_the_sid(ctx, twilio_api, status, code, reason) -> None:
    """A failure stored before the send wrote its SID marks the lead and goes into its history (opener_failed)."""
    answer_with_sid(twilio_api)
    msg_id = queue_opener(ctx)
    with Session(ctx.engine) as session:
        session.add(DeliveryEvent(message_sid=SID, status=status, error_code=code))
        session.commit()
    assert sender.send_one(ctx, msg_id) == MessageStatus.sent
    sent = row(ctx, msg_id)
    assert (sent.twilio_sid, sent.delivery_status, sent.error_code) == (SID, status, code)
    with Session(ctx.engine) as session:
        lead = session.exec(select(Lead).where(Lead.phone == CALLER)).one()
        kinds = [e.kind for e in session.exec(select(LeadEvent).where(LeadEvent.lead_id == sent.lead_id))]
    assert lead.not_textable_reason == reason
    assert kinds.count("opener_failed") == 1


@pytest.mark.parametrize(("early", "expected"), [
    pytest.param(["delivered"], "delivered", id="delivered-first"),
    pytest.param(["sent", "delivered"], "delivered", id="sent-then-delivered"),
    pytest.param(["delivered", "sent"], "delivered", id="late-sent-kept-out"),
    pytest.param(["sent"], "sent", id="sent-only"),
])
def test_apply_delivery_callback_that_beat_the_sid(ctx, twilio_api, early, expected) -> None:
    """A "delivered" stored before the send wrote its SID is not left behind the API's "queued", and the
    opener's delivery reaches the lead's history (the report counts delivered openers)."""
    answer_with_sid(twilio_api)
    msg_id = queue_opener(ctx)
    with Session(ctx.engine) as session:
        for status in early:
            session.add(DeliveryEvent(message_sid=SID, status=status))
        session.commit()
    assert sender.send_one(ctx, msg_id) == MessageStatus.sent
    sent = row(ctx, msg_id)
    assert (sent.twilio_sid, sent.delivery_status, sent.error_code) == (SID, expected, None)
    with Session(ctx.engine) as session:
        kinds = [e.kind for e in session.exec(select(LeadEvent).where(LeadEvent.lead_id == sent.lead_id))]
    assert kinds.count("opener_delivered") == (1 if expected == "delivered" else 0)


def test_defer_opener_not_yet_due_without_sending(ctx, twilio_api) -> None:
    msg_id = queue_opener(ctx)
    with Session(ctx.engine) as session:
        queued = session.get(OutboundMessage, msg_id)
        assert queued is not None
        queued.next_attempt_at = datetime.now(UTC) + timedelta(minutes=5)
        session.add(queued)
        session.commit()
    assert sender.send_one(ctx, msg_id) is None
    assert sent_texts(twilio_api["messages"]) == []
    assert row(ctx, msg_id).status == MessageStatus.pending


def test_suppress_send_when_opt_out_commits_while_send_waits_for_its_lock(ctx, twilio_api) -> None:
    msg_id = queue_opener(ctx)
    broker_id = ctx.broker_for(BROKER).id
    result: list[str | None] = []
    with Session(ctx.engine) as change:  # an opt-out in progress holds the number's lock
        optout_lock.lock_for_change(change, broker_id, CALLER, wait=5)
        change.add(OptOut(broker_id=broker_id, phone=CALLER, opted_out=True, source="keyword:STOP",
                          said_at=datetime.now(UTC)))
        change.flush()
        sending = threading.Thread(target=lambda: result.append(sender.send_one(ctx, msg_id)))
        sending.start()
        time.sleep(0.5)
        assert result == [], "the send waits for the opt-out's transaction"
        change.commit()
    sending.join(30)
    assert result == [MessageStatus.suppressed]
    assert sent_texts(twilio_api["messages"]) == []


def test_hold_opt_out_until_early_locked_send_is_done(ctx) -> None:
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("SQLite takes the number's lock after the claim (its file lock), never before")
    msg_id = queue_opener(ctx)
    committed = threading.Event()

    def opt_out() -> None:
        with session_scope(ctx.engine) as session:
            store.set_opt_out(session, broker_id=ctx.broker_for(BROKER).id, phone=CALLER, opted_out=True,
                              source="test", wait_seconds=30)
        committed.set()

    with optout_lock.hold_row_for_send(ctx.engine, msg_id) as early:
        assert early.locked
        changing = threading.Thread(target=opt_out)
        changing.start()
        assert not committed.wait(0.5), "the opt-out waits for the send that locked the number before its claim"
    changing.join(30)
    assert committed.is_set()


def test_build_claimed_row_as_the_orm_loads_it(ctx) -> None:
    """The claim's row, built without the ORM's loader, is a persistent object equal to a fresh load, with no
    pending changes: the commit after it writes nothing."""

    msg_id = queue_opener(ctx)
    with Session(ctx.engine, expire_on_commit=False) as session:
        claimed = sender._claim_checked(session, ctx, msg_id, datetime.now(UTC))
        assert claimed is not None
        assert claimed in session
        assert not session.dirty
        with counted(ctx) as statements:
            session.commit()
        assert statements == []
    loaded = row(ctx, msg_id)
    assert claimed.model_dump() == loaded.model_dump()
    assert (claimed.status, claimed.attempts) == (MessageStatus.sending, 1)
    assert set(row_objects.row_keys(OutboundMessage)) == set(OutboundMessage.model_fields)


def test_send_opener_when_lock_folder_removed_while_running(ctx, twilio_api, tmp_path) -> None:
    """A SQLite database's lock folder made once per process and then removed (a cleanup, an operator) is made
    again by the next send, which goes out."""
    import shutil

    if ctx.engine.dialect.name != "sqlite":
        pytest.skip("the lock files are SQLite's")
    first = queue_opener(ctx)
    assert sender.send_one(ctx, first) == MessageStatus.sent
    folder = optout_lock._lock_dir(ctx.engine)
    assert folder.is_dir()
    shutil.rmtree(folder)
    answer_with_sid(twilio_api)
    second = queue_opener(ctx, BROKER2)
    assert sender.send_one(ctx, second) == MessageStatus.sent
    assert folder.is_dir()
    assert len(sent_texts(twilio_api["messages"])) == 2
