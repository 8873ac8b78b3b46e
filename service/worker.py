"""Durable work: run webhook handlers in one transaction, then send and process what they queued.

Every piece of work is a row first (pending texts, received inbound messages). Right after a webhook commits,
its own work is done at once (after the response has gone to Twilio); a worker thread in every process
sweeps the tables for anything due, left behind by a crash, or waiting for a retry. Claims are atomic
compare-and-set updates, so any number of processes can share one database without doubling a text.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio.to_thread
from sqlalchemy import update
from sqlmodel import Session, select

from service import outbox
from service.db import session_scope
from service.logs import log
from service.models import InboundMessage, utcnow

if TYPE_CHECKING:
    from service.context import AppContext
    from service.flow import Outcome

logger = logging.getLogger("textback.worker")

INBOUND_GRACE = timedelta(seconds=5)
MAX_INBOUND_ATTEMPTS = 5
RETENTION_EVERY_SECONDS = 3600


async def run_after_commit(
    ctx: AppContext, handler: Callable[[Session, AppContext, Mapping[str, str]], Outcome], form: Mapping[str, str]
) -> Outcome:
    """Run a flow handler in a worker thread inside one transaction (all or nothing)."""

    def _run() -> Outcome:
        with session_scope(ctx.engine) as session:
            return handler(session, ctx, form)

    return await anyio.to_thread.run_sync(_run)


def process_inbound(ctx: AppContext, inbound_id: int) -> list[int]:
    """Claim one received message and run the conversation on it; returns ids of texts queued."""
    from service.conversation import analyze_reply, handle_reply  # noqa: PLC0415 - avoids an import cycle

    now = utcnow()
    with Session(ctx.engine, expire_on_commit=False) as session:
        claimed = session.execute(
            update(InboundMessage)
            .where(InboundMessage.id == inbound_id, InboundMessage.status == "received")
            .values(status="processing", attempts=InboundMessage.attempts + 1, processed_at=now)
        )
        session.commit()
        if claimed.rowcount != 1:
            return []
        inbound = session.get(InboundMessage, inbound_id)
        session.commit()  # no transaction stays open across the LLM call below
    try:
        assert inbound is not None  # noqa: S101 - just claimed
        analysis = analyze_reply(ctx, inbound)  # rules, then the LLM if needed: outside any transaction
        with session_scope(ctx.engine) as session:
            inbound = session.get(InboundMessage, inbound_id)
            assert inbound is not None  # noqa: S101 - just claimed
            ids = handle_reply(session, ctx, inbound, analysis=analysis)
            inbound.status, inbound.processed_at = "processed", utcnow()
            session.add(inbound)
    except Exception as exc:  # noqa: BLE001 - the message goes back to the queue, never lost
        log(logger, logging.ERROR, "inbound processing failed", inbound_id=inbound_id, exc_type=type(exc).__name__)
        with session_scope(ctx.engine) as session:
            gave_up = _attempts(session, inbound_id) >= MAX_INBOUND_ATTEMPTS
            session.execute(
                update(InboundMessage)
                .where(InboundMessage.id == inbound_id)
                .values(status="failed" if gave_up else "received")
            )
            if gave_up:
                return _forward_unprocessed(session, ctx, inbound_id)
        return []
    return ids


def _forward_unprocessed(session: Session, ctx: AppContext, inbound_id: int) -> list[int]:
    """A reply the service could not process after every attempt still reaches the broker."""
    from service.flow import alert_reply  # noqa: PLC0415
    from service.models import Broker, Lead  # noqa: PLC0415

    inbound = session.get(InboundMessage, inbound_id)
    lead = session.get(Lead, inbound.lead_id) if inbound and inbound.lead_id else None
    broker = session.get(Broker, inbound.broker_id) if inbound else None
    if inbound is None or lead is None or broker is None:
        return []
    log(logger, logging.ERROR, "inbound given up; forwarded to the broker", inbound_id=inbound_id)
    return alert_reply(session, ctx, broker=broker, lead=lead, text=inbound.body)


def _attempts(session: Session, inbound_id: int) -> int:
    row = session.get(InboundMessage, inbound_id)
    return row.attempts if row else MAX_INBOUND_ATTEMPTS


def due_inbound_ids(ctx: AppContext) -> list[int]:
    now = utcnow()
    with session_scope(ctx.engine) as session:
        # A process that died mid-processing: give the message back.
        session.execute(
            update(InboundMessage)
            .where(InboundMessage.status == "processing",
                   InboundMessage.processed_at < now - timedelta(seconds=ctx.settings.stale_processing_seconds))
            .values(status="received")
        )
        rows = session.exec(
            select(InboundMessage.id)
            .where(InboundMessage.status == "received", InboundMessage.received_at < now - INBOUND_GRACE)
            .order_by(InboundMessage.id)
            .limit(100)
        ).all()
    return [r for r in rows if r is not None]


class Worker:
    """Does each webhook's follow-up work at once, and sweeps for anything due in a background thread."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_purge: float | None = None

    def after_webhook(self, send_ids: list[int], inbound_ids: list[int]) -> None:
        """Runs after the response went to Twilio (a background task): send and process right now."""
        try:
            ids = list(send_ids)
            for inbound_id in inbound_ids:
                ids.extend(process_inbound(self.ctx, inbound_id))
            outbox.send_due(self.ctx, ids)
        except Exception as exc:  # noqa: BLE001 - the sweep will pick the rows up again
            log(logger, logging.ERROR, "follow-up failed; left for the sweep", exc_type=type(exc).__name__)
            self.ctx.wake.set()

    def run_once(self) -> dict[str, int]:
        """One sweep: replay webhooks spooled during a database outage (first, so a spooled STOP is applied
        before anything is sent), process received replies, send every due text, and (hourly) apply the
        retention."""
        from service.replay import replay_spool  # noqa: PLC0415 - the replay module imports the app's flow

        replayed = replay_spool(self.ctx)
        if replayed.send_ids or replayed.inbound_ids:
            self.after_webhook(replayed.send_ids, replayed.inbound_ids)
        for inbound_id in due_inbound_ids(self.ctx):
            process_inbound(self.ctx, inbound_id)
        counts = outbox.send_due(self.ctx)
        self._apply_retention()
        return counts

    def _apply_retention(self) -> None:
        days = self.ctx.settings.retention_days
        now = time.monotonic()
        if not days or (self._last_purge is not None and now - self._last_purge < RETENTION_EVERY_SECONDS):
            return
        self._last_purge = now
        from service.privacy import purge_older_than  # noqa: PLC0415

        counts = purge_older_than(self.ctx.engine, days)
        if any(counts.values()):
            log(logger, logging.INFO, "retention purge", days=days, **counts)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - a sweep failure (database down) is retried
                log(logger, logging.WARNING, "sweep failed", exc_type=type(exc).__name__)
            self.ctx.wake.wait(self.ctx.settings.worker_poll_seconds)
            self.ctx.wake.clear()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="textback-worker", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.ctx.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
