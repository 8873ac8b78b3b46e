"""The openers tally (service.opener_tally): a trigger counts every borrower opener stored, by minute, and the
circuit breaker reads that upper bound first; every decision is the exact count's, and a database without the
trigger counts exactly (fail closed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, text
from sqlmodel import Session, select

from service import opener_tally
from service.models import MessageStatus, OpenerTally, OutboundMessage
from service.sending import gates
from tests.helpers import BROKER
from tests.test_gates import missed, platform_breaker_at_three, policy_with  # noqa: F401 - a fixture


def tallied(ctx) -> int:
    with Session(ctx.engine) as session:
        return int(session.exec(select(func.coalesce(func.sum(OpenerTally.n), 0))).one())


def opener(ctx, index: int, *, status: str = MessageStatus.sent, purpose: str = "opener",
           audience: str = "borrower", created_at: datetime | None = None) -> OutboundMessage:
    broker = ctx.broker_for(BROKER)
    row = OutboundMessage(broker_id=broker.id, to_phone=f"+1415556{index:04d}", from_phone=BROKER, body="x",
                          template_id=purpose, purpose=purpose, audience=audience, status=status)
    if created_at is not None:
        row.created_at = created_at
    return row


def store(ctx, *rows: OutboundMessage) -> None:
    with Session(ctx.engine, expire_on_commit=False) as session:
        session.add_all(rows)
        session.commit()


def counts(ctx, *, tally: bool, now: datetime) -> gates.QueueCounts:
    held = ctx.opener_tally
    ctx.opener_tally = tally
    try:
        with Session(ctx.engine) as session:
            return gates.read_counts(session, ctx, broker=ctx.broker_for(BROKER), lead=None, opener=True, now=now)
    finally:
        ctx.opener_tally = held


def test_tally_in_force_after_migrations(ctx) -> None:
    assert ctx.opener_tally is True
    assert opener_tally.in_use(ctx) is True


def test_tally_counts_borrower_openers_from_every_insert_path(client, post, twilio_api, ctx) -> None:
    """The webhook's own INSERT, the ORM's flush and a table INSERT all count; other texts do not."""
    missed(client, post, caller="+14155550001", index=1)  # a new caller: the hot path's INSERT ... ON CONFLICT
    assert tallied(ctx) == 1
    row = opener(ctx, 1)
    store(ctx, row)
    assert tallied(ctx) == 2
    with Session(ctx.engine) as session:
        session.execute(insert(OutboundMessage), [{
            "broker_id": ctx.broker_for(BROKER).id, "to_phone": "+14155560002", "from_phone": BROKER, "body": "x",
            "template_id": "opener", "purpose": "opener", "audience": "borrower", "status": "pending",
            "created_at": datetime.now(UTC), "next_attempt_at": datetime.now(UTC), "updated_at": datetime.now(UTC)}])
        session.commit()
    assert tallied(ctx) == 3
    store(ctx, opener(ctx, 3, purpose="question"), opener(ctx, 4, purpose="alert", audience="broker"),
          opener(ctx, 5, audience="broker"))
    assert tallied(ctx) == 3
    with Session(ctx.engine) as session:
        cell = session.get(OpenerTally, (opener_tally.minute_of(row.created_at), (row.id or 0) % opener_tally.SHARDS))
    assert cell is not None
    assert cell.n >= 1


@pytest.mark.parametrize(("counted", "not_counted", "before_window"), [
    (2, 0, 0), (2, 3, 0), (2, 0, 3), (3, 0, 0), (3, 4, 2), (4, 0, 0), (0, 5, 0),
])
@pytest.mark.usefixtures("platform_breaker_at_three")
def test_breaker_decision_same_with_tally_as_exact_count(ctx, counted: int, not_counted: int,
                                                          before_window: int) -> None:
    """Openers counted (sent, pending), openers the breaker does not count (suppressed, failed: the tally does),
    and openers just before the window (in its first minute: the tally's bound holds them too)."""
    now = datetime.now(UTC)
    since = now - timedelta(minutes=ctx.sending_policy.caps.breaker_window_minutes)
    rows = [opener(ctx, i, status=MessageStatus.sent if i % 2 else MessageStatus.pending) for i in range(counted)]
    rows += [opener(ctx, 100 + i, status=MessageStatus.suppressed if i % 2 else MessageStatus.failed)
             for i in range(not_counted)]
    early = since.replace(second=0, microsecond=0)  # the minute the window starts in, before its start
    rows += [opener(ctx, 200 + i, created_at=early) for i in range(before_window) if early < since]
    store(ctx, *rows)
    exact, bounded = counts(ctx, tally=False, now=now), counts(ctx, tally=True, now=now)
    assert tallied(ctx) >= exact.openers
    assert gates.breaker_tripped(ctx, bounded) == gates.breaker_tripped(ctx, exact)
    assert (gates.breaker_tripped(ctx, exact) is not None) == (counted >= 3)
    if counted >= 3:  # what a person reads is the exact count's
        assert bounded.openers == exact.openers == 3
    assert bounded.openers >= exact.openers


@pytest.mark.usefixtures("platform_breaker_at_three")
def test_breaker_counts_exactly_when_trigger_missing(ctx, collaborators) -> None:
    """A database whose trigger is gone (tables made from the models): start-up says so, and the breaker still
    trips, from the exact count; the tally, left empty, would never have tripped it."""
    with ctx.engine.begin() as conn:
        opener_tally.uninstall(conn)
    from service.context import build_context

    later = build_context(ctx.settings, **collaborators)
    try:
        assert later.opener_tally is False
        assert opener_tally.in_use(later) is False
        store(later, *(opener(later, i) for i in range(3)))
        assert tallied(later) == 0
        with Session(later.engine) as session:
            found = gates.read_counts(session, later, broker=later.broker_for(BROKER), lead=None, opener=True,
                                      now=datetime.now(UTC))
        assert gates.breaker_tripped(later, found) == "circuit breaker: 3 or more openers in 10 min across all brokers"
    finally:
        later.close()


def test_tally_not_used_for_window_longer_than_it_keeps(tmp_path: Path, collaborators, ctx) -> None:
    ctx._sending = policy_with(tmp_path, breaker_window_minutes=opener_tally.MAX_WINDOW_MINUTES + 1)
    assert opener_tally.in_use(ctx) is False


def test_prune_tally_drops_only_minutes_older_than_kept(ctx) -> None:
    now = datetime.now(UTC)
    minutes = [opener_tally.minute_of(now - age) for age in (timedelta(days=3), timedelta(days=1), timedelta(0))]
    with ctx.engine.begin() as conn:
        conn.execute(text("DELETE FROM openertally"))
        for minute in minutes:
            conn.execute(text("INSERT INTO openertally (minute, shard, n) VALUES (:m, 0, 1)"), {"m": minute})
    assert opener_tally.prune(ctx.engine, now=now, keep=opener_tally.KEEP) == 1
    with Session(ctx.engine) as session:
        assert sorted(t.minute for t in session.exec(select(OpenerTally))) == minutes[1:]
