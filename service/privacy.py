"""Borrower data on request and by age: forget one number, purge old conversations (the mechanisms).

What the law requires to be kept, and for how long, is policies/retention/retention.yaml
(service.retention_policy); the commands and the worker go through service.retention, which refuses a period
shorter than the policy's unless forced with a recorded reason. The functions here take the cutoff they are
given.

`forget(..., cutoff=...)` is what `privacy forget` does by default. Per table:
- kept while the conversation is younger than the cutoff (the `communications` category; deleted by the
  retention purge once their period ends): the lead row (the conversation record, its captured fields
  cleared), InboundMessage, OutboundMessage (texts to it and alerts about it), Decision (its LLM `analysis`
  cleared), DeliveryEvent, CallEvent, HumanCall (click-to-calls). A pending text to the number is not sent
  (suppressed). A conversation already past the cutoff goes whole, as the purge would take it.
- deleted at once (the `borrower-details` category): the lead's captured fields (loan type, timeline, other
  lenders, callback window), the caller's name and the outcome note (cleared on the kept row), each
  decision's LLM analysis (cleared), LeadEvent (history: captured fields, notes), WebhookDelivery (CRM
  deliveries: their bodies hold the number), LeadLink (alert links), LineTypeCache; console sessions opened
  from a link to the lead are revoked; its LeadCase rows are cut loose from the lead and its call.
- kept for good: OptOut and OptOutEvent, ForgottenSid hashes, AlertFailure.
`forget(..., cutoff=None)` (forced, with a recorded reason) deletes every row as below, opt-outs excepted.

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

Size: over 400 lines, because forgetting and purging share the deletion order, the "last activity" query that
decides what a conversation's age is, and the replay-protection hashes; apart, each would need the other's
private helpers.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import and_, delete, exists, null, or_, update
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.orm import aliased
from sqlmodel import Session, SQLModel, col, select

from service.db import session_scope
from service.logs import log
from service.models import (
    Audience,
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
    MessageStatus,
    OptOut,
    OptOutEvent,
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
    "lead_details_cleared",
    "decision_analyses_cleared",
    "pending_texts_cancelled",
)
# What `forget` keeps of a conversation younger than the cutoff (the communications), counted.
KEPT_KEYS = (
    "leads",
    "inbound_messages",
    "outbound_messages",
    "decisions",
    "call_events",
    "delivery_events",
    "human_calls",
)
# The captured fields, names and notes a kept conversation record loses on `forget`.
LEAD_DETAILS = ("name", "loan_type", "timeline", "applied_elsewhere", "callback_window", "outcome_note")
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


@dataclass
class ForgetOutcome:
    """What `forget` deleted, what it kept of conversations younger than the cutoff (and their last activity,
    from which the retention policy says until when), and how many opt-out records stay for good."""

    deleted: dict[str, int] = field(default_factory=_zero)
    kept: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KEPT_KEYS, 0))
    last_activity: datetime | None = None
    opt_outs: int = 0

    @property
    def kept_any(self) -> bool:
        return any(self.kept.values())


def _latest(*moments: datetime | None) -> datetime | None:
    known = [m for m in moments if m is not None]
    return max(known) if known else None


def _count(session: Session, model: type[SQLModel], *conditions: Any) -> int:
    return len(session.exec(select(model).where(*conditions)).all())


def _forget(session: Session, phone: str, broker_id: int | None, cutoff: datetime | None) -> ForgetOutcome:
    outcome = ForgetOutcome()
    lead_q = select(Lead.id).where(col(Lead.phone) == phone)
    inbound_q = select(InboundMessage)
    outbound_q = select(OutboundMessage)
    call_q = select(CallEvent).where(col(CallEvent.caller).contains(phone[-7:]))
    if broker_id is not None:
        lead_q = lead_q.where(col(Lead.broker_id) == broker_id)
        inbound_q = inbound_q.where(col(InboundMessage.broker_id) == broker_id)
        outbound_q = outbound_q.where(col(OutboundMessage.broker_id) == broker_id)
        call_q = call_q.where(col(CallEvent.broker_id) == broker_id)
    lead_ids = _ids(session.exec(lead_q).all())
    about_lead = [col(OutboundMessage.lead_id).in_(lead_ids)] if lead_ids else []
    inbound = session.exec(inbound_q.where(or_(
        col(InboundMessage.from_phone) == phone,
        *([col(InboundMessage.lead_id).in_(lead_ids)] if lead_ids else []),
    ))).all()
    # Texts to the number, texts on its leads (alerts to the broker), and any text naming it.
    outbound = session.exec(outbound_q.where(or_(
        col(OutboundMessage.to_phone) == phone, col(OutboundMessage.body).contains(phone), *about_lead,
    ))).all()
    calls = [c for c in session.exec(call_q).all() if _same_number(c.caller, phone)]

    # Conversations younger than the cutoff (or with work pending) are kept; older ones go whole.
    young: list[int] = []
    if cutoff is not None and lead_ids:
        stale = set(_stale_lead_ids(session, cutoff, among=lead_ids))
        young = [lead_id for lead_id in lead_ids if lead_id not in stale]
    young_leads = session.exec(select(Lead).where(col(Lead.id).in_(young))).all() if young else []
    young_pairs = {(lead.broker_id, lead.phone) for lead in young_leads}
    old_ids = [lead_id for lead_id in lead_ids if lead_id not in set(young)]

    def keep_inbound(row: InboundMessage) -> bool:
        if cutoff is None or row.lead_id in old_ids:
            return False
        if row.lead_id in young:
            return True
        return row.received_at >= cutoff or row.status in PENDING_INBOUND

    def keep_outbound(row: OutboundMessage) -> bool:
        if cutoff is None or row.lead_id in old_ids:
            return False
        if row.lead_id in young or (row.lead_id is None and (row.broker_id, row.to_phone) in young_pairs):
            return True
        sent = row.sent_at is not None and row.sent_at >= cutoff
        return row.created_at >= cutoff or sent or row.status in PENDING_OUTBOUND

    fresh_calls = {c.call_sid for c in calls if cutoff is not None and c.created_at >= cutoff}

    def keep_call(row: CallEvent) -> bool:
        if cutoff is None:
            return False
        return (row.broker_id, phone) in young_pairs or row.call_sid in fresh_calls

    kept_in = [m for m in inbound if keep_inbound(m)]
    kept_out = [m for m in outbound if keep_outbound(m)]
    kept_calls = [c for c in calls if keep_call(c)]
    kept_in_ids = _ids(m.id for m in kept_in)
    kept_out_ids = _ids(m.id for m in kept_out)
    kept_sids = {c.call_sid for c in kept_calls}
    outcome.deleted = _delete_rows(
        session,
        lead_ids=old_ids,
        inbound_ids=[i for i in _ids(m.id for m in inbound) if i not in set(kept_in_ids)],
        outbound_ids=[i for i in _ids(m.id for m in outbound) if i not in set(kept_out_ids)],
        call_sids=sorted({c.call_sid for c in calls} - kept_sids),
    )
    counts = outcome.deleted
    # The Lookup result says what kind of line the number is: it goes too (a later call looks it up again).
    counts["line_types"] = _delete(session, LineTypeCache, col(LineTypeCache.phone) == phone)

    # What a kept conversation loses now: everything beyond the communications themselves.
    kept_decisions = [col(Decision.lead_id).in_(young)] if young else []
    if kept_in_ids:
        kept_decisions.append(col(Decision.inbound_id).in_(kept_in_ids))
    if kept_decisions:
        result = session.execute(update(Decision).where(or_(*kept_decisions), col(Decision.analysis).is_not(None))
                                 .values(analysis=null()).execution_options(synchronize_session=False))
        counts["decision_analyses_cleared"] += cast("CursorResult[Any]", result).rowcount or 0
    if young:
        counts["webhook_deliveries"] += _delete(session, WebhookDelivery, col(WebhookDelivery.lead_id).in_(young))
        counts["lead_events"] += _delete(session, LeadEvent, col(LeadEvent.lead_id).in_(young))
        counts["lead_links"] += _delete(session, LeadLink, col(LeadLink.lead_id).in_(young))
        counts["link_sessions_revoked"] += _revoke_link_sessions(session, young)
        counts["cases_anonymized"] += _anonymize_cases(session, young)
        # Lead.updated_at is left as it is: clearing details is no activity, the retention clock runs on.
        result = session.execute(update(Lead).where(col(Lead.id).in_(young))
                                 .values(dict.fromkeys(LEAD_DETAILS))
                                 .execution_options(synchronize_session=False))
        counts["lead_details_cleared"] += cast("CursorResult[Any]", result).rowcount or 0
    if kept_out_ids:
        result = session.execute(update(OutboundMessage).where(
            col(OutboundMessage.id).in_(kept_out_ids), col(OutboundMessage.status) == MessageStatus.pending,
            col(OutboundMessage.audience) == Audience.borrower,
        ).values(status=MessageStatus.suppressed, last_error="not sent: number forgotten (privacy forget)")
            .execution_options(synchronize_session=False))
        counts["pending_texts_cancelled"] += cast("CursorResult[Any]", result).rowcount or 0

    kept = outcome.kept
    kept["leads"] = len(young)
    kept["inbound_messages"] = len(kept_in)
    kept["outbound_messages"] = len(kept_out)
    kept["decisions"] = _count(session, Decision, or_(*kept_decisions)) if kept_decisions else 0
    kept["call_events"] = len(kept_calls)
    out_sids = [m.twilio_sid for m in kept_out if m.twilio_sid]
    kept["delivery_events"] = _count(session, DeliveryEvent, col(DeliveryEvent.message_sid).in_(out_sids)) if out_sids else 0
    human_calls = session.exec(select(HumanCall).where(col(HumanCall.lead_id).in_(young))).all() if young else []
    kept["human_calls"] = len(human_calls)
    outcome.last_activity = _latest(
        *(_latest(lead.created_at, lead.updated_at, lead.opener_at) for lead in young_leads),
        *(m.received_at for m in kept_in),
        *(_latest(m.created_at, m.sent_at) for m in kept_out),
        *(c.created_at for c in kept_calls),
        *(c.created_at for c in human_calls),
    )
    optout_where = [col(OptOut.phone) == phone]
    event_where = [col(OptOutEvent.phone) == phone]
    if broker_id is not None:
        optout_where.append(col(OptOut.broker_id) == broker_id)
        event_where.append(col(OptOutEvent.broker_id) == broker_id)
    outcome.opt_outs = _count(session, OptOut, *optout_where) + _count(session, OptOutEvent, *event_where)
    return outcome


def forget(
    engine: Engine,
    phone_e164: str,
    *,
    broker_id: int | None = None,
    cutoff: datetime | None = None,
    dry_run: bool = False,
) -> ForgetOutcome:
    """Forget one number (for one broker, or all): with a `cutoff`, keep the communications of conversations
    active since then and delete the rest (see the module docstring); without one, delete everything but the
    opt-out records. `dry_run` does it all in a transaction that is rolled back: what would happen, exactly.
    Raises InvalidPhone for a number that is not one."""
    phone = to_e164(phone_e164)
    with Session(engine, expire_on_commit=False) as session:
        try:
            outcome = _forget(session, phone, broker_id, cutoff)
        except BaseException:
            session.rollback()
            raise
        if dry_run:
            session.rollback()
        else:
            session.commit()
    if not dry_run:
        log(logger, logging.INFO, "number forgotten", phone=mask(phone), broker_id=broker_id,
            kept_conversations=outcome.kept["leads"], **outcome.deleted)
    return outcome


def forget_number(engine: Engine, phone_e164: str, *, broker_id: int | None = None) -> dict[str, int]:
    """Delete everything stored about one number (for one broker, or all): its leads, its inbound messages and
    the decisions on them, every text to it or about it (alerts naming it), their delivery callbacks, and its
    calls. The opt-out status and history stay. This is the forced forget (no retention period kept); the
    command records it with its reason (service.retention). Raises InvalidPhone for a number that is not one."""
    return forget(engine, phone_e164, broker_id=broker_id).deleted


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
    """Delete conversations whose last activity is more than `days` days old, with their messages, decisions
    and calls; opt-outs stay, and anything still pending is left alone. No policy check here: the commands
    and the worker go through service.retention, which does it."""
    if days < 1:
        msg = "days must be at least 1"
        raise ValueError(msg)
    return purge_before(engine, (now or utcnow()) - timedelta(days=days))


def purge_before(engine: Engine, cutoff: datetime) -> dict[str, int]:
    """Delete conversations with no activity since `cutoff`, and leftovers older than it (see _purge_leftovers)."""
    counts = _zero()
    with Session(engine) as session:
        lead_ids = _stale_lead_ids(session, cutoff)
    for chunk in _chunks(lead_ids):
        for key, value in _purge_leads(engine, chunk, cutoff).items():
            counts[key] += value
    for key, value in _purge_leftovers(engine, cutoff).items():
        counts[key] += value
    log(logger, logging.INFO, "retention purge", cutoff=cutoff.isoformat(), **counts)
    return counts
