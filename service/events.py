"""A lead's history: one LeadEvent row per thing that happened, in order, and the CRM webhooks it triggers.

`record` is the one way an event is written. The console and the API show the rows; the outgoing webhooks
(service.crm_webhooks) are queued in the same transaction, so a CRM hears of exactly what was committed; and
the lead's missed-call case (service.cases, what the sufficiency report reads) is brought up to date with it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlmodel import Session

from service import cases, crm_webhooks
from service.models import Broker, Lead, LeadEvent, utcnow


class EventKind(StrEnum):
    missed_call = "missed_call"  # data: call_sid, in_hours (None: the broker has no hours set)
    opener = "opener"  # the opener was queued (data: message_id, template_id)
    opener_delivered = "opener_delivered"  # Twilio reported the opener delivered (data: message_id)
    opener_failed = "opener_failed"  # the opener could not be delivered (data: message_id, status, error_code)
    call_answered = "call_answered"  # the broker answered a call from this lead directly (data: call_sid)
    reply = "reply"  # the borrower texted (data: message_id)
    field_captured = "field_captured"  # data: field, value
    handoff = "handoff"  # data: reasons
    handoff_worked = "handoff_worked"  # a person took the handoff up
    human_text = "human_text"  # a user's own text (data: message_id, override)
    call_started = "call_started"  # click-to-call requested (data: human_call_id)
    human_contact = "human_contact"  # a person reached the borrower (data: how)
    outcome = "outcome"  # data: outcome, note
    bot_stopped = "bot_stopped"  # automated texts stopped and pending ones canceled (data: canceled)
    opted_out = "opted_out"
    opted_in = "opted_in"
    sla_alert = "sla_alert"  # an unworked handoff re-alerted (data: to, level)
    language = "language"  # the borrower's language changed (data: language, previous, message_id)


# Which CRM webhook event each lead event sends (others send none). A missed call that created the lead sends
# lead.created instead of lead.updated.
WEBHOOK_EVENT: dict[str, str] = {
    EventKind.missed_call: "lead.updated",
    EventKind.field_captured: "lead.updated",
    EventKind.handoff: "lead.handoff",
    EventKind.human_contact: "lead.updated",
    EventKind.outcome: "lead.outcome",
    EventKind.opted_out: "lead.updated",
}


def record(
    session: Session, *, broker: Broker, lead: Lead, kind: EventKind, actor: str = "textback",
    actor_name: str | None = None, data: dict[str, Any] | None = None, at: datetime | None = None,
    created: bool = False,
) -> LeadEvent:
    """Write one event for `lead` and queue the CRM webhooks it triggers (`created`: this event made the lead)."""
    if lead.id is None or broker.id is None:
        msg = "record events for saved leads and brokers only"
        raise ValueError(msg)
    event = LeadEvent(lead_id=lead.id, broker_id=broker.id, kind=kind, actor=actor, actor_name=actor_name,
                      data=data or {}, at=at or utcnow())
    session.add(event)
    cases.apply(session, broker=broker, lead=lead, event=event)
    hook = "lead.created" if created else WEBHOOK_EVENT.get(kind)
    if hook is not None and broker.webhooks:
        crm_webhooks.enqueue(session, broker=broker, lead=lead, event=hook, cause=kind, data=event.data,
                             at=event.at)
    return event
