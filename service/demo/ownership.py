"""Which leads are the demo seed's, and whether the seed may run on a database at all.

The seed marks everything it sends: every CallSid starts with `CAdemo` and every MessageSid with `SMdemo`
(service.demo.history), which no Twilio SID can (Twilio's are hexadecimal). A lead is the seed's when it has a
call or a text with those SIDs and none without them; any other lead is someone's real lead (or one made with
`textback simulate`), and the seed refuses to mix its history with it.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from sqlalchemy import and_, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from service.demo.history import CALL_MARK, TEXT_MARK
from service.models import Broker, CallEvent, InboundMessage, Lead, LeadEvent
from service.settings import Settings

# The lead events the summary counts.
EVENT_KINDS = ("opener", "reply", "handoff", "opted_out", "human_text", "human_contact", "outcome")


def lead_counts(engine: Engine) -> tuple[int, int]:
    """(the seed's leads, every other lead)."""
    with Session(engine) as session:
        every = set(session.exec(select(Lead.id)).all())
        if not every:
            return 0, 0
        ours = set(_leads_with(session, seed_sids=True))
        theirs = set(_leads_with(session, seed_sids=False))
    mine = (ours - theirs) & every
    return len(mine), len(every - mine)


def seeded_leads(session: Session) -> list[int]:
    """Leads with a call or a text of the seed's (on a database the seed runs on, they are all its own)."""
    return _leads_with(session, seed_sids=True)


def _leads_with(session: Session, *, seed_sids: bool) -> list[int]:
    """Leads with a call or a text whose SID is the seed's (or, with seed_sids=False, is not)."""
    call_mark = col(CallEvent.call_sid).startswith(CALL_MARK)
    text_mark = col(InboundMessage.message_sid).startswith(TEXT_MARK)
    calls = session.exec(
        select(Lead.id).distinct()
        .join(CallEvent, and_(col(CallEvent.broker_id) == col(Lead.broker_id), col(CallEvent.caller) == col(Lead.phone)))
        .where(call_mark if seed_sids else ~call_mark))
    texts = session.exec(select(InboundMessage.lead_id).distinct()
                         .where(col(InboundMessage.lead_id).is_not(None), text_mark if seed_sids else ~text_mark))
    return sorted({i for i in [*calls, *texts] if i is not None})


def last_seeded(session: Session) -> datetime | None:
    """When the previous run's history ends: its last call, or the last event on one of its leads."""
    call = session.exec(select(func.max(CallEvent.created_at)).where(col(CallEvent.call_sid).startswith(CALL_MARK))).one()
    leads = seeded_leads(session)
    event = session.exec(select(func.max(LeadEvent.at)).where(col(LeadEvent.lead_id).in_(leads))).one() if leads else None
    moments = [m for m in (call, event) if m is not None]
    return max(moments) if moments else None


def tally(engine: Engine) -> tuple[int, Counter[str]]:
    """The seed's leads, and their events of the kinds the summary counts."""
    with Session(engine) as session:
        leads = seeded_leads(session)
        rows = session.exec(select(LeadEvent.kind, func.count()).where(col(LeadEvent.lead_id).in_(leads))
                            .group_by(col(LeadEvent.kind))).all() if leads else []
    return len(leads), Counter({kind: n for kind, n in rows if kind in EVENT_KINDS})


def refusal(settings: Settings, *, other_leads: int, brokers: list[Broker]) -> str | None:
    """Why the seed must not run here, or None."""
    if not settings.dry_run:
        return ("Twilio credentials are configured (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN): the demo would "
                "text real people. Run it without them (dry-run).")
    hooked = sorted(b.name for b in brokers if b.webhooks)
    if hooked:
        return (f"the brokers file sends CRM webhooks ({', '.join(hooked)}): the CRM would receive the demo "
                "leads. Seed with a brokers file without `webhooks:`.")
    if other_leads:
        return (f"the database holds {other_leads} lead{'s' if other_leads != 1 else ''} the demo seed did not "
                "create; it only fills an empty database, or one it seeded itself. Point TEXTBACK_DATABASE_URL "
                "at a new database to try the demo.")
    return None
