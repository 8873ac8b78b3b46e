"""Workers wake on new work from other processes: on PostgreSQL a transaction that queues a text NOTIFYs, and
every sweeping context's listener sets its wake event (service.wakeup). SQLite keeps the in-process event.

Two contexts on one database stand for two processes. Every wait is bounded and on an event, never a timing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from service.wakeup import CHANNEL, Listener, token_for
from service.worker import Worker
from tests.helpers import call_params

WAIT = 30.0


@pytest.fixture
def listener(second_ctx) -> Iterator[Listener | None]:
    listening = Listener.start_for(second_ctx)
    yield listening
    if listening is not None:
        listening.stop()


def postgres(ctx) -> bool:
    return ctx.engine.dialect.name == "postgresql"


def test_wake_other_context_when_text_queued(client, post, ctx, second_ctx, listener) -> None:
    if not postgres(ctx):
        assert listener is None  # SQLite: one machine's file, the process's own wake event is all there is
        return
    assert listener is not None
    assert listener.listening.wait(WAIT)
    second_ctx.wake.clear()

    assert post(client, "/twilio/voice/dial-status", call_params(DialCallStatus="no-answer")).status_code == 200

    assert second_ctx.wake.wait(WAIT), "the other context's worker was not woken by the queued opener"
    assert listener.woken >= 1


def test_ignore_own_notifications_when_listening(ctx, second_ctx, listener) -> None:
    if not postgres(ctx):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    assert listener is not None
    assert listener.listening.wait(WAIT)
    second_ctx.wake.clear()
    with second_ctx.engine.begin() as conn:  # its own first, then another context's: delivered in commit order
        conn.execute(text("SELECT pg_notify(:c, :t)"), {"c": CHANNEL, "t": token_for(second_ctx.engine)})
    with ctx.engine.begin() as conn:
        conn.execute(text("SELECT pg_notify(:c, :t)"), {"c": CHANNEL, "t": token_for(ctx.engine)})

    assert second_ctx.wake.wait(WAIT)
    assert listener.woken == 1


def test_start_listener_with_sweep_only_on_postgres(ctx) -> None:
    runner = Worker(ctx)
    runner.start()
    try:
        assert (runner.listener is not None) == postgres(ctx)
        if runner.listener is not None:
            assert runner.listener.listening.wait(WAIT)
    finally:
        runner.stop()
    assert runner.listener is None


def test_stay_silent_when_own_sweep_runs_the_work(client, post, ctx, second_ctx, listener) -> None:
    """A process whose own sweep runs hands its webhooks' texts to its own lanes: its commits wake no other
    process (a notification per opener would start every other process's whole sweep). A marker notification
    sent afterwards is the only one the other context sees (notifications arrive in commit order)."""
    if not postgres(ctx):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    assert listener is not None
    assert listener.listening.wait(WAIT)
    runner = Worker(ctx)
    runner.start()
    try:
        second_ctx.wake.clear()
        assert post(client, "/twilio/voice/dial-status", call_params(DialCallStatus="no-answer")).status_code == 200
        with ctx.engine.begin() as conn:
            conn.execute(text("SELECT pg_notify(:c, 'marker')"), {"c": CHANNEL})
        assert second_ctx.wake.wait(WAIT)
        assert listener.woken == 1
    finally:
        runner.stop()
