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
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from service import hours
from service.models import Broker, Lead, LeadCase

if TYPE_CHECKING:
    from service.models import LeadEvent

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


def _a_call(session: Session, broker: Broker, lead: Lead, event: LeadEvent, *, missed: bool) -> None:
    case = latest(session, lead.id or 0)
    if case is not None and is_open(case, event.at):
        if case.human_at is None:
            case.repeat_calls += 1
            case.first_repeat_at = case.first_repeat_at or event.at
        else:
            case.calls_after_contact += 1
        case.last_call_at = max(case.last_call_at, event.at)
        session.add(case)
        return
    if not missed:
        return  # an answered call from a caller with no open case is a call, not a missed-call lead
    session.add(LeadCase(
        broker_id=broker.id or 0, lead_id=lead.id or 0, call_sid=event.data.get("call_sid"), missed_at=event.at,
        last_call_at=event.at, hour_of_week=hour_of_week(event.at, broker.timezone),
        in_hours=None if broker.hours is None else hours.is_open(broker, event.at),
    ))


def apply(session: Session, *, broker: Broker, lead: Lead, event: LeadEvent) -> None:
    """Bring the lead's case up to date with `event` (see the module's rules)."""
    kind, at = event.kind, event.at
    if kind == "missed_call":
        _a_call(session, broker, lead, event, missed=True)
        return
    if kind == "call_answered":
        _a_call(session, broker, lead, event, missed=False)
        return
    if kind not in _UPDATES:
        return
    case = latest(session, lead.id or 0)
    if case is None or at < case.missed_at:
        return
    _UPDATES[kind](case, event)
    session.add(case)


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


_UPDATES = {
    "opener": _opener,
    "reply": _reply,
    "field_captured": _field,
    "handoff": _handoff,
    "human_contact": _contact,
    "outcome": _outcome,
    "opted_out": _opted_out,
}
