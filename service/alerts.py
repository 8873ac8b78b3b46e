"""Every text to the broker's team: what it says, to which numbers, from which number, and what happens when
one does not get through.

Alerts are queued through service.outbox like any text (to a number outside the team, an alert template is a
borrower text, gated and guarded). `after_queued` tells the team about a borrower text that will not go (the
circuit breaker tripped, the output guard blocked it). An alert that fails (`alert_failed`) is resent from
another number of the account when the sender is the problem, retried after a backoff when the failure may
pass, and otherwise escalated to the operator; a number that cannot send is reported once a day.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from sqlmodel import Session, col, or_, select

from service import lead_links
from service.brokers import template_values
from service.db import insert_once
from service.logs import log
from service.models import AlertFailure, Broker, Lead, MessageStatus, OutboundMessage, Purpose, utcnow
from service.one_time import first_link
from service.outbox import Queued, queue_text
from service.phones import mask
from service.reply_language import language_note
from service.sending.gates import Cause, Kind
from service.sending.retry import backoff
from service.sensitive import mask_sensitive
from service.store import saved_id
from service.twilio.client import PERMANENT_ERRORS, RECIPIENT_ERRORS, ROUTE_ERRORS, SENDER_ERRORS

if TYPE_CHECKING:
    from service.context import AppContext

logger = logging.getLogger("textback.outbox")  # the name operators filter send and alert logs on

# Texts that already tell someone an alert failed: when one of them fails too, nothing is escalated further.
ESCALATION_TEMPLATES = {"alert_escalation", "alert_sender_down", "alert_operator"}
# An alert Twilio accepted but could not deliver is sent again (after a backoff) until this many texts of it
# went out in all; one that fails at the API was already retried send_max_attempts times on its own row.
ALERT_DELIVERY_ATTEMPTS = 3
# However it fails (switching senders included), no alert is sent more often than this.
ALERT_MAX_TEXTS = 5
EXCERPT_CHARS = 100
FOLLOW_UP_TEMPLATE = "alert_forward_more"
LABELS = {
    "purchase": "purchase", "refinance": "refinance", "home_equity": "home equity", "other": "other loan",
    "under_30_days": "within 30 days", "1_to_3_months": "1-3 months", "3_to_6_months": "3-6 months",
    "over_6_months": "6+ months", "researching": "just researching",
}


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The borrower's words as an alert quotes them: sensitive numbers masked, then shortened."""
    flat = " ".join(mask_sensitive(text or "").split()).replace('"', "'")
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def known_summary(lead: Lead) -> str:
    """What the bot learnt about the lead, as an alert says it."""
    parts: list[str] = []
    if lead.loan_type and lead.loan_type != "unknown":
        parts.append(LABELS.get(lead.loan_type, lead.loan_type))
    if lead.timeline and lead.timeline != "unknown":
        parts.append(LABELS.get(lead.timeline, lead.timeline))
    if lead.applied_elsewhere is True:
        parts.append("applied elsewhere")
    elif lead.applied_elsewhere is False:
        parts.append("not applied elsewhere")
    if lead.callback_window:
        parts.append(f"callback {mask_sensitive(lead.callback_window)}")
    return ", ".join(parts) or "nothing yet"


def pending_ids(msgs: Iterable[OutboundMessage | None]) -> list[int]:
    """The ids of the texts among `msgs` that are to be sent now (pending)."""
    return [m.id for m in msgs if m is not None and m.id is not None and m.status == MessageStatus.pending]


def queue_alert(
    session: Session, ctx: AppContext, *, broker: Broker, lead: Lead | None, template_id: str,
    values: Mapping[str, str], dedupe_key: str | None = None, numbers: list[str] | None = None,
    from_phone: str | None = None,
) -> list[OutboundMessage]:
    """An alert to each of the broker's alert numbers, or to `numbers` (never a borrower-facing text), from the
    broker's number, or from the alerts sender when the broker's number is known not to be able to send. A
    template with `$link` gets each recipient's own link to the lead (service.lead_links)."""
    sender = from_phone or alert_sender_for(session, ctx, broker)
    linked = ctx.templates.uses(template_id, "link")
    out = []
    for index, number in enumerate(broker.alert_to if numbers is None else numbers):
        key = f"{dedupe_key}:{index}" if dedupe_key else None
        # Each recipient's own link to the lead (single use); a duplicate's link is never sent and expires.
        mine = {**values, "link": lead_links.link_for(session, ctx, lead=lead, phone=number)} if linked else values
        queued = queue_text(session, ctx, broker=broker, to=number, template_id=template_id,
                            purpose=Purpose.alert, lead=lead, values=mine, dedupe_key=key, from_phone=sender)
        if queued is not None:
            after_queued(session, ctx, broker=broker, lead=lead, queued=queued)
            out.append(queued.msg)
    return out


