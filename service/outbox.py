"""Outbound texts: checked and persisted first, then claimed and sent by exactly one worker, with retries.

A text's life: queue_text() renders the fixed template, applies the opt-out check, the per-lead cap and the
output guard, and stores the row (pending, blocked or suppressed). send_due() claims pending rows with an
atomic compare-and-set (so two processes never send the same row), re-checks the opt-out under the number's
lock, held shared across the request (service/optout_lock.py: an opt-out waits for it, so no text is
requested after an opt-out committed), sends through the Twilio SDK (or prints in dry-run), and records the
SID, or schedules a retry with jittered backoff, or records a permanent error on the lead. A row whose send
outcome is unknown (a timeout after the request left) is reconciled against Twilio's message list before
anything else, an opt-out included: recorded as sent when Twilio has it, never sent twice.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import or_, update
from sqlmodel import Session, select

from service import gates, optout_lock
from service.brokers import template_values
from service.db import insert_once
from service.errors import NumberBusy
from service.gates import Gate
from service.logs import log
from service.models import AlertFailure, Broker, Lead, OptOut, OptOutEvent, OutboundMessage, utcnow
from service.phones import mask
from service.redact import redact
from service.twilio.client import (
    NOT_TEXTABLE_ERRORS,
    PERMANENT_ERRORS,
    RECIPIENT_ERRORS,
    ROUTE_ERRORS,
    SENDER_ERRORS,
    UNSUBSCRIBED_ERROR,
    SendError,
    SendResult,
)

if TYPE_CHECKING:
    from service.context import AppContext

logger = logging.getLogger("textback.outbox")

# Purposes that count toward the per-lead cap on automated texts.
AUTOMATED = {"opener", "question", "ack", "ready", "closing"}
# Purposes allowed to an opted-out number (the one confirmation of the opt-out itself).
ALLOWED_AFTER_OPTOUT = {"optout_confirm"}
# Texts that already tell someone an alert failed: when one of them fails too, nothing is escalated further.
ESCALATION_TEMPLATES = {"alert_escalation", "alert_sender_down", "alert_operator"}
# An alert Twilio accepted but could not deliver is sent again (after a backoff) until this many texts of it
# went out in all; one that fails at the API was already retried send_max_attempts times on its own row.
ALERT_DELIVERY_ATTEMPTS = 3
# However it fails (switching senders included), no alert is sent more often than this.
ALERT_MAX_TEXTS = 5


def is_opted_out(session: Session, broker_id: int, phone: str) -> bool:
    """The number's committed opt-out state, read afresh (never an OptOut object a session cached)."""
    return optout_lock.is_opted_out(session, broker_id, phone)


def _opt_out_row(session: Session, broker_id: int, phone: str) -> OptOut | None:
    return session.exec(
        select(OptOut).where(OptOut.broker_id == broker_id, OptOut.phone == phone)
        .execution_options(populate_existing=True)
    ).first()


