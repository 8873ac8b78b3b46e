"""Durable work: run webhook handlers in one transaction, then send and process what they queued.

Every piece of work is a row first (pending texts, received inbound messages). Right after a webhook commits,
its own work is done at once (after the response has gone to Twilio); a worker thread in every process
sweeps the tables for anything due, left behind by a crash, or waiting for a retry. Claims are atomic
compare-and-set updates, so any number of processes can share one database without doubling a text.

Each kind of after-response work has bounded threads of its own (service.lanes): sends go to the send lane,
replies to the reply lane; a reply that needs the LLM goes on to the process's LLM pool (`service.llm_pool`),
and its texts go to the send lane when the LLM call ends. So a Twilio that hangs delays only sends, a slow
reply only replies, the LLM only LLM work, and none of them holds a thread webhooks run on. Work that finds its
lane or pool full stays a row (pending, received) for the sweep. The sweep thread itself only finds what is
due and hands it to the lanes; it is woken by the process's own events, and on PostgreSQL by other processes'
NOTIFY (service.wakeup), with the poll as the fallback. Likewise CRM webhooks go out from a thread of their own (service.crm_delivery),
woken by each sweep and by every commit that queued one, so a slow CRM holds up nothing else.

A reply's claim carries a token, the attempt number it set. Processing writes its result only in a
transaction that first moves the reply from `processing` to `processed` *with that token*; if the reply was
taken back meanwhile (a claim older than `stale_processing_seconds` looks abandoned to the sweep), that
update finds no row and everything the processing would have done is rolled back: a reply is acted on once.

Size: a little over 400 lines, because a reply's claim, its processing and the lanes that carry it stay together.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING

import anyio.to_thread
from sqlalchemy import update
from sqlmodel import Session, col, select

from service import (
    conversation,
    handoff_sla,
    metrics,
    opener_tally,
    reply_queries,
    row_objects,
    sender,
    weekly_digest,
)
from service.alerts import alert_reply, pending_ids
from service.broker_reload import poll_brokers
from service.crm_delivery import DeliveryLoop
from service.db import session_scope
from service.errors import GuardNotReady
from service.lanes import Lane
from service.llm_pool import LLMPool
from service.logs import log
from service.models import Broker, InboundMessage, Lead, utcnow
from service.replay import database_unavailable, replay_spool
from service.retention import automatic_purge
from service.wakeup import Listener, handled_here

if TYPE_CHECKING:
    from service.context import AppContext
    from service.twilio.outcome import Outcome

logger = logging.getLogger("textback.worker")

INBOUND_GRACE = timedelta(seconds=5)
MAX_INBOUND_ATTEMPTS = 5
RETENTION_EVERY_SECONDS = 3600


async def run_after_commit(
    ctx: AppContext, handler: Callable[[Session, AppContext, Mapping[str, str]], Outcome], form: Mapping[str, str],
    *, limiter: anyio.CapacityLimiter | None = None,
) -> Outcome:
    """Run a flow handler in a worker thread (one of `limiter`'s) inside one transaction (all or nothing)."""

    def _run() -> Outcome:
        with session_scope(ctx.engine) as session:
            return handler(session, ctx, form)

    return await anyio.to_thread.run_sync(_run, limiter=limiter)


class _ClaimLost(Exception):
    """The reply was taken back by another worker: this processing must not act on it."""


def process_inbound(ctx: AppContext, inbound_id: int, *, llm: LLMPool | None = None,
                    send: Callable[[list[int]], object] | None = None) -> list[int]:
    """Claim one received message and run the conversation on it; returns ids of texts queued.

    With `llm`, a reply that needs the LLM is handed to that pool (which hands its texts to `send` when done,
    default: sends them itself) and [] is returned at once; when the pool is full the reply is not claimed and
    waits for a later sweep. Without `llm`, everything happens here, the LLM call included.
    """
    pool = None
    if llm is not None and ctx.extractor is not None:
        with Session(ctx.engine, expire_on_commit=False) as session:
            unclaimed = session.get(InboundMessage, inbound_id)
        if unclaimed is None or unclaimed.status != "received":
            return []
        # The rules are fast and read only the text: they say here, before any claim, whether the LLM is needed.
        pool = llm if _needs_llm(ctx, unclaimed) else None
        if pool is not None and not pool.reserve():
            log(logger, logging.DEBUG, "llm pool full; reply left for the sweep", inbound_id=inbound_id)
            return []
    inbound = _claim(ctx, inbound_id)  # without an LLM pool to fill, the claim is the first read
    if inbound is None:
        if pool is not None:
            pool.release()
        return []
    if pool is None:
        return _process_claimed(ctx, inbound)
    claimed = inbound
    try:
        pool.run(lambda: _process_and_send(ctx, claimed, send or partial(sender.send_due, ctx)))
    except RuntimeError:  # the pool shut down meanwhile: give the reply back for the next process's sweep
        _release(ctx, inbound_id, inbound.attempts, "received")
    return []


def _needs_llm(ctx: AppContext, inbound: InboundMessage) -> bool:
    """Whether this reply will be read by the LLM (so it takes a pool slot): the rules cannot settle it and
    the model's answer could change what happens next (conversation.llm_skip_reason)."""
    if ctx.extractor is None:
        return False
    analysis = ctx.rules.analyze(inbound.body, inbound.received_at)
    if not analysis.needs_llm:
        return False
    return conversation.llm_skip_reason(conversation.lead_state(ctx, inbound), analysis) is None


def _claim(ctx: AppContext, inbound_id: int) -> InboundMessage | None:
    """Move the reply from received to processing, in one statement that returns it (detached): its `attempts`,
    set by this claim, is the claim's token. None when it was not `received`."""
    with session_scope(ctx.engine) as session:
        row = session.connection().execute(reply_queries.claim(), {"claim_id": inbound_id, "claim_now": utcnow()}).first()
    return None if row is None else row_objects.detached(InboundMessage, row)


def _release(ctx: AppContext, inbound_id: int, token: int, status: str) -> bool:
    """Set the status of a reply we still hold (same token); False when the claim is no longer ours."""
    with session_scope(ctx.engine) as session:
        return session.exec(
            update(InboundMessage)
            .where(col(InboundMessage.id) == inbound_id, col(InboundMessage.status) == "processing",
                   col(InboundMessage.attempts) == token)
            .values(status=status)
        ).rowcount == 1


def _process_and_send(ctx: AppContext, claimed: InboundMessage, send: Callable[[list[int]], object]) -> None:
    """A job on the LLM pool: process the claimed reply (the LLM call included), then hand its texts to `send`."""
    ids = _process_claimed(ctx, claimed)
    try:
        send(ids)
    except Exception as exc:  # the texts are rows: the sweep sends them
        log(logger, logging.ERROR, "follow-up failed; left for the sweep", exc_type=type(exc).__name__)
        ctx.wake.set()


def _process_claimed(ctx: AppContext, claimed: InboundMessage) -> list[int]:
    """Analyse the reply `_claim` returned (rules, then the LLM if needed: outside any transaction) and act on
    it, in one transaction that applies only while the claim is still ours."""
    inbound_id, token = claimed.id, claimed.attempts
    assert inbound_id is not None  # noqa: S101 - a stored row
    try:
        analysis = conversation.analyze_reply(ctx, claimed)
        with session_scope(ctx.engine) as session:
            row = session.connection().execute(
                reply_queries.hold(), {"hold_id": inbound_id, "hold_token": token, "hold_now": utcnow()}).first()
            if row is None:
                raise _ClaimLost
            inbound = row_objects.attached(session, InboundMessage, row)
            return conversation.handle_reply(session, ctx, inbound, analysis=analysis)
    except _ClaimLost:
        log(logger, logging.WARNING, "reply taken back by another worker; this result is dropped",
            inbound_id=inbound_id, attempt=token)
        return []
    except GuardNotReady:  # no verdict to act on (a restart whose guard failed): back to the queue, uncounted
        log(logger, logging.WARNING, "reply left for later: the output guard is not ready", inbound_id=inbound_id)
        with session_scope(ctx.engine) as session:
            session.exec(
                update(InboundMessage)
                .where(col(InboundMessage.id) == inbound_id, col(InboundMessage.status) == "processing",
                       col(InboundMessage.attempts) == token)
                .values(status="received", attempts=token - 1)
            )
        return []
    except Exception as exc:  # the message goes back to the queue, never lost
        log(logger, logging.ERROR, "inbound processing failed", inbound_id=inbound_id, exc_type=type(exc).__name__)
        metrics.failure("inbound_error")
        gave_up = token >= MAX_INBOUND_ATTEMPTS
        with session_scope(ctx.engine) as session:
            released = session.exec(
                update(InboundMessage)
                .where(col(InboundMessage.id) == inbound_id, col(InboundMessage.status) == "processing",
                       col(InboundMessage.attempts) == token)
                .values(status="failed" if gave_up else "received")
            ).rowcount == 1
            if released and gave_up:  # in the same transaction: a reply is never marked failed unforwarded
                return _forward_unprocessed(session, ctx, inbound_id)
        return []


def _forward_unprocessed(session: Session, ctx: AppContext, inbound_id: int) -> list[int]:
    """A reply the service could not process after every attempt still reaches the broker."""
    inbound = session.get(InboundMessage, inbound_id)
    lead = session.get(Lead, inbound.lead_id) if inbound and inbound.lead_id else None
    broker = session.get(Broker, inbound.broker_id) if inbound else None
    if inbound is None or lead is None or broker is None:
        return []
    log(logger, logging.ERROR, "inbound given up; forwarded to the broker", inbound_id=inbound_id)
    msgs = alert_reply(session, ctx, broker=broker, lead=lead, text=inbound.body)
    conversation.hand_off_if_blocked(session, lead, msgs)
    return pending_ids(msgs)


def due_inbound_ids(ctx: AppContext) -> list[int]:
    now = utcnow()
    with session_scope(ctx.engine) as session:
        # A process that died mid-processing: give the message back.
        session.exec(
            update(InboundMessage)
            .where(col(InboundMessage.status) == "processing",
                   col(InboundMessage.processed_at) < now - timedelta(seconds=ctx.settings.stale_processing_seconds))
            .values(status="received")
        )
        rows = session.exec(
            select(InboundMessage.id)
            .where(col(InboundMessage.status) == "received", col(InboundMessage.received_at) < now - INBOUND_GRACE)
            .order_by(col(InboundMessage.id))
            .limit(100)
        ).all()
    return [r for r in rows if r is not None]


class Worker:
    """Does each webhook's follow-up work at once on its lanes, and sweeps for anything due in a background
    thread."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        settings = ctx.settings
        # Replies that need the LLM, read in a pool of their own (none without an LLM: rules only).
        self.llm: LLMPool | None = (
            LLMPool(settings.llm_concurrency, on_free=ctx.wake.set) if settings.llm_enabled else None
        )
        self.sends = Lane("send", settings.send_threads, on_free=ctx.wake.set, urgent=True)
        self.replies = Lane("reply", settings.reply_threads, on_free=ctx.wake.set)
        self.crm_webhooks = DeliveryLoop(ctx)  # a thread of its own: a slow CRM never holds up texts
        self.listener: Listener | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_hourly: dict[str, float] = {}  # when each hourly chore last ran (time.monotonic)
        self._sweep = True

    def send(self, ids: list[int]) -> Future[object] | None:
        """Hand texts to the send lane, sent one after the other in this order; None when there is nothing to
        send or the lane is full (the rows stay pending: the sweep sends them)."""
        if not ids:
            return None
        return self.sends.submit(("texts", *ids), partial(self._guarded, "send", sender.send_due, self.ctx, list(ids)))

    def reply(self, inbound_id: int) -> Future[object] | None:
        """Hand a received reply to the reply lane: processed there (or passed on to the LLM pool), its texts
        then handed to the send lane; the job's result is the send's future. None when the lane is full."""
        return self.replies.submit(("reply", inbound_id), partial(self._guarded, "reply", self._reply, inbound_id))

    def _reply(self, inbound_id: int) -> Future[object] | None:
        return self.send(process_inbound(self.ctx, inbound_id, llm=self.llm, send=self.send))

    def _guarded(self, kind: str, job: Callable[..., object], *args: object) -> object:
        """A lane job whose failure is logged and leaves its rows for the sweep (woken now)."""
        try:
            return job(*args)
        except Exception as exc:  # the rows are still pending or received: the sweep takes them up again
            log(logger, logging.ERROR, "follow-up failed; left for the sweep", kind=kind, exc_type=type(exc).__name__)
            self.ctx.wake.set()
            return None

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the lanes and the LLM pool have no job (tests, shutdown); False if some remain."""
        deadline = time.monotonic() + timeout
        while True:
            lanes: list[Lane | LLMPool] = [self.replies, *([self.llm] if self.llm is not None else []), self.sends]
            for lane in lanes:
                if not lane.wait_idle(max(0.0, deadline - time.monotonic())):
                    return False
            if all(lane.busy == 0 for lane in lanes):  # nothing handed on meanwhile
                return True

    async def after_webhook(self, send_ids: list[int], inbound_ids: list[int]) -> None:
        """Runs after the response went to Twilio (a background task on the event loop, holding no thread):
        hands the texts to the send lane and the replies to the reply lane, then waits for them (a reply
        handed to the LLM pool is not waited for: the pool sends its texts when it is done)."""
        waits: list[asyncio.Future[object]] = []
        sent = self.send(send_ids)
        if sent is not None:
            waits.append(asyncio.wrap_future(sent))
        waits.extend(asyncio.ensure_future(self._reply_then_send(inbound_id)) for inbound_id in inbound_ids)
        for result in await asyncio.gather(*waits, return_exceptions=True):
            if isinstance(result, Exception):
                log(logger, logging.ERROR, "follow-up failed; left for the sweep", exc_type=type(result).__name__)
                self.ctx.wake.set()

    async def _reply_then_send(self, inbound_id: int) -> None:
        processed = self.reply(inbound_id)
        if processed is None:
            return
        sent = await asyncio.wrap_future(processed)
        if isinstance(sent, Future):
            await asyncio.wrap_future(sent)

    def follow_up(self, send_ids: list[int], inbound_ids: list[int]) -> None:
        """after_webhook in the calling thread (the sweep's replay of spooled webhooks, in order)."""
        try:
            ids = list(send_ids)
            for inbound_id in inbound_ids:
                ids.extend(process_inbound(self.ctx, inbound_id, llm=self.llm, send=self.send))
            sender.send_due(self.ctx, ids)
        except Exception as exc:  # the sweep will pick the rows up again
            log(logger, logging.ERROR, "follow-up failed; left for the sweep", exc_type=type(exc).__name__)
            self.ctx.wake.set()

    def run_once(self, *, dispatch: bool = False) -> dict[str, int]:
        """One sweep: take up a newer brokers generation (or an edited brokers file: service.broker_reload),
        replay webhooks spooled during a database outage (first, so a spooled STOP is applied
        before anything is sent), process received replies (those that need the LLM go to its pool), queue the
        unworked-handoff reminders that are due (service.handoff_sla) and the weekly digests (service.weekly_digest),
        send every due text, send the due CRM
        webhooks (in their own thread when it runs), and (hourly) apply the retention.

        `dispatch` (the sweep thread): replies and texts are handed to their lanes instead of being done here,
        so a hanging send never holds up the next sweep's replies; the counts are then of texts handed on."""
        if not self.ctx.wait_for_guard():  # a restart's first seconds: nothing taken up while a check would wait
            return {}  # the guard failed: the service is stopping; the rows wait for the next start
        self.poll_brokers()
        replayed = replay_spool(self.ctx)
        if replayed.send_ids or replayed.inbound_ids:
            self.follow_up(replayed.send_ids, replayed.inbound_ids)
        for inbound_id in due_inbound_ids(self.ctx):
            if dispatch:
                self.reply(inbound_id)
            else:
                process_inbound(self.ctx, inbound_id, llm=self.llm, send=self.send)
        handoff_sla.sweep(self.ctx)  # unworked handoffs: the reminders due are queued, then sent below
        weekly_digest.sweep(self.ctx)  # Monday mornings: last week's numbers to each broker, sent below
        if dispatch:
            due = sender.due_ids(self.ctx)
            handed = sum(self.send([msg_id]) is not None for msg_id in due)
            counts = {"dispatched": handed} if handed else {}
        else:
            counts = sender.send_due(self.ctx)
        self.crm_webhooks.sweep()
        self._apply_retention()
        self._prune_tally()
        return counts

    def poll_brokers(self) -> None:
        """The brokers poll, on its own: a failure (database down) is logged and leaves the brokers held."""
        try:
            poll_brokers(self.ctx)
        except Exception as exc:  # the database down is said by the sweep's own failure: quiet here
            level = logging.DEBUG if database_unavailable(exc) else logging.WARNING
            log(logger, level, "brokers poll failed", exc_type=type(exc).__name__)

    def _apply_retention(self) -> None:
        """TEXTBACK_RETENTION_DAYS unset: nothing. Else hourly, as service.retention.automatic_purge says (never
        shorter than the retention policy; refused and logged if the setting is)."""
        days = self.ctx.settings.retention_days
        if days is None or not self._due_hourly("retention"):
            return
        automatic_purge(self.ctx.engine, self.ctx.retention, self.ctx.settings.policies_dir, days,
                        version=self.ctx.policy_version)

    def _prune_tally(self) -> None:
        """Hourly: the openers tally's minutes older than it keeps (service.opener_tally.KEEP) go."""
        if self._due_hourly("tally"):
            opener_tally.prune(self.ctx.engine, now=utcnow(), keep=opener_tally.KEEP)

    def _due_hourly(self, chore: str) -> bool:
        """True at the first sweep and then once every RETENTION_EVERY_SECONDS for `chore` (noted as run)."""
        now = time.monotonic()
        last = self._last_hourly.get(chore)
        if last is not None and now - last < RETENTION_EVERY_SECONDS:
            return False
        self._last_hourly[chore] = now
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self._sweep:
                    self.run_once(dispatch=True)
                else:
                    self.poll_brokers()
            except Exception as exc:  # a sweep failure (database down) is retried
                log(logger, logging.WARNING, "sweep failed", exc_type=type(exc).__name__)
            self.ctx.wake.wait(self.ctx.settings.worker_poll_seconds)
            self.ctx.wake.clear()

    def start(self, *, sweep: bool = True) -> None:
        """Start the sweep thread (and the CRM webhooks' own); `sweep=False`: a thread that only polls the
        brokers (a process whose sweep runs elsewhere still holds the brokers in force)."""
        self._sweep = sweep
        if sweep:
            self.crm_webhooks.start()
            if self.listener is None:
                self.listener = Listener.start_for(self.ctx)  # PostgreSQL: other processes' new work wakes us
            handled_here(self.ctx.engine, True)  # so this process's own commits notify nobody (service.wakeup)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="textback-worker", daemon=True)
            self._thread.start()

    def join(self) -> None:
        """Wait for the sweep thread to end (it ends when `stop` is called); returns at once if not started."""
        thread = self._thread
        if thread is not None:
            thread.join()

    def stop(self) -> None:
        self._stop.set()
        self.ctx.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.crm_webhooks.stop()
        handled_here(self.ctx.engine, False)
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
        self.replies.shutdown(timeout=10)
        if self.llm is not None:
            # Running LLM jobs end by their deadline; give them that long to write their result.
            self.llm.shutdown(timeout=self.ctx.settings.llm_timeout_seconds + 5)
        self.sends.shutdown(timeout=self.ctx.settings.send_timeout_seconds + 5)
