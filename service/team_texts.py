"""A text from the broker's team to a textback number (most often a reply to an alert): never relayed to a
caller, and never left unanswered either.

The team member is told, from the number they texted, that texts to it do not reach callers, with the link to
the lead last alerted to their phone (alert_reply_hint), or the console's sign-in page when no alert about a
lead went to them (alert_reply_hint_console). At most one answer per phone and lead per
TEXTBACK_REPLY_HINT_WINDOW_MINUTES, so a team member's auto-reply and our answer cannot keep each other going;
a text from one of textback's own Twilio numbers is never answered (two numbers would answer each other).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from service.alerts import alert_sender_for, pending_ids, queue_alert
from service.logs import log
from service.models import Audience, Broker, Lead, OutboundMessage, Purpose, utcnow
from service.phones import mask

if TYPE_CHECKING:
    from service.context import AppContext

logger = logging.getLogger("textback.flow")

HINT = "alert_reply_hint"
HINT_NO_LEAD = "alert_reply_hint_console"


def last_alerted_lead(session: Session, phone: str) -> Lead | None:
    """The lead of the latest alert sent to `phone` (whichever broker's), if any."""
    lead_id = session.exec(
        select(OutboundMessage.lead_id)
        .where(OutboundMessage.to_phone == phone, OutboundMessage.audience == Audience.broker,
               OutboundMessage.purpose == Purpose.alert, col(OutboundMessage.lead_id).is_not(None))
        .order_by(col(OutboundMessage.id).desc()).limit(1)
    ).first()
    return session.get(Lead, lead_id) if lead_id is not None else None


def _answered_since(session: Session, phone: str, lead_id: int | None, since: datetime) -> bool:
    return session.exec(
        select(OutboundMessage.id)
        .where(OutboundMessage.to_phone == phone, col(OutboundMessage.template_id).in_([HINT, HINT_NO_LEAD]),
               OutboundMessage.lead_id == lead_id, col(OutboundMessage.created_at) >= since)
        .limit(1)
    ).first() is not None


def answer_team_text(session: Session, ctx: AppContext, *, broker: Broker, sender: str, message_sid: str,
                     now: datetime | None = None) -> list[int]:
    """Answer a team member who texted `broker`'s number; returns the ids of texts to send now."""
    now = now or utcnow()
    if sender in ctx.brokers_by_number or sender == ctx.settings.alerts_from:
        log(logger, logging.WARNING, "text from a textback number left unanswered (loop)", message_sid=message_sid,
            sender=mask(sender), broker_id=broker.id)
        return []
    lead = last_alerted_lead(session, sender)
    lead_id = lead.id if lead is not None else None
    window = timedelta(minutes=ctx.settings.reply_hint_window_minutes)
    if window and _answered_since(session, sender, lead_id, now - window):
        log(logger, logging.INFO, "team text stored; answered already in this window", message_sid=message_sid,
            lead_id=lead_id, broker_id=broker.id)
        return []
    about = next((b for b in ctx.brokers_by_number.values() if lead is not None and b.id == lead.broker_id), broker)
    bucket = int(now.timestamp() // window.total_seconds()) if window else message_sid
    msgs = queue_alert(session, ctx, broker=about, lead=lead, template_id=HINT if lead is not None else HINT_NO_LEAD,
                       values={}, numbers=[sender], from_phone=alert_sender_for(session, ctx, broker),
                       dedupe_key=f"team-text:{sender}:{lead_id}:{bucket}")
    log(logger, logging.INFO, "team text answered with the console link", message_sid=message_sid, lead_id=lead_id,
        broker_id=broker.id, answered=bool(msgs))
    return pending_ids(msgs)
