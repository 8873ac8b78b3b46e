"""The link in an alert about a lead, `{TEXTBACK_PUBLIC_URL}/l/<token>`: it signs that phone in, on the device
that opens it, to that one lead.

One link per recipient and alert (service.alerts.queue_alert asks `link_for` for each number), 22 random base62
characters (131 bits), stored only as its SHA-256, single use, valid TEXTBACK_LEAD_LINK_HOURS (default 24). A
recipient who is not a user of the lead's broker (an operator outside the brokers file) gets the console's
sign-in page instead, as does an alert with no lead. `redeem` checks a token: unknown, used, expired, a lead
gone, or a phone no longer a user of the lead's broker are all the same "no" to the caller. The text that
carried a link forgets its token once sent (service.one_time); an alert sent again gets a fresh link (`relink`).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, delete, update
from sqlmodel import Session, col, select

from service.access import digest, users_from_brokers
from service.models import Lead, LeadLink, utcnow
from service.one_time import BASE62, LINK_PATH, LINK_TOKEN_CHARS, replace_links
from service.settings import Settings

if TYPE_CHECKING:
    from service.context import AppContext

KEEP_DEAD_LINKS = timedelta(days=7)  # expired links are deleted after this


def console_login_url(settings: Settings) -> str:
    """Where an alert points when it has no lead link to give: the console's sign-in page."""
    return f"{settings.public_url}/console/login"


def new_link_token() -> str:
    return "".join(secrets.choice(BASE62) for _ in range(LINK_TOKEN_CHARS))


def is_link_token(value: str) -> bool:
    return len(value) == LINK_TOKEN_CHARS and all(c in BASE62 for c in value)


def issue(session: Session, ctx: AppContext, *, lead_id: int, phone: str, now: datetime | None = None) -> str:
    """Store a new link to `lead_id` for `phone`; returns its URL (the token appears nowhere else)."""
    now = now or utcnow()
    token = new_link_token()
    session.add(LeadLink(token_hash=digest(token), lead_id=lead_id, phone=phone, created_at=now,
                         expires_at=now + timedelta(hours=ctx.settings.lead_link_hours)))
    return f"{ctx.settings.public_url}{LINK_PATH}{token}"


def may_open(ctx: AppContext, phone: str, broker_id: int) -> bool:
    """Whether `phone` is a user who sees the broker `broker_id`."""
    user = users_from_brokers(ctx.brokers_by_number.values()).get(phone)
    return user is not None and broker_id in user.broker_ids


def link_for(session: Session, ctx: AppContext, *, lead: Lead | None, phone: str) -> str:
    """The link an alert to `phone` carries: a new lead link when there is a lead that phone may open, else the
    console's sign-in page."""
    if lead is None or lead.id is None or not may_open(ctx, phone, lead.broker_id):
        return console_login_url(ctx.settings)
    return issue(session, ctx, lead_id=lead.id, phone=phone)


def relink(session: Session, ctx: AppContext, *, body: str, lead_id: int | None, phone: str) -> str:
    """`body` (an alert being sent again) with a fresh link in place of each one it had (used or not)."""
    lead = session.get(Lead, lead_id) if lead_id is not None else None
    return replace_links(body, lambda: link_for(session, ctx, lead=lead, phone=phone))


def redeem(session: Session, ctx: AppContext, token: str, *, now: datetime | None = None) -> LeadLink | None:
    """Use the link `token` once: its row when it opens its lead now (marked used), None otherwise. Commits."""
    now = now or utcnow()
    if not is_link_token(token):
        return None
    _purge(session, now)
    row = session.exec(select(LeadLink).where(LeadLink.token_hash == digest(token))).first()
    if row is None or row.used_at is not None or row.expires_at <= now:
        session.commit()
        return None
    lead = session.get(Lead, row.lead_id)
    took = cast("CursorResult[Any]", session.execute(
        update(LeadLink).where(col(LeadLink.id) == row.id, col(LeadLink.used_at).is_(None)).values(used_at=now)))
    session.commit()
    if took.rowcount != 1 or lead is None or not may_open(ctx, row.phone, lead.broker_id):
        return None
    return row


def _purge(session: Session, now: datetime) -> None:
    session.execute(delete(LeadLink).where(col(LeadLink.expires_at) < now - KEEP_DEAD_LINKS)
                    .execution_options(synchronize_session=False))