def set_opt_out(  # noqa: PLR0913
    session: Session, *, broker_id: int, phone: str, opted_out: bool, source: str, message_sid: str | None = None,
    wait_seconds: float = 25.0,
) -> OptOut:
    """Record an opt-out or opt-in (current state plus a permanent event), serialised per number.

    The number's lock is taken exclusively first and held until the transaction ends (service/optout_lock.py),
    then the row is read afresh: concurrent changes to one number run one after the other, and the state left
    is the one of the request that committed last. `confirmation_sent` is cleared only when the number goes
    from opted in to opted out (a new opt-out earns one confirmation; a repeated one, in any words, none). The
    same message recorded twice (the webhook, then the reply processing) adds one event, not two.
    `wait_seconds` bounds the wait for sends in flight (optout_lock.change_wait(settings))."""
    optout_lock.lock_for_change(session, broker_id, phone, wait=wait_seconds)
    row = _opt_out_row(session, broker_id, phone)
    if row is None:
        fresh = OptOut(broker_id=broker_id, phone=phone, opted_out=opted_out, source=source)
        row = fresh if insert_once(session, fresh) else _opt_out_row(session, broker_id, phone)
        assert row is not None  # noqa: S101 - inserted, or inserted by another transaction
    if row.opted_out != opted_out:
        row.opted_out = opted_out
        row.source = source
        if opted_out:
            row.confirmation_sent = False
        row.updated_at = utcnow()
        session.add(row)
    action = "opt_out" if opted_out else "opt_in"
    recorded = message_sid is not None and session.exec(
        select(OptOutEvent.id).where(OptOutEvent.phone == phone, OptOutEvent.broker_id == broker_id,
                                     OptOutEvent.message_sid == message_sid, OptOutEvent.action == action)
    ).first() is not None
    if not recorded:
        session.add(OptOutEvent(broker_id=broker_id, phone=phone, action=action, source=source,
                                message_sid=message_sid))
    if opted_out:
        # Nothing automated may leave for this number any more. A text whose earlier attempt may have reached
        # Twilio (unknown outcome) stays for the send path, which asks Twilio first: it is recorded as sent when
        # Twilio has it, and suppressed (never resent) when Twilio does not.
        session.execute(
            update(OutboundMessage)
            .where(
                OutboundMessage.broker_id == broker_id,
                OutboundMessage.to_phone == phone,
                OutboundMessage.status == "pending",
                OutboundMessage.purpose.not_in(ALLOWED_AFTER_OPTOUT),
                OutboundMessage.unknown_outcome.is_(False),
            )
            .values(status="suppressed", last_error="opted out")
        )
    return row


def broker_values(broker: Broker) -> dict[str, str]:
    return template_values(broker)


def queue_text(  # noqa: PLR0913
    session: Session,
    ctx: AppContext,
    *,
    broker: Broker,
    to: str,
    template_id: str,
    purpose: str,
    lead: Lead | None = None,
    values: Mapping[str, str] | None = None,
    dedupe_key: str | None = None,
    now: datetime | None = None,
    from_phone: str | None = None,
) -> OutboundMessage | None:
    """Render, check and persist one text. Returns the row (its status says what will happen), or None
    when the dedupe key shows it was queued already. Texts leave from the broker's number unless `from_phone`
    says otherwise (only alerts ever do: a borrower hears from the broker's own number)."""
    rendered = ctx.templates.render(template_id, {**broker_values(broker), **(values or {})})
    # Only the team's own numbers (brokers, alert numbers, the operator) receive a text the output guard does
    # not read: to anyone else, whatever the template says, it is a borrower text, guarded and gated.
    audience = "broker" if rendered.audience == "broker" and to in ctx.team_numbers else "borrower"
    if audience == "borrower":
        from_phone = None
    msg = OutboundMessage(
        dedupe_key=dedupe_key, broker_id=broker.id, lead_id=lead.id if lead else None,
        audience=audience, purpose=purpose, template_id=template_id, to_phone=to,
        from_phone=from_phone or broker.twilio_number, body=rendered.text, policy_version=ctx.templates.version,
    )
    if audience == "borrower":
        now = now or utcnow()
        gate = Gate("suppressed", "opted out") if (
            purpose not in ALLOWED_AFTER_OPTOUT and is_opted_out(session, broker.id, to)
        ) else gates.check(session, ctx, broker=broker, lead=lead, to=to, purpose=purpose, now=now,
                           automated=purpose in AUTOMATED)
        if gate.status == "suppressed":
            msg.status, msg.last_error = "suppressed", gate.reason
        else:
            if gate.status == "deferred" and gate.not_before is not None:
                msg.next_attempt_at, msg.last_error = gate.not_before, f"deferred: {gate.reason}"
            result = ctx.guard.check(rendered.text, required=rendered.required, template=template_id)
            msg.policy_version = getattr(result, "policy_version", None) or msg.policy_version
            msg.guard_result = {
                "allowed": bool(result.allowed),
                "violations": [{"rule": v.rule, "match": v.match} for v in result.violations],
            }
            if not result.allowed:
                msg.status, msg.last_error = "blocked", "output guard"
    if msg.status == "pending" and lead is not None and purpose in AUTOMATED:
        lead.automated_count += 1
        session.add(lead)
    if not insert_once(session, msg):
        return None
    log(logger, logging.INFO, "text queued", id=msg.id, template=template_id, status=msg.status,
        to=mask(to), broker_id=broker.id)
    if msg.status == "suppressed" and (msg.last_error or "").startswith("circuit breaker"):
        _alert_operator(session, ctx, broker=broker, reason=msg.last_error or "")
    if msg.status == "blocked":
        rules = ", ".join(v["rule"] for v in (msg.guard_result or {}).get("violations", [])) or "policy"
        queue_alert(session, ctx, broker=broker, lead=lead, template_id="alert_blocked",
                    values={"caller": to, "rules": rules})
        if lead is not None:
            lead.state = "handoff"
            if "blocked_text" not in lead.handoff_reasons:
                lead.handoff_reasons = [*lead.handoff_reasons, "blocked_text"]
            session.add(lead)
    return msg


