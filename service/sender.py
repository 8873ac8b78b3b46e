"""Send queued texts: claim -> send-time gates -> deliver (or reconcile) -> retry or permanent error.

send_due() claims pending rows with an atomic compare-and-set (so two processes never send the same row; the
plain case's claim returns the row and re-checks the opt-out in its WHERE, see send_one), asks the send-time
gates (service.sending.gates.at_send: the opt-out afresh when the claim did not, quiet hours again, the line
type), then sends through the Twilio SDK (or prints in dry-run) holding the number's opt-out lock shared
across the request (service/optout_lock.py: an opt-out waits for it, so no text is requested after an
opt-out committed), and records the SID, or schedules a retry with jittered backoff, or records a permanent
error on the lead. A row whose send outcome is unknown (a timeout after the request left) is reconciled
against Twilio's message list before anything else, an opt-out included: recorded as sent when Twilio has it,
never sent twice. A text to the team forgets its one-time secret (a sign-in code, a link's token) once it has
settled (service.one_time); in dry-run the printed text keeps them readable.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import inspect, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from service import alerts, metrics, one_time, optout_lock, send_history, send_queries
from service.db import ping_next_checkout
from service.errors import NumberBusy
from service.logs import log
from service.models import (
    ALLOWED_AFTER_OPTOUT,
    Audience,
    Broker,
    DeliveryEvent,
    Lead,
    MessageStatus,
    OutboundMessage,
    Purpose,
    utcnow,
)
from service.redact import redact
from service.send_queries import FAILED_DELIVERY
from service.sending import gates, verdicts
from service.sending.gates import Cause, Kind, Verdict
from service.sending.retry import backoff
from service.store import set_opt_out
from service.twilio.client import (
    NOT_TEXTABLE_ERRORS,
    PERMANENT_ERRORS,
    ROUTE_ERRORS,
    SENDER_ERRORS,
    UNSUBSCRIBED_ERROR,
    SendError,
    SendResult,
)
from service.twilio.forms import moves_forward

if TYPE_CHECKING:
    from service.context import AppContext

logger = logging.getLogger("textback.outbox")  # the name operators filter send and alert logs on


def _claim(session: Session, msg_id: int, now: datetime) -> bool:
    result = session.exec(
        update(OutboundMessage)
        .where(col(OutboundMessage.id) == msg_id, col(OutboundMessage.status) == MessageStatus.pending,
               col(OutboundMessage.next_attempt_at) <= now)
        .values(status=MessageStatus.sending, claimed_at=now, attempts=OutboundMessage.attempts + 1)
    )
    session.commit()
    return result.rowcount == 1


def _status_callback(ctx: AppContext) -> str:
    return f"{ctx.settings.public_url}/twilio/sms/status"


def _claim_checked(session: Session, ctx: AppContext, msg_id: int, now: datetime) -> OutboundMessage | None:
    """The claim of the plain case, returning the row: due, its outcome known, and (a text the opt-out stops)
    its number not opted out in the scope (optout_lock.opted_out_clause, the at-send opt-out read folded into
    the claim's WHERE). None when any of that fails: the full path (`_claim`) then says which."""
    row = session.execute(
        send_queries.claim_checked(ctx.sending_policy.opt_out_scope), {"claim_id": msg_id, "claim_now": now},
    ).first()
    session.commit()
    return None if row is None else send_queries.claimed(session, row)


def _may_look_up(ctx: AppContext, msg: OutboundMessage) -> bool:
    """The send-time line-type gate may ask Twilio Lookup (gates.line_type_allows)."""
    return bool(ctx.settings.line_type_lookup and ctx.gateway is not None and msg.purpose == Purpose.opener)


def _settle(msg: OutboundMessage) -> None:
    """A settled text to the team keeps its one-time secrets hashed only (a sign-in code, a link's token)."""
    if msg.audience == Audience.broker and msg.status not in {MessageStatus.pending, MessageStatus.sending}:
        msg.body = one_time.scrub(msg.body, msg.purpose)


def send_one(ctx: AppContext, msg_id: int, *, now: datetime | None = None) -> str | None:
    """Claim and send one pending text; returns its new status, or None if another worker had it.

    The plain case is three statements: the claim returning the row with the opt-out re-checked in its WHERE,
    the opt-out lock's read (on PostgreSQL the lock is taken before the claim, whose WHERE is then that read),
    and the outcome's UPDATE, which also counts the delivery callbacks that beat it (tests/test_send_statements).
    Anything else (not due, another worker's, an outcome to reconcile, opted out) takes the full path."""
    now = now or utcnow()
    with Session(ctx.engine, expire_on_commit=False) as session, \
            optout_lock.hold_row_for_send(ctx.engine, msg_id) as early:
        msg = _claim_checked(session, ctx, msg_id, now)
        checked = msg is not None
        if msg is None:
            early.release()
            if not _claim(session, msg_id, now):
                return None
            msg = session.get(OutboundMessage, msg_id)
            if msg is None:  # just claimed, in this session
                raise RuntimeError(f"claimed text {msg_id} not found")
        elif _may_look_up(ctx, msg):
            early.release()  # never hold the number's lock across a Lookup request: taken again to send
        follow_up = _send_claimed(ctx, session, msg, now, early=early, opt_out_checked=checked)
        early.release()  # the outcome is written without the lock (recording may change the opt-out: 21610)
        _settle(msg)
        session.add(msg)
        session.commit()
    if follow_up:
        ctx.wake.set()  # alerts queued by a failure go out on the worker's next pass
    return msg.status


def _send_claimed(ctx: AppContext, session: Session, msg: OutboundMessage, now: datetime, *,
                  early: optout_lock.EarlyHold, opt_out_checked: bool) -> list[int]:
    """Everything between the claim and the request; returns ids of alerts queued because of a failure.
    `early`: the number's lock when taken before the claim; `opt_out_checked`: the claim re-checked the opt-out."""
    if msg.unknown_outcome and ctx.gateway is not None:
        # An earlier attempt may have reached Twilio: ask first, whatever happened since (an opt-out included),
        # so the row says what Twilio knows and the text is never sent twice.
        session.commit()  # no transaction across the network call
        try:
            found = ctx.gateway.find_sent(to=msg.to_phone, from_=msg.from_phone, body=msg.body,
                                          since=msg.created_at - timedelta(minutes=5))
        except Exception as exc:  # a failed look-up is a failed attempt: retried, never lost
            return _record_failure(ctx, session, msg, _as_send_error(exc))
        if found is not None:
            msg.status, msg.twilio_sid, msg.delivery_status = MessageStatus.sent, found.sid, found.status
            msg.sent_at, msg.unknown_outcome = utcnow(), False
            log(logger, logging.INFO, "text reconciled", id=msg.id, sid=found.sid)
            metrics.text(msg.audience, "reconciled")
            send_history.human_contact(ctx, session, msg)
            return _apply_early_delivery_events(ctx, session, msg, found.status, found.error_code)
    verdict = gates.at_send(session, ctx, msg, now, opt_out_checked=opt_out_checked)
    if verdict.kind is not Kind.allow:
        early.release()
        return _hold(ctx, session, msg, verdict)
    session.add(msg)
    session.commit()  # the claim is ours: no transaction (on SQLite, the write lock) across the send
    _record(ctx, msg, verdict, now)  # written with the outcome's UPDATE, not a statement of its own
    return _deliver(ctx, session, msg, early)


def _record(ctx: AppContext, msg: OutboundMessage, verdict: Verdict, now: datetime) -> None:
    """Keep a borrower text's send-time verdict on its row for the audit trail (service.sending.verdicts)."""
    if msg.audience == Audience.borrower:
        verdicts.record(msg, verdict, stage="send", now=now, policy_version=verdicts.version_of(ctx, msg))


def _hold(ctx: AppContext, session: Session, msg: OutboundMessage, verdict: Verdict) -> list[int]:
    """A claimed text the send-time gates stop: deferred (the attempt does not count) or suppressed."""
    _record(ctx, msg, verdict, utcnow())
    metrics.text(msg.audience, "deferred" if verdict.kind is Kind.defer else "suppressed")
    if verdict.kind is Kind.defer:
        msg.status, msg.attempts = MessageStatus.pending, max(msg.attempts - 1, 0)
        msg.next_attempt_at, msg.last_error = verdict.until or utcnow(), verdict.last_error
        return []
    msg.status, msg.last_error = MessageStatus.suppressed, verdict.last_error
    if verdict.cause is not Cause.line_type:
        return []
    skip = verdict.detail or ""
    lead = session.get(Lead, msg.lead_id) if msg.lead_id else None
    if lead is not None:
        lead.not_textable_reason = skip.replace(" ", "_")
        session.add(lead)
    # The broker still has a missed caller to call back.
    return alerts.alert_send_failed(ctx, session, msg, f"the number cannot take texts ({skip})")


def _as_send_error(exc: Exception) -> SendError:
    if isinstance(exc, SendError):
        return exc
    return SendError(f"unexpected {type(exc).__name__}", code=None, permanent=False, unknown_outcome=True)


def _request(ctx: AppContext, msg: OutboundMessage) -> SendResult | SendError | None:
    """The request itself (None in dry-run, where the text is printed); failures are returned, not raised."""
    gateway = ctx.gateway
    if gateway is None:
        shown = msg.body if msg.audience == Audience.borrower else one_time.readable(
            msg.body, msg.purpose, lambda text: redact(text, keep=160))
        print(f"[dry-run] text to {msg.to_phone} from {msg.from_phone} ({msg.template_id}): {shown}", flush=True)
        return None
    try:
        return gateway.send_sms(to=msg.to_phone, from_=msg.from_phone, body=msg.body,
                                status_callback=_status_callback(ctx))
    except Exception as exc:  # any failure is retried (after reconciling), never lost
        return _as_send_error(exc)


def _deliver(ctx: AppContext, session: Session, msg: OutboundMessage, early: optout_lock.EarlyHold) -> list[int]:
    """Send (or print, in dry-run); returns ids of alerts queued because of a failure.

    A borrower text holds its number's opt-out lock (shared) across the request and re-reads the opt-out under
    it: an opt-out either committed before (the text is dropped) or waits until the request has been made.
    When the lock was taken before the claim (`early`, PostgreSQL), the claim's opt-out condition was that read.
    The outcome is recorded after the lock is released (recording may itself change the opt-out: 21610)."""
    opted_out, outcome = False, None
    try:
        if msg.audience == Audience.borrower and msg.purpose not in ALLOWED_AFTER_OPTOUT and early.locked:
            try:
                outcome = _request(ctx, msg)
            finally:
                early.release()
        elif msg.audience == Audience.borrower and msg.purpose not in ALLOWED_AFTER_OPTOUT:
            with optout_lock.hold_for_send(ctx.engine, msg.broker_id, msg.to_phone,
                                           wait=optout_lock.send_wait(ctx.settings),
                                           scope=ctx.sending_policy.opt_out_scope) as opted_out:
                if not opted_out:
                    outcome = _request(ctx, msg)
        else:
            outcome = _request(ctx, msg)
    except NumberBusy:
        log(logger, logging.WARNING, "text deferred: its number's opt-out lock was busy", id=msg.id)
        return _hold(ctx, session, msg, gates.lock_busy(utcnow()))
    # The request may have outlived the database's connection (a restart meanwhile): the outcome's write checks
    # its connection first, so a text sent is recorded as sent, not found again by reconciliation.
    ping_next_checkout()
    if opted_out:
        log(logger, logging.INFO, "text suppressed: opted out while it waited", id=msg.id)
        state = optout_lock.opt_out_state(session, msg.broker_id, msg.to_phone, ctx.sending_policy.opt_out_scope)
        return _hold(ctx, session, msg, gates.opted_out_before_send(msg, state))
    if isinstance(outcome, SendError):
        return _record_failure(ctx, session, msg, outcome)
    if outcome is None:
        msg.status, msg.sent_at = MessageStatus.dry_run, utcnow()
        metrics.text(msg.audience, "dry_run")
        send_history.human_contact(ctx, session, msg)
        return []
    msg.status, msg.twilio_sid, msg.delivery_status = MessageStatus.sent, outcome.sid, outcome.status
    msg.sent_at, msg.unknown_outcome, msg.last_error = utcnow(), False, None
    log(logger, logging.INFO, "text sent", id=msg.id, sid=outcome.sid, template=msg.template_id)
    metrics.text(msg.audience, "sent")
    send_history.human_contact(ctx, session, msg)
    return _apply_early_delivery_events(ctx, session, msg, None, None)


def _write_counting_early_callbacks(session: Session, msg: OutboundMessage) -> int:
    """Write the row's changes in ONE UPDATE that also returns how many delivery callbacks are already stored for
    its SID (usually none: then nothing more is read)."""
    _settle(msg)
    changed = {attr.key: attr.value for attr in inspect(msg).attrs if attr.history.has_changes()} or {
        "status": msg.status}
    unknown = changed.keys() - send_queries.column_names()
    if unknown:  # the table's UPDATE would ignore them: never write a text's outcome half
        raise RuntimeError(f"outbound message attributes that are no column: {sorted(unknown)}")
    with session.no_autoflush:
        # The table's UPDATE, not the ORM's (the row is written as it is; no objects to synchronize), SET from
        # the parameters' column names.
        found = session.execute(send_queries.write_counting_callbacks(),
                                {"write_id": msg.id, "write_sid": msg.twilio_sid, **changed}).scalar_one()
    for key, value in changed.items():
        set_committed_value(msg, key, value)  # written: the commit has nothing more to flush
    return int(found)


def _apply_early_delivery_events(
    ctx: AppContext, session: Session, msg: OutboundMessage, listed_status: str | None, listed_error: int | None
) -> list[int]:
    """A status callback can beat the stored SID, and a reconciled message can already have failed: apply
    what is known about the SID now, so a bounced opener still marks the lead and alerts the broker, and a
    "delivered" that came first is not left behind the API's own "queued"."""
    failures = [(listed_status, listed_error)] if listed_status in FAILED_DELIVERY else []
    if not failures and not _write_counting_early_callbacks(session, msg):
        return []
    early = session.exec(select(DeliveryEvent).where(DeliveryEvent.message_sid == msg.twilio_sid)
                         .order_by(col(DeliveryEvent.id))).all()
    moved_to: str | None = None  # the furthest status a stored callback moved the row to (its history records it)
    for e in early:
        if e.status in FAILED_DELIVERY:
            failures.append((e.status, e.error_code))
        elif moves_forward(msg.delivery_status, e.status):
            msg.delivery_status = moved_to = e.status
    if failures:  # the first one with an error code says why (the lead is marked by it), else the last
        status, code = next(((s, c) for s, c in failures if c is not None), failures[-1])
        msg.delivery_status = status
        if code is not None:
            msg.error_code = code
        send_history.opener_delivery(ctx, session, msg, status, code)
        return apply_error_to_lead(ctx, session, msg, code) if code is not None else []
    if moved_to is not None:
        send_history.opener_delivery(ctx, session, msg, moved_to, msg.error_code)
    return []


def _record_failure(ctx: AppContext, session: Session, msg: OutboundMessage, exc: SendError) -> list[int]:
    msg.last_error = str(exc)
    msg.error_code = exc.code
    msg.unknown_outcome = msg.unknown_outcome or exc.unknown_outcome
    gives_up = exc.permanent or msg.attempts >= ctx.settings.send_max_attempts or (
        msg.audience == Audience.broker and exc.code in SENDER_ERRORS.keys() | ROUTE_ERRORS)
    log(logger, logging.WARNING, "text send failed", id=msg.id, template=msg.template_id, error=str(exc),
        code=exc.code, attempts=msg.attempts, audience=msg.audience,
        outcome="failed" if gives_up else "retry scheduled",
        reason=PERMANENT_ERRORS.get(exc.code or 0, "client_error") if exc.permanent else None)
    metrics.failure("send_error")
    metrics.text(msg.audience, "failed" if gives_up else "retry")
    if gives_up:
        msg.status = MessageStatus.failed
        if msg.audience == Audience.broker:
            return alerts.alert_failed(ctx, session, msg, code=exc.code, error=str(exc))
        if exc.permanent:
            return apply_error_to_lead(ctx, session, msg, exc.code)
        if msg.audience == Audience.borrower:
            return alerts.alert_send_failed(ctx, session, msg, "Twilio kept failing")
        return []
    msg.status = MessageStatus.pending
    msg.next_attempt_at = utcnow() + backoff(ctx, msg.attempts)
    return []


def apply_error_to_lead(ctx: AppContext, session: Session, msg: OutboundMessage, code: int | None) -> list[int]:
    """What a permanent error means for the number (unsubscribed, or unable to receive texts), or for an alert
    that failed; returns the ids of any alerts queued for the broker."""
    if msg.audience == Audience.broker:
        return alerts.alert_failed(ctx, session, msg, code=code, error=alerts.describe(code, msg.last_error))
    if msg.audience != Audience.borrower or code is None:
        return []
    if code == UNSUBSCRIBED_ERROR:
        set_opt_out(session, broker_id=msg.broker_id, phone=msg.to_phone, opted_out=True, source=f"error:{code}",
                    wait_seconds=optout_lock.change_wait(ctx.settings), scope=ctx.sending_policy.opt_out_scope)
        return []
    reason = PERMANENT_ERRORS.get(code)
    lead = session.get(Lead, msg.lead_id) if msg.lead_id else None
    if lead is None or not reason:
        return []
    if code in NOT_TEXTABLE_ERRORS or code in {21211, 30003, 30005}:
        lead.not_textable_reason = reason
    lead.updated_at = utcnow()
    session.add(lead)
    ids: list[int] = []
    if msg.purpose == Purpose.opener:
        ids += alerts.alert_send_failed(ctx, session, msg, reason.replace("_", " "), code=code)
    if code in SENDER_ERRORS:
        broker = session.get(Broker, msg.broker_id)
        if broker is not None:
            ids += alerts.sender_down(ctx, session, broker=broker, number=msg.from_phone, code=code)
    return ids


def due_ids(ctx: AppContext, limit: int = 100) -> list[int]:
    now = utcnow()
    with Session(ctx.engine) as session:
        # Rows stuck in 'sending' (a crashed worker) go back to pending, marked as unknown outcome.
        session.execute(
            update(OutboundMessage)
            .where(col(OutboundMessage.status) == MessageStatus.sending,
                   col(OutboundMessage.claimed_at) < now - timedelta(seconds=ctx.settings.stale_claim_seconds))
            .values(status=MessageStatus.pending, unknown_outcome=True, next_attempt_at=now)
        )
        session.commit()
        rows = session.exec(
            select(OutboundMessage.id)
            .where(OutboundMessage.status == MessageStatus.pending, OutboundMessage.next_attempt_at <= now)
            .order_by(col(OutboundMessage.next_attempt_at))
            .limit(limit)
        ).all()
    return [r for r in rows if r is not None]


def send_due(ctx: AppContext, ids: list[int] | None = None) -> dict[str, int]:
    """Send every due text (or the given ones); returns a count per resulting status."""
    counts: dict[str, int] = {}
    for msg_id in ids if ids is not None else due_ids(ctx):
        status = send_one(ctx, msg_id)
        if status:
            counts[status] = counts.get(status, 0) + 1
    return counts


def next_due_in(ctx: AppContext) -> float | None:
    """Seconds until the next pending text is due, or None when nothing is pending."""
    with Session(ctx.engine) as session:
        row = session.exec(
            select(OutboundMessage.next_attempt_at)
            .where(OutboundMessage.status == MessageStatus.pending)
            .order_by(col(OutboundMessage.next_attempt_at)).limit(1)
        ).first()
    if row is None:
        return None
    return max((row - datetime.now(UTC)).total_seconds(), 0.0)

