"""What is left of the old webhook module: the lead lookup and the reply alert, until they move to
service/store.py and service/alerts.py (the webhooks are in service/twilio/webhooks.py, the calls in
service/calls.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlmodel import Session, select

from service.db import insert_once
from service.models import Broker, Lead
from service.outbox import queue_alert

if TYPE_CHECKING:
    from service.context import AppContext


def get_or_create_lead(session: Session, broker_id: int, phone: str) -> Lead:
    lead = session.exec(select(Lead).where(Lead.broker_id == broker_id, Lead.phone == phone)).first()
    if lead is not None:
        return lead
    lead = Lead(broker_id=broker_id, phone=phone)
    if not insert_once(session, lead):
        lead = session.exec(select(Lead).where(Lead.broker_id == broker_id, Lead.phone == phone)).one()
    return lead


def alert_reply(session: Session, ctx: AppContext, *, broker: Broker, lead: Lead, text: str, template_id: str = "alert_reply") -> list[int]:
    from service.forwarding import excerpt  # noqa: PLC0415

    msgs = queue_alert(session, ctx, broker=broker, lead=lead, template_id=template_id,
                       values={"caller": lead.phone, "excerpt": excerpt(text)})
    return [m.id for m in msgs if m.id is not None and m.status == "pending"]