def queue_alert(
    session: Session, ctx: AppContext, *, broker: Broker, lead: Lead | None, template_id: str,
    values: Mapping[str, str], dedupe_key: str | None = None, numbers: list[str] | None = None,
    from_phone: str | None = None,
) -> list[OutboundMessage]:
    """An alert to each of the broker's alert numbers, or to `numbers` (never a borrower-facing text), from the
    broker's number, or from the alerts sender when the broker's number is known not to be able to send."""
    sender = from_phone or alert_sender_for(session, ctx, broker)
    out = []
    for index, number in enumerate(broker.alert_to if numbers is None else numbers):
        key = f"{dedupe_key}:{index}" if dedupe_key else None
        msg = queue_text(session, ctx, broker=broker, to=number, template_id=template_id, purpose="alert",
                         lead=lead, values=values, dedupe_key=key, from_phone=sender)
        if msg is not None:
            out.append(msg)
    return out


def alerts_sender(ctx: AppContext, *, avoid: set[str]) -> str | None:
    """A number of this Twilio account to send alerts from, other than those in `avoid`: TEXTBACK_ALERTS_FROM,
    else another configured broker's Twilio number. None when there is no such number."""
    candidates = [ctx.settings.alerts_from] if ctx.settings.alerts_from else []
    candidates += sorted(ctx.brokers_by_number)
    return next((number for number in candidates if number and number not in avoid), None)


def sender_error(session: Session, number: str) -> int | None:
    """The sender-side error code (SENDER_ERRORS) when the latest word on `number` is that it cannot send, i.e.
    no text from it was delivered since; None when it can send, as far as anyone knows."""
    code = session.exec(
        select(OutboundMessage.error_code)
        .where(OutboundMessage.from_phone == number,
               or_(OutboundMessage.error_code.in_(SENDER_ERRORS), OutboundMessage.delivery_status == "delivered"))
        .order_by(OutboundMessage.id.desc())
        .limit(1)
    ).first()
    return code if code in SENDER_ERRORS else None


def alert_sender_for(session: Session, ctx: AppContext, broker: Broker) -> str:
    """The broker's own number, unless it cannot send: then the alerts sender (when one can)."""
    if sender_error(session, broker.twilio_number) is None:
        return broker.twilio_number
    other = alerts_sender(ctx, avoid={broker.twilio_number})
    if other is not None and sender_error(session, other) is None:
        return other
    return broker.twilio_number


