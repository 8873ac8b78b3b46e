"""PostgreSQL connections are pinged on checkout only after sitting idle (service.db.ping_when_idle): a pool in
steady use pays no round trip per transaction, an idle connection whose server side died is replaced before use,
and one that dies in steady use fails a single operation, after which the pool is renewed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from service import db


@pytest.fixture
def engine(postgres_url: str | None, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Engine, list[Any]]]:
    """textback's engine on the run's PostgreSQL database, and the pings it sends (the dialect's real ping)."""
    if postgres_url is None:
        pytest.skip("TEXTBACK_TEST_POSTGRES_URL is not set")
    made = db.make_engine(postgres_url)
    pings: list[Any] = []
    real = made.dialect.do_ping

    def counted(dbapi_conn: Any) -> bool:
        pings.append(dbapi_conn)
        return real(dbapi_conn)

    monkeypatch.setattr(made.dialect, "do_ping", counted)
    yield made, pings
    made.dispose()


def backend_pid(engine: Engine) -> int:
    with engine.begin() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(postgres_url: str, pid: int) -> None:
    """End one server process from outside, as a server restart or an idle timeout does."""
    admin = create_engine(db.normalize_url(postgres_url))
    try:
        with admin.begin() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    finally:
        admin.dispose()


def test_checkout_connection_in_steady_use_sends_no_ping(engine) -> None:
    made, pings = engine
    pids = {backend_pid(made) for _ in range(20)}
    assert len(pids) == 1  # the same pooled connection, checked out twenty times
    assert pings == []


def test_checkout_idle_connection_dead_on_server_replaced_before_use(engine, postgres_url, monkeypatch) -> None:
    made, pings = engine
    first = backend_pid(made)
    terminate(postgres_url, first)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # the connection has now sat idle long enough
    second = backend_pid(made)  # no error: the ping found it dead and the pool connected again
    assert second != first
    assert len(pings) == 1


def test_checkout_idle_dead_connection_renews_whole_pool(engine, postgres_url, monkeypatch) -> None:
    """As pre-ping does: one dead connection found by a ping renews the others (dead too after a restart)."""
    made, _ = engine
    with made.connect() as first, made.connect() as second:  # two pooled connections
        pids = [int(c.execute(text("SELECT pg_backend_pid()")).scalar_one()) for c in (first, second)]
    for pid in pids:
        terminate(postgres_url, pid)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    with made.connect() as first, made.connect() as second:  # both checkouts work: neither old one is used
        fresh = [int(c.execute(text("SELECT pg_backend_pid()")).scalar_one()) for c in (first, second)]
    assert not set(fresh) & set(pids)


def test_checkout_after_ping_next_checkout_pings_connection_in_steady_use(engine, postgres_url) -> None:
    """What a send does before writing its outcome: the connection it gets is checked whatever its idle time."""
    made, pings = engine
    first = backend_pid(made)
    terminate(postgres_url, first)
    db.ping_next_checkout()
    assert backend_pid(made) != first  # no error: pinged, found dead, replaced
    assert len(pings) == 1
    backend_pid(made)
    assert len(pings) == 1  # only the next checkout


def test_checkout_idle_live_connection_pinged_and_kept(engine, monkeypatch) -> None:
    made, pings = engine
    first = backend_pid(made)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert backend_pid(made) == first
    assert len(pings) == 1


def test_checkout_connection_dead_in_steady_use_fails_once_then_pool_renewed(engine, postgres_url) -> None:
    made, pings = engine
    first = backend_pid(made)
    terminate(postgres_url, first)
    with pytest.raises(OperationalError) as info:
        backend_pid(made)
    assert info.value.connection_invalidated
    assert backend_pid(made) != first  # the next operation gets a new connection
    assert pings == []


def queue_broker_alert(ctx: Any) -> int:
    """A pending alert to the broker's team (no opt-out lock is held across its request)."""
    from sqlmodel import Session

    from service import store
    from service.alerts import alert_reply
    from tests.helpers import BROKER, CALLER

    with Session(ctx.engine, expire_on_commit=False) as session:
        broker = ctx.broker_for(BROKER)
        lead = store.get_or_create_lead(session, broker.id, CALLER)
        [msg] = alert_reply(session, ctx, broker=broker, lead=lead, text="can you call me back")
        session.commit()
        return int(msg.id)


@pytest.mark.parametrize("kind", ["opener", "broker alert"])
def test_send_outcome_recorded_when_database_restarted_during_request(ctx, twilio_api, kind: str) -> None:
    """Every server process of the database ends while the Twilio request is in flight (a restart): the text
    was sent, so it is recorded as sent with its SID, not left `sending` for reconciliation to find again."""
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    from service import sender
    from service.models import MessageStatus
    from tests.test_send_statements import SID, answer_with_sid, queue_opener, row

    msg_id = queue_opener(ctx) if kind == "opener" else queue_broker_alert(ctx)
    answer_with_sid(twilio_api)
    answer = twilio_api["messages"].side_effect

    def restart_then_answer(request: Any) -> Any:
        url = ctx.engine.url.render_as_string(hide_password=False)
        admin = create_engine(url)
        try:
            with admin.begin() as conn:
                ended = conn.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
        finally:
            admin.dispose()
        assert ended >= 1  # the pool's connections, idle between the claim and the outcome
        return answer(request)

    twilio_api["messages"].mock(side_effect=restart_then_answer)
    assert sender.send_one(ctx, msg_id) == MessageStatus.sent
    sent = row(ctx, msg_id)
    assert (sent.status, sent.twilio_sid) == (MessageStatus.sent, SID)
