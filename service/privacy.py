"""Borrower data on request and by age: forget one number, purge old conversations.

Both keep the opt-out records (OptOut and OptOutEvent) for good: a purge must never make a number textable
again. Rows are deleted children first (decisions, delivery callbacks, texts, inbound messages, calls, then
the leads) so the foreign keys hold on every backend. What replay protection needs outlives the rows: the
SHA-256 of every deleted MessageSid and CallSid (ForgottenSid), so a captured signed START or missed call
replayed later is refused instead of opting the number back in or texting it. Forgetting a number also
drops its cached Twilio Lookup line type. The CRM webhook deliveries of a deleted lead go with it (their bodies
hold the number), sent or not, and so do its history (LeadEvent: captured fields, notes), its click-to-calls
(HumanCall) and the alert links to it (LeadLink); a console session opened from such a link is revoked.
Operational records that hold no borrower number or words (AlertFailure) stay, and so do the leads' missed-call
cases (LeadCase: timings and counts for the sufficiency report), cut loose from the lead and its call.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import and_, delete, exists, or_, update
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.orm import aliased
from sqlmodel import Session, SQLModel, col, select

from service.db import session_scope
from service.logs import log
from service.models import (
    CallEvent,
    Decision,
    DeliveryEvent,
    ForgottenSid,
    HumanCall,
    InboundMessage,
    Lead,
    LeadCase,
    LeadEvent,
    LeadLink,
    LineTypeCache,
    OutboundMessage,
    UserSession,
    WebhookDelivery,
    utcnow,
)
from service.phones import InvalidPhone, mask, to_e164

logger = logging.getLogger("textback.privacy")

COUNT_KEYS = (
    "leads",
    "inbound_messages",
    "outbound_messages",
    "decisions",
    "call_events",
    "delivery_events",
    "line_types",
    "webhook_deliveries",
    "lead_events",
    "human_calls",
    "lead_links",
    "link_sessions_revoked",
    "cases_anonymized",
)
# Work still to do: left alone by the retention purge.
PENDING_OUTBOUND = ("pending", "sending")
PENDING_INBOUND = ("received", "processing")
BATCH = 500

T = TypeVar("T")


def _zero() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)


def _chunks(values: Sequence[T], size: int = BATCH) -> Iterable[list[T]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


def _ids(keys: Iterable[int | None]) -> list[int]:
    """Primary keys read by a query (SQLModel types them optional; a stored row always has one)."""
    return [key for key in keys if key is not None]


def _same_number(raw: str | None, phone: str) -> bool:
    if not raw:
        return False
    if raw == phone:
        return True
    try:
        return to_e164(raw) == phone
    except InvalidPhone:
        return False


def sid_digest(sid: str) -> str:
    return hashlib.sha256(f"textback-sid:{sid}".encode()).hexdigest()


def was_forgotten(session: Session, sid: str) -> bool:
    """True when this MessageSid or CallSid belonged to rows since deleted: a replay, to be refused."""
    return session.get(ForgottenSid, sid_digest(sid)) is not None


def _remember_sids(session: Session, sids: Iterable[str], kind: str) -> None:
    """Keep the hash of each SID about to be deleted (once each), for replay protection."""
    digests = {sid_digest(sid) for sid in sids if sid}
    for chunk in _chunks(sorted(digests)):
        known = set(
            session.exec(select(ForgottenSid.digest).where(col(ForgottenSid.digest).in_(chunk))).all()
        )
        session.add_all(ForgottenSid(digest=d, kind=kind) for d in chunk if d not in known)
    session.flush()


def _delete(session: Session, model: type[SQLModel], *conditions: Any) -> int:
    stmt = delete(model).where(*conditions).execution_options(synchronize_session=False)
    result = cast("CursorResult[Any]", session.execute(stmt))  # a DELETE's result is a cursor result
    return result.rowcount or 0


def _anonymize_cases(session: Session, lead_ids: list[int]) -> int:
    """The leads' missed-call cases stay for the report's counts, cut loose from the lead and its call (no
    lead id a new lead could reuse, no CallSid that Twilio could resolve to the number)."""
    result = session.exec(
        update(LeadCase).where(col(LeadCase.lead_id).in_(lead_ids)).values(lead_id=None, call_sid=None)
        .execution_options(synchronize_session=False))
    return int(result.rowcount or 0)


def _revoke_link_sessions(session: Session, lead_ids: list[int]) -> int:
    """Sessions opened from an alert link to one of these leads see nothing once the lead is gone (and must not
    see a later lead that reuses the id): revoked."""
    stmt = (update(UserSession)
            .where(col(UserSession.lead_id).in_(lead_ids), col(UserSession.revoked_at).is_(None))
            .values(revoked_at=utcnow())
            .execution_options(synchronize_session=False))
    result = cast("CursorResult[Any]", session.execute(stmt))
    return result.rowcount or 0


def _delete_rows(
    session: Session,
    *,
    lead_ids: list[int],
    inbound_ids: list[int],
    outbound_ids: list[int],
    call_sids: list[str],
) -> dict[str, int]:
    """Delete the given rows and everything hanging off them, children first; returns counts."""
    counts = _zero()
    for chunk in _chunks(inbound_ids):
        counts["decisions"] += _delete(session, Decision, col(Decision.inbound_id).in_(chunk))
    for chunk in _chunks(lead_ids):
        counts["decisions"] += _delete(session, Decision, col(Decision.lead_id).in_(chunk))
    for chunk in _chunks(outbound_ids):
        sids = [
            sid
            for sid in session.exec(
                select(OutboundMessage.twilio_sid).where(col(OutboundMessage.id).in_(chunk))
            ).all()
            if sid
        ]
        if sids:
            counts["delivery_events"] += _delete(
                session, DeliveryEvent, col(DeliveryEvent.message_sid).in_(sids)
            )
        counts["outbound_messages"] += _delete(session, OutboundMessage, col(OutboundMessage.id).in_(chunk))
    for chunk in _chunks(inbound_ids):
        _remember_sids(
            session,
            session.exec(select(InboundMessage.message_sid).where(col(InboundMessage.id).in_(chunk))).all(),
            "message",
        )
        counts["inbound_messages"] += _delete(session, InboundMessage, col(InboundMessage.id).in_(chunk))
    for sid_chunk in _chunks(call_sids):
        _remember_sids(session, sid_chunk, "call")
        counts["call_events"] += _delete(session, CallEvent, col(CallEvent.call_sid).in_(sid_chunk))
    for chunk in _chunks(lead_ids):
        counts["webhook_deliveries"] += _delete(session, WebhookDelivery, col(WebhookDelivery.lead_id).in_(chunk))
        counts["lead_events"] += _delete(session, LeadEvent, col(LeadEvent.lead_id).in_(chunk))
        counts["human_calls"] += _delete(session, HumanCall, col(HumanCall.lead_id).in_(chunk))
        counts["lead_links"] += _delete(session, LeadLink, col(LeadLink.lead_id).in_(chunk))
        counts["link_sessions_revoked"] += _revoke_link_sessions(session, chunk)
        counts["cases_anonymized"] += _anonymize_cases(session, chunk)
        counts["leads"] += _delete(session, Lead, col(Lead.id).in_(chunk))
    return counts


# ---------------------------------------------------------------------------------------------------------
# Forget one number


def forget_number(engine: Engine, phone_e164: str, *, broker_id: int | None = None) -> dict[str, int]:
    """Delete everything stored about one number (for one broker, or all): its leads, its inbound messages and
    the decisions on them, every text to it or about it (alerts naming it), their delivery callbacks, and its
    calls. The opt-out status and history stay. Raises InvalidPhone for a number that is not one."""
    phone = to_e164(phone_e164)
    with session_scope(engine) as session:
        lead_q = select(Lead.id).where(col(Lead.phone) == phone)
        inbound_q = select(InboundMessage.id)
        outbound_q = select(OutboundMessage.id)
        call_q = select(CallEvent.call_sid, CallEvent.caller).where(
            col(CallEvent.caller).contains(phone[-7:])
        )
        if broker_id is not None:
            lead_q = lead_q.where(col(Lead.broker_id) == broker_id)
            inbound_q = inbound_q.where(col(InboundMessage.broker_id) == broker_id)
            outbound_q = outbound_q.where(col(OutboundMessage.broker_id) == broker_id)
            call_q = call_q.where(col(CallEvent.broker_id) == broker_id)
        lead_ids = _ids(session.exec(lead_q).all())
        about_lead = [col(OutboundMessage.lead_id).in_(lead_ids)] if lead_ids else []
        inbound_ids = _ids(
            session.exec(
                inbound_q.where(
                    or_(
                        col(InboundMessage.from_phone) == phone,
                        *([col(InboundMessage.lead_id).in_(lead_ids)] if lead_ids else []),
                    )
                )
            ).all()
        )
        # Texts to the number, texts on its leads (alerts to the broker), and any text naming it.
        outbound_ids = _ids(
            session.exec(
                outbound_q.where(
                    or_(
                        col(OutboundMessage.to_phone) == phone,
                        col(OutboundMessage.body).contains(phone),
                        *about_lead,
                    )
                )
            ).all()
        )
        call_sids = sorted({sid for sid, caller in session.exec(call_q).all() if _same_number(caller, phone)})
        counts = _delete_rows(
            session,
            lead_ids=lead_ids,
            inbound_ids=inbound_ids,
            outbound_ids=outbound_ids,
            call_sids=call_sids,
        )
        # The Lookup result says what kind of line the number is: it goes too (a later call looks it up again).
        counts["line_types"] = _delete(session, LineTypeCache, col(LineTypeCache.phone) == phone)
    log(logger, logging.INFO, "number forgotten", phone=mask(phone), broker_id=broker_id, **counts)
    return counts


# ---------------------------------------------------------------------------------------------------------
# Retention


def _stale_lead_ids(session: Session, cutoff: datetime, among: list[int] | None = None) -> list[int]:
    """Leads with no activity since the cutoff and no work still pending (optionally only among some ids)."""
    recent_inbound = exists().where(
        col(InboundMessage.lead_id) == Lead.id,
        or_(col(InboundMessage.received_at) >= cutoff, col(InboundMessage.status).in_(PENDING_INBOUND)),
    )
    recent_outbound = exists().where(
        or_(
            col(OutboundMessage.lead_id) == Lead.id,
            and_(
                col(OutboundMessage.broker_id) == Lead.broker_id, col(OutboundMessage.to_phone) == Lead.phone
            ),
        ),
        or_(
            col(OutboundMessage.created_at) >= cutoff,
            col(OutboundMessage.sent_at) >= cutoff,
            col(OutboundMessage.status).in_(PENDING_OUTBOUND),
        ),
    )
    recent_call = exists().where(
        col(CallEvent.broker_id) == Lead.broker_id,
        col(CallEvent.caller) == Lead.phone,
        col(CallEvent.created_at) >= cutoff,
    )
    recent_click_to_call = exists().where(col(HumanCall.lead_id) == Lead.id, col(HumanCall.created_at) >= cutoff)
    stmt = (
        select(Lead.id)
        .where(col(Lead.created_at) < cutoff, col(Lead.updated_at) < cutoff)
        .where(or_(col(Lead.opener_at).is_(None), col(Lead.opener_at) < cutoff))
        .where(~recent_inbound, ~recent_outbound, ~recent_call, ~recent_click_to_call)
        .order_by(col(Lead.id))
    )
    if among is not None:
        stmt = stmt.where(col(Lead.id).in_(among))
    return _ids(session.exec(stmt).all())


def _purge_leads(engine: Engine, candidates: list[int], cutoff: datetime) -> dict[str, int]:
    with session_scope(engine) as session:
        lead_ids = _stale_lead_ids(session, cutoff, among=candidates)  # again: a call may just have come in
        if not lead_ids:
            return _zero()
        leads = session.exec(select(Lead.broker_id, Lead.phone).where(col(Lead.id).in_(lead_ids))).all()
        inbound_ids = _ids(
            session.exec(select(InboundMessage.id).where(col(InboundMessage.lead_id).in_(lead_ids))).all()
        )
        by_number = [
            and_(col(OutboundMessage.broker_id) == b, col(OutboundMessage.to_phone) == p) for b, p in leads
        ]
        outbound_ids = _ids(
            session.exec(
                select(OutboundMessage.id).where(
                    or_(col(OutboundMessage.lead_id).in_(lead_ids), *by_number),
                    col(OutboundMessage.status).not_in(PENDING_OUTBOUND),
                )
            ).all()
        )
        calls = [and_(col(CallEvent.broker_id) == b, col(CallEvent.caller) == p) for b, p in leads]
        call_sids = (
            sorted(set(session.exec(select(CallEvent.call_sid).where(or_(*calls))).all())) if calls else []
        )
        return _delete_rows(
            session,
            lead_ids=lead_ids,
            inbound_ids=inbound_ids,
            outbound_ids=outbound_ids,
            call_sids=call_sids,
        )


def _purge_leftovers(engine: Engine, cutoff: datetime) -> dict[str, int]:
    """Old rows that belong to no lead: calls that never became one (answered, withheld, screening), alerts
    without a lead, delivery callbacks for texts no longer stored."""
    with session_scope(engine) as session:
        outbound_ids = _ids(
            session.exec(
                select(OutboundMessage.id).where(
                    col(OutboundMessage.lead_id).is_(None),
                    col(OutboundMessage.created_at) < cutoff,
                    col(OutboundMessage.status).not_in(PENDING_OUTBOUND),
                )
            ).all()
        )
        inbound_ids = _ids(
            session.exec(
                select(InboundMessage.id).where(
                    col(InboundMessage.lead_id).is_(None),
                    col(InboundMessage.received_at) < cutoff,
                    col(InboundMessage.status).not_in(PENDING_INBOUND),
                )
            ).all()
        )
        counts = _delete_rows(
            session, lead_ids=[], inbound_ids=inbound_ids, outbound_ids=outbound_ids, call_sids=[]
        )
        other = aliased(CallEvent)
        has_lead = exists().where(
            col(Lead.broker_id) == CallEvent.broker_id, col(Lead.phone) == CallEvent.caller
        )
        fresh_leg = exists().where(col(other.call_sid) == CallEvent.call_sid, col(other.created_at) >= cutoff)
        stale_calls = (col(CallEvent.created_at) < cutoff, ~has_lead, ~fresh_leg)
        _remember_sids(session, session.exec(select(CallEvent.call_sid).where(*stale_calls)).all(), "call")
        counts["call_events"] += _delete(session, CallEvent, *stale_calls)
        counts["line_types"] += _delete(session, LineTypeCache, col(LineTypeCache.checked_at) < cutoff)
        known = exists().where(col(OutboundMessage.twilio_sid) == DeliveryEvent.message_sid)
        counts["delivery_events"] += _delete(
            session, DeliveryEvent, col(DeliveryEvent.created_at) < cutoff, ~known
        )
    return counts


def purge_older_than(engine: Engine, days: int, *, now: datetime | None = None) -> dict[str, int]:
    """Delete conversations whose last activity is more than `days` days old (the retention setting), with
    their messages, decisions and calls; opt-outs stay, and anything still pending is left alone."""
    if days < 1:
        msg = "days must be at least 1"
        raise ValueError(msg)
    cutoff = (now or utcnow()) - timedelta(days=days)
    counts = _zero()
    with Session(engine) as session:
        lead_ids = _stale_lead_ids(session, cutoff)
    for chunk in _chunks(lead_ids):
        for key, value in _purge_leads(engine, chunk, cutoff).items():
            counts[key] += value
    for key, value in _purge_leftovers(engine, cutoff).items():
        counts[key] += value
    log(logger, logging.INFO, "retention purge", days=days, cutoff=cutoff.isoformat(), **counts)
    return counts
