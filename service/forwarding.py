"""Borrower texts forwarded to the broker's alert numbers: once per inbound message, rate-limited per lead.

A text on a lead that a person is about to work (handed off, ready), that is closed, or that never got an
opener goes to the broker rather than to the bot. A burst must not become a burst of SMS alerts, so:

- At most one forward per lead per `forward_window_seconds`. The first text of a quiet lead goes at once and
  opens a window; a text inside the window is held for one follow-up alert ("N more texts since the last
  alert. Latest: ...") queued for the end of the window. Later texts in that window update the follow-up
  (while it is still pending and not yet due) instead of adding alerts; the follow-up itself takes the next
  window, so the broker never gets more than one forward alert per window.
- A text that carries a reason for a person the lead did not have yet is not forwarded here: the
  conversation alerts the broker at once with the reasons (`conversation._handoff`) and calls
  `note_forwarded`, so it still counts toward the window.
- One alert per inbound MessageSid: the alert's dedupe key is the MessageSid (a redelivered webhook is
  already dropped when the inbound row is inserted, and `conversation.handle_reply` refuses to act twice on
  one reply), so a second processing neither doubles an alert nor counts a text twice.

The follow-up is an ordinary pending alert whose `next_attempt_at` is the end of the window: the sender sends
it then, like any due row. Its body is rewritten in place while it is pending and not due; a compare-and-set
on `status = 'pending'` means a row the sender already claimed is never changed under it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import update
from sqlmodel import Session, col, select

from service import alerts
from service.alerts import FOLLOW_UP_TEMPLATE
from service.models import Broker, InboundMessage, Lead, MessageStatus, OutboundMessage, utcnow

if TYPE_CHECKING:
    from service.context import AppContext


class Forwarded(NamedTuple):
    """What became of one text: the Decision's action, the alerts to send now, and every alert queued."""

    action: str
    send_ids: list[int]
    queued: list[OutboundMessage]


def _window(ctx: AppContext) -> timedelta:
    return timedelta(seconds=ctx.settings.forward_window_seconds)


def note_forwarded(ctx: AppContext, lead: Lead, now: datetime | None = None) -> None:
    """An alert about one of this lead's texts went out now (outside `forward_text`): it opens a window."""
    now = now or utcnow()
    opens = now + _window(ctx)
    if lead.forward_next_at is None or lead.forward_next_at < opens:
        lead.forward_next_at = opens


def _pending_follow_up(session: Session, lead: Lead, now: datetime) -> list[OutboundMessage]:
    """This lead's follow-up rows still waiting for their window to end (not due, so not claimable yet)."""
    return list(session.exec(
        select(OutboundMessage).where(
            OutboundMessage.lead_id == lead.id, OutboundMessage.template_id == FOLLOW_UP_TEMPLATE,
            OutboundMessage.status == MessageStatus.pending, OutboundMessage.next_attempt_at > now,
        )
    ).all())


def _add_to_follow_up(session: Session, ctx: AppContext, broker: Broker, lead: Lead, inbound: InboundMessage,
                      rows: list[OutboundMessage]) -> bool:
    count = (lead.forward_pending or 0) + 1
    changed = 0
    for row in rows:  # one per recipient, each with its own link
        body = alerts.follow_up_body(ctx, broker, lead, count, inbound.body, was=row.body)
        changed += session.exec(
            update(OutboundMessage)
            .where(col(OutboundMessage.id) == row.id, col(OutboundMessage.status) == MessageStatus.pending)
            .values(body=body)
            .execution_options(synchronize_session=False)
        ).rowcount
    if changed != len(rows):
        return False  # the sender has one of them already: this text starts the next follow-up
    lead.forward_pending = count
    return True


def forward_text(session: Session, ctx: AppContext, *, broker: Broker, lead: Lead, inbound: InboundMessage,
                 template_id: str) -> Forwarded:
    """Forward one inbound text to the broker, or fold it into the lead's follow-up alert.

    Returns the action for the Decision ("forwarded" or "forward_coalesced"), the ids of alerts to send now (a
    follow-up is not due until its window ends; the sender's sweep sends it then) and the alerts queued."""
    now = utcnow()
    window = _window(ctx)
    pending = _pending_follow_up(session, lead, now) if window else []
    if pending and _add_to_follow_up(session, ctx, broker, lead, inbound, pending):
        session.add(lead)
        return Forwarded("forward_coalesced", [], [])
    opens = lead.forward_next_at
    if not window or opens is None or now >= opens:
        lead.forward_next_at = now + window
        session.add(lead)
        msgs = alerts.alert_forward(session, ctx, broker=broker, lead=lead, text=inbound.body,
                                    message_sid=inbound.message_sid, template_id=template_id)
        return Forwarded("forwarded", alerts.pending_ids(msgs), msgs)
    # Inside the window: one follow-up at its end, which then holds the next window.
    lead.forward_pending = 1
    lead.forward_next_at = opens + window
    session.add(lead)
    msgs = alerts.alert_follow_up(session, ctx, broker=broker, lead=lead, text=inbound.body,
                                  message_sid=inbound.message_sid, due=opens)
    return Forwarded("forward_coalesced", [], msgs)