def after_queued(session: Session, ctx: AppContext, *, broker: Broker, lead: Lead | None, queued: Queued) -> None:
    """Tell the team about a text that will not go: the circuit breaker stopped automated texts (the operator,
    once per window), or the output guard blocked it (the broker, who has a caller to answer in person)."""
    msg, verdict = queued.msg, queued.verdict
    if verdict.kind is Kind.suppress and verdict.cause is Cause.circuit_breaker:
        alert_operator(session, ctx, broker=broker, reason=msg.last_error or "")
    if msg.status == MessageStatus.blocked:
        rules = ", ".join(v["rule"] for v in (msg.guard_result or {}).get("violations", [])) or "policy"
        queue_alert(session, ctx, broker=broker, lead=lead, template_id="alert_blocked",
                    values={"caller": msg.to_phone, "rules": rules})


def alert_reply(session: Session, ctx: AppContext, *, broker: Broker, lead: Lead, text: str,
                template_id: str = "alert_reply") -> list[OutboundMessage]:
    """A borrower's text, quoted for the broker."""
    return queue_alert(session, ctx, broker=broker, lead=lead, template_id=template_id,
                       values={"caller": lead.phone, "excerpt": excerpt(text)})


def alert_handoff(session: Session, ctx: AppContext, *, broker: Broker, lead: Lead, reasons: str, text: str,
                  message_sid: str) -> list[OutboundMessage]:
    """The lead needs a person: the reasons (in words), what the bot knows and the borrower's words."""
    return queue_alert(session, ctx, broker=broker, lead=lead, template_id="alert_handoff",
                       values={"caller": lead.phone, "reasons": reasons, "known": known_summary(lead),
                               "excerpt": excerpt(text)},
                       dedupe_key=f"handoff:{message_sid}")


def alert_ready(session: Session, ctx: AppContext, *, broker: Broker, lead: Lead,
                message_sid: str) -> list[OutboundMessage]:
    """Every question answered: the summary, once per lead (the caller keeps `summary_alert_sent`)."""
    return queue_alert(session, ctx, broker=broker, lead=lead, template_id="alert_ready",
                       values={"caller": lead.phone, "known": known_summary(lead)},
                       dedupe_key=f"ready-alert:{message_sid}")


def alert_forward(session: Session, ctx: AppContext, *, broker: Broker, lead: Lead, text: str, message_sid: str,
                  template_id: str) -> list[OutboundMessage]:
    """A borrower text forwarded to the broker at once (service.forwarding decides when)."""
    return queue_alert(session, ctx, broker=broker, lead=lead, template_id=template_id,
                       values={"caller": lead.phone, "excerpt": excerpt(text)},
                       dedupe_key=f"forward:{message_sid}")


def _more(count: int) -> str:
    return f"{count} more text" if count == 1 else f"{count} more texts"


def alert_follow_up(session: Session, ctx: AppContext, *, broker: Broker, lead: Lead, text: str, message_sid: str,
                    due: datetime) -> list[OutboundMessage]:
    """The one follow-up forward for the texts inside a forwarding window, due at the window's end."""
    msgs = queue_alert(session, ctx, broker=broker, lead=lead, template_id=FOLLOW_UP_TEMPLATE,
                       values={"caller": lead.phone, "more": _more(1), "excerpt": excerpt(text)},
                       dedupe_key=f"forward-more:{message_sid}")
    for msg in msgs:
        msg.next_attempt_at = due
        session.add(msg)
    return msgs


def follow_up_body(ctx: AppContext, broker: Broker, lead: Lead, count: int, text: str, *, was: str) -> str:
    """The follow-up forward's text once it stands for `count` texts, the latest being `text`; `was` is the
    text it replaces (its recipient's link is kept)."""
    return ctx.templates.render(FOLLOW_UP_TEMPLATE, {
        **template_values(broker), "caller": lead.phone, "more": _more(count), "excerpt": excerpt(text),
        "language_note": language_note(ctx.templates, lead),
        "link": first_link(was) or lead_links.console_login_url(ctx.settings),
    }).text


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
               or_(col(OutboundMessage.error_code).in_(SENDER_ERRORS), OutboundMessage.delivery_status == "delivered"))
        .order_by(col(OutboundMessage.id).desc())
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


