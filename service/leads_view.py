"""How a lead reads from outside: the JSON of the API's lead list (and of the CRM webhooks' `lead`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.models import Broker, Lead, LeadState


def iso(value: datetime | None) -> str | None:
    """UTC ISO-8601 with a Z, or None."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def needs_attention(lead: Lead) -> bool:
    """A handoff no person has worked yet (a lead taken over by a person never needs the bot's alert again)."""
    return lead.state in (LeadState.handoff, LeadState.ready) and lead.handoff_worked_at is None


def lead_summary(lead: Lead, broker: Broker, *, last_message_at: datetime | None = None) -> dict[str, Any]:
    """The list item: who called which broker, what the bot captured, and whether a person must act."""
    return {
        "id": lead.id,
        "broker": broker.twilio_number,
        "phone": lead.phone,
        "name": lead.name,
        "state": lead.state,
        "loan_type": lead.loan_type,
        "timeline": lead.timeline,
        "applied_elsewhere": lead.applied_elsewhere,
        "callback_window": lead.callback_window,
        "handoff_reasons": list(lead.handoff_reasons or []),
        "missed_call_at": iso(lead.missed_call_at),
        "last_message_at": iso(last_message_at),
        "needs_attention": needs_attention(lead),
        "human_at": iso(lead.human_at),
        "outcome": lead.outcome,
        "created_at": iso(lead.created_at),
        "updated_at": iso(lead.updated_at),
    }
