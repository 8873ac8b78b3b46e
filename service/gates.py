"""The checks before any automated text, cheapest first. Each returns a reason when the text must not go now.

Order: opt-out -> known contact (do-not-text) -> number known not to take texts -> circuit breaker ->
caps (per lead total, per lead per day, per broker per day) -> quiet hours (defer, not drop). The output
guard runs after these (it is the most expensive). Line type (Twilio Lookup) is checked at send time,
because it needs the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func
from sqlmodel import Session, or_, select

from service.models import Broker, DoNotText, Lead, OutboundMessage

if TYPE_CHECKING:
    from service.context import AppContext

NOT_TEXTABLE_LINE_TYPES = {"landline", "pager", "tollFree"}
COUNTED = ("pending", "sending", "sent", "dry_run")
OPENER = "opener"


@dataclass(frozen=True)
class Gate:
    """What the gates decided: `status` None means send; 'suppressed' drops; 'deferred' waits until `not_before`."""

    status: str | None = None
    reason: str | None = None
    not_before: datetime | None = None


def is_known_contact(session: Session, broker: Broker, phone: str) -> bool:
    if phone in broker.do_not_text:
        return True
    row = session.exec(
        select(DoNotText.id).where(DoNotText.phone == phone,
                                   or_(DoNotText.broker_id.is_(None), DoNotText.broker_id == broker.id))
    ).first()
    return row is not None


def _count(session: Session, *conditions: object) -> int:
    return session.exec(
        select(func.count()).select_from(OutboundMessage).where(
            OutboundMessage.audience == "borrower", OutboundMessage.status.in_(COUNTED), *conditions)
    ).one()


def breaker_tripped(session: Session, ctx: AppContext, broker: Broker, now: datetime) -> str | None:
    """Openers in the window, platform-wide and per broker to distinct numbers: too many looks like abuse."""
    caps = ctx.sending_policy.caps
    since = now - timedelta(minutes=caps.breaker_window_minutes)
    total = _count(session, OutboundMessage.purpose == OPENER, OutboundMessage.created_at >= since)
    if total >= caps.breaker_max_openers:
        return f"circuit breaker: {total} openers in {caps.breaker_window_minutes} min across all brokers"
    distinct = session.exec(
        select(func.count(func.distinct(OutboundMessage.to_phone))).where(
            OutboundMessage.broker_id == broker.id, OutboundMessage.purpose == OPENER,
            OutboundMessage.status.in_(COUNTED), OutboundMessage.created_at >= since)
    ).one()
    if distinct >= caps.breaker_max_openers_per_broker:
        return f"circuit breaker: {distinct} openers to different numbers in {caps.breaker_window_minutes} min"
    return None


def check(  # noqa: PLR0911 - one early return per gate reads best
    session: Session, ctx: AppContext, *, broker: Broker, lead: Lead | None, to: str, purpose: str, now: datetime,
    automated: bool,
) -> Gate:
    """Every gate for one borrower-facing text (opt-out is checked by the caller, first)."""
    if is_known_contact(session, broker, to):
        return Gate("suppressed", "known contact (do-not-text list)")
    if lead is not None and lead.not_textable_reason:
        return Gate("suppressed", f"not textable: {lead.not_textable_reason}")
    if not automated:
        return Gate()
    if purpose == OPENER:
        tripped = breaker_tripped(session, ctx, broker, now)
        if tripped:
            return Gate("suppressed", tripped)
    caps = ctx.sending_policy.caps
    if lead is not None:
        per_lead_total = ctx.settings.max_automated_texts_per_lead or caps.per_lead_total
        if lead.automated_count >= per_lead_total:
            return Gate("suppressed", "per-lead cap reached")
        today = _count(session, OutboundMessage.lead_id == lead.id, OutboundMessage.created_at >= now - timedelta(days=1))
        if today >= caps.per_lead_per_day:
            return Gate("suppressed", "per-lead daily cap reached")
    broker_today = _count(session, OutboundMessage.broker_id == broker.id, OutboundMessage.created_at >= now - timedelta(days=1))
    if broker_today >= caps.per_broker_per_day:
        return Gate("suppressed", "per-broker daily cap reached")
    exempt = ctx.settings.opener_is_reply_override  # None: as the quiet-hours policy file says
    is_opener = purpose == OPENER and exempt is not False
    if is_opener and exempt is True:
        return Gate()
    not_before = ctx.sending_policy.next_allowed_send(to, now, broker.timezone, is_opener=is_opener)
    if not_before > now:
        return Gate("deferred", ctx.sending_policy.quiet_hours_reason(to, now, broker.timezone), not_before)
    return Gate()


def line_type_allows(session: Session, ctx: AppContext, phone: str, now: datetime) -> str | None:
    """Twilio Lookup line type (when enabled), cached for 30 days, failing open. Returns a reason to skip."""
    from service.models import LineTypeCache  # noqa: PLC0415

    if not ctx.settings.line_type_lookup or ctx.gateway is None:
        return None
    cached = session.get(LineTypeCache, phone)
    if cached is None or cached.checked_at < now - timedelta(days=30):
        session.commit()  # never hold a transaction (on SQLite, the write lock) across the network call
        try:
            line_type = ctx.gateway.line_type(phone)
        except Exception:  # noqa: BLE001 - lookup is advisory: fail open, the send's own errors still count
            return None
        cached = cached or LineTypeCache(phone=phone)
        cached.line_type, cached.checked_at = line_type, now
        session.add(cached)
    if cached.line_type in NOT_TEXTABLE_LINE_TYPES:
        return f"line type {cached.line_type}"
    return None