def alert_operator(session: Session, ctx: AppContext, *, broker: Broker, reason: str) -> None:
    """Once per breaker window: tell the operator (or the broker's team) that automated texts stopped."""
    window = ctx.sending_policy.caps.breaker_window_minutes
    bucket = int(utcnow().timestamp() // (window * 60))
    alerts = queue_alert(session, ctx, broker=broker, lead=None, template_id="alert_operator",
                         values={"reason": reason}, dedupe_key=f"breaker:{broker.id}:{bucket}",
                         numbers=ctx.settings.operator_alert_to or broker.alert_to)
    if alerts:
        log(logger, logging.WARNING, "circuit breaker tripped", broker_id=broker.id, reason=reason)
    ctx.wake.set()


def describe(code: int | None, error: str | None = None) -> str:
    """A short, borrower-free account of a Twilio error for an alert, a log line or the lead."""
    if code is None:
        return error or "unknown error"
    reason = PERMANENT_ERRORS.get(code)
    return f"error {code}{' ' + reason.replace('_', ' ') if reason else ''}"


def alert_failed(
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
    if msg.purpose == Purpose.sign_in:
        # Not an alert: the person waiting for it asks for a new code. Only a number that cannot send is told.
        log(logger, logging.WARNING, "sign-in code not delivered", id=msg.id, error=error, code=code,
            to=mask(msg.to_phone), sender=mask(msg.from_phone), broker_id=msg.broker_id)
        if code in SENDER_ERRORS and broker is not None:
            return sender_down(ctx, session, broker=broker, number=msg.from_phone, code=code)
        return []
    lead = session.get(Lead, msg.lead_id) if msg.lead_id else None
    root_id = msg.retry_of or saved_id(msg)
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
        ids += _resend(session, ctx, msg, root_id=root_id, n=len(chain), from_phone=other, at=utcnow())
    elif accepted and code not in SENDER_ERRORS.keys() | ROUTE_ERRORS | RECIPIENT_ERRORS and len(
        chain) < min(ALERT_DELIVERY_ATTEMPTS, ALERT_MAX_TEXTS):
        action = "retry"
        ids += _resend(session, ctx, msg, root_id=root_id, n=len(chain), from_phone=msg.from_phone,
                       at=utcnow() + backoff(ctx, len(chain)))
    elif msg.template_id in ESCALATION_TEMPLATES or broker is None:
        action = "not escalated: this was the escalation"
    else:
        escalated = _escalate(ctx, session, msg, broker=broker, lead=lead, error=describe(code, error),
                              root_id=root_id)
        action = "escalated" if escalated else "not escalated: nobody else to tell"
        ids += escalated
    if code in SENDER_ERRORS and broker is not None:
        ids += sender_down(ctx, session, broker=broker, number=msg.from_phone, code=code)
    session.add(AlertFailure(
        message_id=saved_id(msg), root_id=root_id, broker_id=msg.broker_id, lead_id=msg.lead_id,
        template_id=msg.template_id, to_phone=msg.to_phone, from_phone=msg.from_phone, error_code=code,
        error=error[:300], action=action,
    ))
    if lead is not None:
        lead.alert_failed_at = utcnow()
        lead.alert_error = (f"{msg.template_id} to {msg.to_phone} from {msg.from_phone}: "
                            f"{describe(code, error)} ({action})")[:300]
        session.add(lead)
    level = logging.ERROR if action.startswith("not escalated") else logging.WARNING
    log(logger, level, "broker alert failed", id=msg.id, template=msg.template_id, error=error, code=code,
        action=action, to=mask(msg.to_phone), sender=mask(msg.from_phone), broker_id=msg.broker_id)
    return ids


def _resend(
    session: Session, ctx: AppContext, msg: OutboundMessage, *, root_id: int, n: int, from_phone: str, at: datetime,
) -> list[int]:
    """The same alert (the text as rendered, with a fresh link to the lead) once more, linked to the first one."""
    body = lead_links.relink(session, ctx, body=msg.body, lead_id=msg.lead_id, phone=msg.to_phone)
    copy = OutboundMessage(
        dedupe_key=f"alert-again:{root_id}:{n}", broker_id=msg.broker_id, lead_id=msg.lead_id, audience=msg.audience,
        purpose=msg.purpose, template_id=msg.template_id, policy_version=msg.policy_version, to_phone=msg.to_phone,
        from_phone=from_phone, body=body, next_attempt_at=at, retry_of=root_id,
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
    return pending_ids(alerts)


def sender_down(ctx: AppContext, session: Session, *, broker: Broker, number: str, code: int) -> list[int]:
    """Once a day per number: tell the operator (or the broker's team) that a number of theirs cannot send."""
    sender = alerts_sender(ctx, avoid={number})
    if sender is None:
        log(logger, logging.ERROR, "a number cannot send and no other number can say so; set TEXTBACK_ALERTS_FROM",
            sender=mask(number), code=code, broker_id=broker.id)
        return []
    alerts = queue_alert(session, ctx, broker=broker, lead=None, template_id="alert_sender_down",
                         values={"number": number, "error": describe(code)},
                         dedupe_key=f"sender-down:{number}:{utcnow().date().isoformat()}",
                         numbers=ctx.settings.operator_alert_to or broker.alert_to, from_phone=sender)
    if alerts:
        log(logger, logging.WARNING, "a number cannot send; alerts now leave from another", sender=mask(number),
            code=code, alerts_from=mask(sender), broker_id=broker.id)
    return pending_ids(alerts)


def alert_send_failed(ctx: AppContext, session: Session, msg: OutboundMessage, error: str,
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
    return pending_ids(alerts)