def _alert_operator(session: Session, ctx: AppContext, *, broker: Broker, reason: str) -> None:
    """Once per breaker window: tell the operator (or the broker's team) that automated texts stopped."""
    window = ctx.sending_policy.caps.breaker_window_minutes
    bucket = int(utcnow().timestamp() // (window * 60))
    alerts = queue_alert(session, ctx, broker=broker, lead=None, template_id="alert_operator",
                         values={"reason": reason}, dedupe_key=f"breaker:{broker.id}:{bucket}",
                         numbers=ctx.settings.operator_alert_to or broker.alert_to)
    if alerts:
        log(logger, logging.WARNING, "circuit breaker tripped", broker_id=broker.id, reason=reason)
    ctx.wake.set()


def _claim(session: Session, msg_id: int, now: datetime) -> bool:
    result = session.execute(
        update(OutboundMessage)
        .where(OutboundMessage.id == msg_id, OutboundMessage.status == "pending",
               OutboundMessage.next_attempt_at <= now)
        .values(status="sending", claimed_at=now, attempts=OutboundMessage.attempts + 1)
    )
    session.commit()
    return result.rowcount == 1


def _backoff(ctx: AppContext, attempts: int) -> timedelta:
    base = ctx.settings.send_retry_base_seconds * (2 ** max(attempts - 1, 0))
    return timedelta(seconds=min(base, 300) * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not crypto


def _status_callback(ctx: AppContext) -> str:
    return f"{ctx.settings.public_url}/twilio/sms/status"


def send_one(ctx: AppContext, msg_id: int, *, now: datetime | None = None) -> str | None:
    """Claim and send one pending text; returns its new status, or None if another worker had it."""
    now = now or utcnow()
    with Session(ctx.engine, expire_on_commit=False) as session:
        if not _claim(session, msg_id, now):
            return None
        msg = session.get(OutboundMessage, msg_id)
        assert msg is not None  # noqa: S101 - just claimed
        follow_up = _send_claimed(ctx, session, msg, now)
        session.add(msg)
        session.commit()
    if follow_up:
        ctx.wake.set()  # alerts queued by a failure go out on the worker's next pass
    return msg.status


def _send_claimed(ctx: AppContext, session: Session, msg: OutboundMessage, now: datetime) -> list[int]:
    """Everything between the claim and the request; returns ids of alerts queued because of a failure."""
    guarded = msg.audience == "borrower" and msg.purpose not in ALLOWED_AFTER_OPTOUT
    if msg.unknown_outcome and ctx.gateway is not None:
        # An earlier attempt may have reached Twilio: ask first, whatever happened since (an opt-out included),
        # so the row says what Twilio knows and the text is never sent twice.
        session.commit()  # no transaction across the network call
        try:
            found = ctx.gateway.find_sent(to=msg.to_phone, from_=msg.from_phone, body=msg.body,
                                          since=msg.created_at - timedelta(minutes=5))
        except Exception as exc:  # noqa: BLE001 - a failed look-up is a failed attempt: retried, never lost
            return _record_failure(ctx, session, msg, _as_send_error(exc))
        if found is not None:
            msg.status, msg.twilio_sid, msg.delivery_status = "sent", found.sid, found.status
            msg.sent_at, msg.unknown_outcome = utcnow(), False
            log(logger, logging.INFO, "text reconciled", id=msg.id, sid=found.sid)
            return _apply_early_delivery_events(ctx, session, msg, found.status, found.error_code)
    if guarded and is_opted_out(session, msg.broker_id, msg.to_phone):
        _suppress_opted_out(msg)
        return []
    if msg.audience == "borrower" and msg.purpose in AUTOMATED and msg.purpose != "opener":
        # A retry or a worker back after downtime must not carry a text past the recipient's window.
        broker = session.get(Broker, msg.broker_id)
        opens = ctx.sending_policy.next_allowed_send(msg.to_phone, now, broker.timezone if broker else "UTC",
                                                     is_opener=False)
        if opens > now:
            msg.status, msg.next_attempt_at, msg.attempts = "pending", opens, max(msg.attempts - 1, 0)
            msg.last_error = "deferred: quiet hours at send time"
            return []
    if msg.audience == "borrower" and msg.purpose == "opener":
        skip = gates.line_type_allows(session, ctx, msg.to_phone, now)
        if skip is not None:
            msg.status, msg.last_error = "suppressed", f"not textable: {skip}"
            lead = session.get(Lead, msg.lead_id) if msg.lead_id else None
            if lead is not None:
                lead.not_textable_reason = skip.replace(" ", "_")
                session.add(lead)
            # The broker still has a missed caller to call back.
            return _alert_send_failed(ctx, session, msg, f"the number cannot take texts ({skip})")
    session.add(msg)
    session.commit()  # the claim is ours: no transaction (on SQLite, the write lock) across the send
    return _deliver(ctx, session, msg, guarded=guarded)


def _suppress_opted_out(msg: OutboundMessage) -> None:
    msg.status = "suppressed"
    msg.last_error = ("opted out before send (Twilio had no record of the earlier attempt)"
                      if msg.unknown_outcome else "opted out before send")


def _as_send_error(exc: Exception) -> SendError:
    if isinstance(exc, SendError):
        return exc
    return SendError(f"unexpected {type(exc).__name__}", code=None, permanent=False, unknown_outcome=True)


def _request(ctx: AppContext, msg: OutboundMessage) -> SendResult | SendError | None:
    """The request itself (None in dry-run, where the text is printed); failures are returned, not raised."""
    gateway = ctx.gateway
    if gateway is None:
        shown = msg.body if msg.audience == "borrower" else redact(msg.body, keep=160)
        print(f"[dry-run] text to {msg.to_phone} from {msg.from_phone} ({msg.template_id}): {shown}", flush=True)  # noqa: T201
        return None
    try:
        return gateway.send_sms(to=msg.to_phone, from_=msg.from_phone, body=msg.body,
                                status_callback=_status_callback(ctx))
    except Exception as exc:  # noqa: BLE001 - any failure is retried (after reconciling), never lost
        return _as_send_error(exc)


def _deliver(ctx: AppContext, session: Session, msg: OutboundMessage, *, guarded: bool) -> list[int]:
    """Send (or print, in dry-run); returns ids of alerts queued because of a failure.

    A borrower text holds its number's opt-out lock (shared) across the request and re-reads the opt-out under
    it: an opt-out either committed before (the text is dropped) or waits until the request has been made.
    The outcome is recorded after the lock is released (recording may itself change the opt-out: 21610)."""
    opted_out, outcome = False, None
    try:
        if guarded:
            with optout_lock.hold_for_send(ctx.engine, msg.broker_id, msg.to_phone,
                                           wait=optout_lock.send_wait(ctx.settings)) as opted_out:
                if not opted_out:
                    outcome = _request(ctx, msg)
        else:
            outcome = _request(ctx, msg)
    except NumberBusy:
        msg.status, msg.attempts = "pending", max(msg.attempts - 1, 0)
        msg.next_attempt_at, msg.last_error = utcnow() + timedelta(seconds=1), "deferred: opt-out lock busy"
        log(logger, logging.WARNING, "text deferred: its number's opt-out lock was busy", id=msg.id)
        return []
    if opted_out:
        _suppress_opted_out(msg)
        log(logger, logging.INFO, "text suppressed: opted out while it waited", id=msg.id)
        return []
    if isinstance(outcome, SendError):
        return _record_failure(ctx, session, msg, outcome)
    if outcome is None:
        msg.status, msg.sent_at = "dry_run", utcnow()
        return []
    msg.status, msg.twilio_sid, msg.delivery_status = "sent", outcome.sid, outcome.status
    msg.sent_at, msg.unknown_outcome, msg.last_error = utcnow(), False, None
    log(logger, logging.INFO, "text sent", id=msg.id, sid=outcome.sid, template=msg.template_id)
    return _apply_early_delivery_events(ctx, session, msg, None, None)


def _apply_early_delivery_events(
    ctx: AppContext, session: Session, msg: OutboundMessage, listed_status: str | None, listed_error: int | None
) -> list[int]:
    """A status callback can beat the stored SID, and a reconciled message can already have failed: apply
    what is known about the SID now, so a bounced opener still marks the lead and alerts the broker."""
    from service.models import DeliveryEvent  # noqa: PLC0415

    failures = [(listed_status, listed_error)] if listed_status in {"failed", "undelivered"} else []
    failures += [
        (e.status, e.error_code)
        for e in session.exec(select(DeliveryEvent).where(DeliveryEvent.message_sid == msg.twilio_sid))
        if e.status in {"failed", "undelivered"}
    ]
    for status, code in failures:
        msg.delivery_status = status
        if code is not None:
            msg.error_code = code
            return apply_error_to_lead(ctx, session, msg, code)
    return []


def _record_failure(ctx: AppContext, session: Session, msg: OutboundMessage, exc: SendError) -> list[int]:
    msg.last_error = str(exc)
    msg.error_code = exc.code
    msg.unknown_outcome = msg.unknown_outcome or exc.unknown_outcome
    gives_up = exc.permanent or msg.attempts >= ctx.settings.send_max_attempts or (
        msg.audience == "broker" and exc.code in SENDER_ERRORS.keys() | ROUTE_ERRORS)
    log(logger, logging.WARNING, "text send failed", id=msg.id, template=msg.template_id, error=str(exc),
        code=exc.code, attempts=msg.attempts, audience=msg.audience,
        outcome="failed" if gives_up else "retry scheduled",
        reason=PERMANENT_ERRORS.get(exc.code or 0, "client_error") if exc.permanent else None)
    if gives_up:
        msg.status = "failed"
        if msg.audience == "broker":
            return _alert_failed(ctx, session, msg, code=exc.code, error=str(exc))
        if exc.permanent:
            return apply_error_to_lead(ctx, session, msg, exc.code)
        if msg.audience == "borrower":
            return _alert_send_failed(ctx, session, msg, "Twilio kept failing")
        return []
    msg.status = "pending"
    msg.next_attempt_at = utcnow() + _backoff(ctx, msg.attempts)
    return []


def _describe(code: int | None, error: str | None = None) -> str:
    """A short, borrower-free account of a Twilio error for an alert, a log line or the lead."""
    if code is None:
        return error or "unknown error"
    reason = PERMANENT_ERRORS.get(code)
    return f"error {code}{' ' + reason.replace('_', ' ') if reason else ''}"


def _alert_failed(
    ctx: AppContext, session: Session, msg: OutboundMessage, *, code: int | None, error: str,
) -> list[int]:
    """A text to the broker's team (or to the operator) did not reach them.

    Logged at warning and recorded on the lead and as an AlertFailure row (the audit export shows them). Then:
    when the sender cannot send (or cannot reach this recipient), the same alert goes again at once from
    another number of the account; when the failure may pass, it goes again after a backoff; otherwise (or
    after ALERT_DELIVERY_ATTEMPTS) it is escalated to the operator from a number that is not the failing one.
    Returns the ids of texts to send now."""
    already = session.exec(select(AlertFailure.id).where(AlertFailure.message_id == msg.id)).first()
    if already is not None:
        return []  # the same failure reported twice (an API error and a callback, or two callbacks)
    broker = session.get(Broker, msg.broker_id)
    lead = session.get(Lead, msg.lead_id) if msg.lead_id else None
    root_id = msg.retry_of or msg.id
    chain = list(session.exec(select(OutboundMessage).where(
        or_(OutboundMessage.id == root_id, OutboundMessage.retry_of == root_id))))
    tried = {m.from_phone for m in chain}
    accepted = msg.twilio_sid is not None  # Twilio took it, then could not deliver it
    ids: list[int] = []
    other = alerts_sender(ctx, avoid=tried) if code in SENDER_ERRORS.keys() | ROUTE_ERRORS else None
    if len(chain) >= ALERT_MAX_TEXTS:
        other = None
    if other is not None:
        action = f"resent from {other}"
        ids += _resend(session, msg, root_id=root_id, n=len(chain), from_phone=other, at=utcnow())
    elif accepted and code not in SENDER_ERRORS.keys() | ROUTE_ERRORS | RECIPIENT_ERRORS and len(
        chain) < min(ALERT_DELIVERY_ATTEMPTS, ALERT_MAX_TEXTS):
        action = "retry"
        ids += _resend(session, msg, root_id=root_id, n=len(chain), from_phone=msg.from_phone,
                       at=utcnow() + _backoff(ctx, len(chain)))
    elif msg.template_id in ESCALATION_TEMPLATES or broker is None:
        action = "not escalated: this was the escalation"
    else:
        escalated = _escalate(ctx, session, msg, broker=broker, lead=lead, error=_describe(code, error),
                              root_id=root_id)
        action = "escalated" if escalated else "not escalated: nobody else to tell"
        ids += escalated
    if code in SENDER_ERRORS and broker is not None:
        ids += _sender_down(ctx, session, broker=broker, number=msg.from_phone, code=code)
    session.add(AlertFailure(
        message_id=msg.id, root_id=root_id, broker_id=msg.broker_id, lead_id=msg.lead_id,
        template_id=msg.template_id, to_phone=msg.to_phone, from_phone=msg.from_phone, error_code=code,
        error=error[:300], action=action,
    ))
    if lead is not None:
        lead.alert_failed_at = utcnow()
        lead.alert_error = (f"{msg.template_id} to {msg.to_phone} from {msg.from_phone}: "
                            f"{_describe(code, error)} ({action})")[:300]
        session.add(lead)
    level = logging.ERROR if action.startswith("not escalated") else logging.WARNING
    log(logger, level, "broker alert failed", id=msg.id, template=msg.template_id, error=error, code=code,
        action=action, to=mask(msg.to_phone), sender=mask(msg.from_phone), broker_id=msg.broker_id)
    return ids


def _resend(
    session: Session, msg: OutboundMessage, *, root_id: int, n: int, from_phone: str, at: datetime,
) -> list[int]:
    """The same alert (the text as rendered) once more, linked to the first one."""
    copy = OutboundMessage(
        dedupe_key=f"alert-again:{root_id}:{n}", broker_id=msg.broker_id, lead_id=msg.lead_id, audience=msg.audience,
        purpose=msg.purpose, template_id=msg.template_id, policy_version=msg.policy_version, to_phone=msg.to_phone,
        from_phone=from_phone, body=msg.body, next_attempt_at=at, retry_of=root_id,
    )
    if not insert_once(session, copy):
        return []
    log(logger, logging.INFO, "alert queued again", id=copy.id, retry_of=root_id, template=msg.template_id,
        sender=mask(from_phone), due=at.isoformat())
    return [copy.id] if copy.id is not None and at <= utcnow() else []


def _escalate(ctx: AppContext, session: Session, msg: OutboundMessage, *, broker: Broker, lead: Lead | None,
              error: str, root_id: int) -> list[int]:
    """Tell the operator (TEXTBACK_OPERATOR_ALERT_TO; without one, the broker's cell and other alert numbers)
    that an alert failed, from a number other than the one that failed."""
    targets = ctx.settings.operator_alert_to or [broker.forward_to, *broker.alert_to]
    numbers = [n for n in dict.fromkeys(targets) if n != msg.to_phone]
    sender = alerts_sender(ctx, avoid={msg.from_phone}) or (
        msg.from_phone if msg.error_code not in SENDER_ERRORS else None)
    if not numbers or sender is None:
        return []
    alerts = queue_alert(session, ctx, broker=broker, lead=lead, template_id="alert_escalation",
                         values={"about": f"the caller {lead.phone}, who needs a call back" if lead
                                 else f"a service notice ({msg.template_id})", "error": error},
                         dedupe_key=f"escalate:{root_id}", numbers=numbers, from_phone=sender)
    return [a.id for a in alerts if a.id is not None and a.status == "pending"]


def _sender_down(ctx: AppContext, session: Session, *, broker: Broker, number: str, code: int) -> list[int]:
    """Once a day per number: tell the operator (or the broker's team) that a number of theirs cannot send."""
    sender = alerts_sender(ctx, avoid={number})
    if sender is None:
        log(logger, logging.ERROR, "a number cannot send and no other number can say so; set TEXTBACK_ALERTS_FROM",
            sender=mask(number), code=code, broker_id=broker.id)
        return []
    alerts = queue_alert(session, ctx, broker=broker, lead=None, template_id="alert_sender_down",
                         values={"number": number, "error": _describe(code)},
                         dedupe_key=f"sender-down:{number}:{utcnow().date().isoformat()}",
                         numbers=ctx.settings.operator_alert_to or broker.alert_to, from_phone=sender)
    if alerts:
        log(logger, logging.WARNING, "a number cannot send; alerts now leave from another", sender=mask(number),
            code=code, alerts_from=mask(sender), broker_id=broker.id)
    return [a.id for a in alerts if a.id is not None and a.status == "pending"]


def apply_error_to_lead(ctx: AppContext, session: Session, msg: OutboundMessage, code: int | None) -> list[int]:
    """What a permanent error means for the number (unsubscribed, or unable to receive texts), or for an alert
    that failed; returns the ids of any alerts queued for the broker."""
    if msg.audience == "broker":
        return _alert_failed(ctx, session, msg, code=code, error=_describe(code, msg.last_error))
    if msg.audience != "borrower" or code is None:
        return []
    if code == UNSUBSCRIBED_ERROR:
        set_opt_out(session, broker_id=msg.broker_id, phone=msg.to_phone, opted_out=True, source=f"error:{code}",
                    wait_seconds=optout_lock.change_wait(ctx.settings))
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
    if msg.purpose == "opener":
        ids += _alert_send_failed(ctx, session, msg, reason.replace("_", " "), code=code)
    if code in SENDER_ERRORS:
        broker = session.get(Broker, msg.broker_id)
        if broker is not None:
            ids += _sender_down(ctx, session, broker=broker, number=msg.from_phone, code=code)
    return ids


def _alert_send_failed(ctx: AppContext, session: Session, msg: OutboundMessage, error: str,
                       code: int | None = None) -> list[int]:
    """The broker still has a caller to call back. When the broker's number is what cannot send, the alert
    leaves from the alerts sender (it would fail from the same number)."""
    broker = session.get(Broker, msg.broker_id)
    if broker is None:
        return []
    lead = session.get(Lead, msg.lead_id) if msg.lead_id else None
    sender = alerts_sender(ctx, avoid={msg.from_phone}) if code in SENDER_ERRORS else None
    alerts = queue_alert(session, ctx, broker=broker, lead=lead, template_id="alert_send_failed",
                         values={"caller": msg.to_phone, "error": error}, dedupe_key=f"sendfail:{msg.id}",
                         from_phone=sender)
    return [a.id for a in alerts if a.id is not None and a.status == "pending"]


def due_ids(ctx: AppContext, limit: int = 100) -> list[int]:
    now = utcnow()
    with Session(ctx.engine) as session:
        # Rows stuck in 'sending' (a crashed worker) go back to pending, marked as unknown outcome.
        session.execute(
            update(OutboundMessage)
            .where(OutboundMessage.status == "sending",
                   OutboundMessage.claimed_at < now - timedelta(seconds=ctx.settings.stale_claim_seconds))
            .values(status="pending", unknown_outcome=True, next_attempt_at=now)
        )
        session.commit()
        rows = session.exec(
            select(OutboundMessage.id)
            .where(OutboundMessage.status == "pending", OutboundMessage.next_attempt_at <= now)
            .order_by(OutboundMessage.next_attempt_at)
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
            .where(OutboundMessage.status == "pending")
            .order_by(OutboundMessage.next_attempt_at).limit(1)
        ).first()
    if row is None:
        return None
    return max((row - datetime.now(UTC)).total_seconds(), 0.0)
