"""Missed-call cases: the one row per missed-call lead that the sufficiency report (service.report) reads.

`apply` is called by service.events.record for every event it writes, in the same transaction, so a case says
exactly what the lead's history says. The rules:
- a missed call starts a case unless the caller has an open one: a case whose last call was under CASE_WINDOW
  ago. A call within it before any human contact (missed, or answered by the broker) is a repeat call; after
  contact it is only counted as a call after contact;
- the first opener, first reply and first handoff after the case began are its own; fields captured and
  handoff reasons accumulate; the first human contact (a user's text, a bridged callback, an answered call, an
  outcome of reached or better) says who reached the borrower and how; the latest outcome stands;
- events on a lead with no case (a borrower who texted without calling) change no case.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import delete
from sqlmodel import Session, col, select

from service import hours
from service.models import Broker, Lead, LeadCase, LeadEvent

CASE_WINDOW = timedelta(days=7)


def hour_of_week(at: datetime, timezone: str) -> int:
    """0 for Monday 00:00-01:00 in `timezone` (DST included: the wall clock at that instant) ... 167 for Sunday 23:00."""
    local = at.astimezone(ZoneInfo(timezone))
    return local.weekday() * 24 + local.hour


def latest(session: Session, lead_id: int) -> LeadCase | None:
    return session.exec(
        select(LeadCase).where(LeadCase.lead_id == lead_id).order_by(col(LeadCase.missed_at).desc()).limit(1)
    ).first()


def is_open(case: LeadCase | None, at: datetime) -> bool:
    return case is not None and at - case.last_call_at < CASE_WINDOW


def step(case: LeadCase | None, event: LeadEvent, broker: Broker) -> LeadCase | None:
    """Apply `event` to the lead's latest case (None: it has none); returns the case it changed or started
    (None when it changes none). The whole rule, without the database: `apply` and `rebuild` share it."""
    kind, at = event.kind, event.at
    if kind in ("missed_call", "call_answered"):
        if case is not None and is_open(case, at):
            if case.human_at is None:
                case.repeat_calls += 1
                case.first_repeat_at = case.first_repeat_at or at
            else:
                case.calls_after_contact += 1
            case.last_call_at = max(case.last_call_at, at)
            return case
        if kind == "call_answered":
            return None  # an answered call from a caller with no open case is a call, not a missed-call lead
        return LeadCase(
            broker_id=event.broker_id, lead_id=event.lead_id, call_sid=event.data.get("call_sid"), missed_at=at,
            last_call_at=at, hour_of_week=hour_of_week(at, broker.timezone),
            in_hours=None if broker.hours is None else hours.is_open(broker, at),
        )
    update = _UPDATES.get(kind)
    if update is None or case is None or at < case.missed_at:
        return None
    update(case, event)
    return case


def apply(session: Session, *, broker: Broker, lead: Lead, event: LeadEvent) -> None:
    """Bring the lead's case up to date with `event` (see the module's rules), in the caller's transaction."""
    if event.kind not in _CALLS and event.kind not in _UPDATES:
        return
    changed = step(latest(session, lead.id or 0), event, broker)
    if changed is not None:
        session.add(changed)


def rebuild(session: Session) -> int:
    """Every case made again from the lead events (a database from before cases existed, or after a change of
    the rule); returns how many. Events are read in order, lead by lead, and folded in memory."""
    brokers = {b.id: b for b in session.exec(select(Broker)) if b.id is not None}
    session.exec(delete(LeadCase))
    made = 0
    current: dict[int, LeadCase] = {}
    query = (select(LeadEvent).where(col(LeadEvent.kind).in_(sorted({*_CALLS, *_UPDATES})))
             .order_by(col(LeadEvent.lead_id), col(LeadEvent.at), col(LeadEvent.id)))
    for event in session.exec(query).yield_per(5000):
        broker = brokers.get(event.broker_id)
        if broker is None:
            continue
        changed = step(current.get(event.lead_id), event, broker)
        if changed is not None and changed is not current.get(event.lead_id):
            session.add(changed)
            current[event.lead_id] = changed
            made += 1
    return made


def _opener(case: LeadCase, event: LeadEvent) -> None:
    if case.opener_message_id is None:
        case.opener_message_id, case.opener_at = event.data.get("message_id"), event.at


def _reply(case: LeadCase, event: LeadEvent) -> None:
    case.first_reply_at = case.first_reply_at or event.at


def _field(case: LeadCase, event: LeadEvent) -> None:
    field = event.data.get("field")
    if isinstance(field, str) and field not in case.fields:
        case.fields = [*case.fields, field]


def _handoff(case: LeadCase, event: LeadEvent) -> None:
    case.handoff_at = case.handoff_at or event.at
    reasons = list(event.data.get("reasons") or [])
    if event.data.get("ready"):
        reasons.append("ready")
    new = [r for r in reasons if isinstance(r, str) and r not in case.handoff_reasons]
    if new:
        case.handoff_reasons = [*case.handoff_reasons, *new]


def _contact(case: LeadCase, event: LeadEvent) -> None:
    if case.human_at is None:
        case.human_at, case.human_by, case.human_how = event.at, event.actor, event.data.get("how")


def _outcome(case: LeadCase, event: LeadEvent) -> None:
    case.outcome, case.outcome_at = event.data.get("outcome"), event.at


def _opted_out(case: LeadCase, event: LeadEvent) -> None:
    case.opted_out_at = case.opted_out_at or event.at


_CALLS = frozenset({"missed_call", "call_answered"})
_UPDATES = {
    "opener": _opener,
    "reply": _reply,
    "field_captured": _field,
    "handoff": _handoff,
    "human_contact": _contact,
    "outcome": _outcome,
    "opted_out": _opted_out,
}
