"""What a text's sending writes into its lead's history (service.events): an opener's delivery report (the
report counts delivered and failed openers) and a person's text going out (the contact that "reached by a person"
counts). Called by service.sender and the delivery-status webhook (service.twilio.webhooks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlmodel import Session

from service import events
from service.events import EventKind
from service.leads_view import broker_of
from service.models import Lead, OutboundMessage, Purpose

if TYPE_CHECKING:
    from service.context import AppContext


def opener_delivery(ctx: AppContext, session: Session, msg: OutboundMessage, status: str, code: int | None) -> None:
    """An opener's delivery report goes into its lead's history (the report counts delivered and failed openers)."""
    if msg.purpose != Purpose.opener or msg.lead_id is None or status not in {"delivered", "failed", "undelivered"}:
        return
    lead = session.get(Lead, msg.lead_id)
    if lead is None:
        return
    broker = broker_of(session, ctx, lead)  # as loaded, else its row (a broker removed since the text was queued)
    if status == "delivered":
        events.record(session, broker=broker, lead=lead, kind=EventKind.opener_delivered, data={"message_id": msg.id})
    else:
        events.record(session, broker=broker, lead=lead, kind=EventKind.opener_failed,
                      data={"message_id": msg.id, "status": status, "error_code": code})


def human_contact(ctx: AppContext, session: Session, msg: OutboundMessage) -> None:
    """A person's text went out: that is when the borrower was contacted (the report's "reached by a person",
    the CRM's lead.updated). Queued is not enough: a text held for quiet hours may be suppressed by a STOP."""
    if msg.purpose != Purpose.human or msg.lead_id is None:
        return
    lead = session.get(Lead, msg.lead_id)
    if lead is None:
        return
    broker = broker_of(session, ctx, lead)  # as loaded, else its row (a broker removed since the text was queued)
    events.record(session, broker=broker, lead=lead, kind=EventKind.human_contact, actor=msg.author or "unknown",
                  actor_name=msg.author_name, data={"how": "text", "message_id": msg.id}, at=msg.sent_at)
