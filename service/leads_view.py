"""How a lead reads from outside: the JSON of the API's lead list and lead page (and of the CRM webhooks' `lead`).

`list_leads` and `lead_detail` are the read side of the API and the console: scoped to the principal's brokers
(a session opened from an alert link sees its one lead), answering 404 alike for a lead that does not exist
and one the principal may not see. Nothing here writes: the time of a lead's last message is read from the
messages, never stored on the lead (see models.Lead).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, func, union_all
from sqlalchemy import select as select_rows
from sqlmodel import Session, col, or_, select

from service import paging
from service.errors import ApiError
from service.models import (
    Audience,
    Broker,
    CallEvent,
    HumanCall,
    InboundMessage,
    Lead,
    LeadEvent,
    LeadState,
    MessageStatus,
    OutboundMessage,
    Purpose,
)
from service.optout_lock import describe
from service.store import opt_out_state, saved_id

if TYPE_CHECKING:
    from service.access import Principal

NEEDS_ATTENTION = "needs_attention"  # the `state` filter for handoffs no person has worked yet
STATE_FILTERS = (*(s.value for s in LeadState), NEEDS_ATTENTION)
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
# Texts that never reached the borrower do not make a lead's conversation newer.
NOT_SENT = (MessageStatus.blocked, MessageStatus.suppressed)
NOT_FOUND = "lead not found"


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


# -- the list -----------------------------------------------------------------------------------------------

def encode_cursor(lead_id: int) -> str:
    """The opaque cursor of the page after lead `lead_id`."""
    return paging.encode_cursor("lead", lead_id)


def decode_cursor(cursor: str) -> int:
    """The lead id a cursor continues after (400 naming `cursor` otherwise)."""
    return paging.decode_cursor("lead", cursor)


def parse_limit(value: str | int | None) -> int:
    """`limit` as given in a query string: an integer from 1 to 200 (default 50)."""
    if value is None or value == "":
        return DEFAULT_LIMIT
    text = str(value).strip()
    if not text.lstrip("-").isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise ApiError(f"limit: must be a whole number from 1 to {MAX_LIMIT}", status_code=400)
    return int(text)


def _check_state(state: str) -> None:
    if state not in STATE_FILTERS:
        raise ApiError(f"state: unknown state {state!r}; one of {', '.join(STATE_FILTERS)}", status_code=400)


def _like(text: str) -> str:
    """`text` as a LIKE pattern matching it anywhere, its own wildcards escaped (with backslash)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def last_message_times(session: Session, lead_ids: list[int]) -> dict[int, datetime]:
    """For each lead, the time of its latest inbound text or text to the borrower (when sent, else queued), in
    one aggregate query."""
    if not lead_ids:
        return {}
    inbound: Select[int | None, datetime] = select_rows(col(InboundMessage.lead_id).label("lead_id"),
                          col(InboundMessage.received_at).label("at")).where(col(InboundMessage.lead_id).in_(lead_ids))
    sent_at = func.coalesce(col(OutboundMessage.sent_at), col(OutboundMessage.created_at))
    outbound: Select[int | None, datetime] = select_rows(
        col(OutboundMessage.lead_id).label("lead_id"), sent_at.label("at")).where(
        col(OutboundMessage.lead_id).in_(lead_ids), col(OutboundMessage.audience) == Audience.borrower,
        col(OutboundMessage.status).not_in(NOT_SENT))
    both = union_all(inbound, outbound).subquery()
    rows = session.execute(select_rows(both.c.lead_id, func.max(both.c.at)).group_by(both.c.lead_id))
    times: dict[int, datetime] = {}
    for lead_id, last in rows:
        if last is not None:
            times[int(lead_id)] = _as_datetime(last)
    return times


def _as_datetime(value: object) -> datetime:
    """A max() over a union comes back as the column type on PostgreSQL and as text on SQLite."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def list_leads(session: Session, ctx: Any, principal: Principal, *, state: str | None = None, q: str | None = None,
               cursor: str | None = None, limit: int = DEFAULT_LIMIT) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the principal's leads, newest first, and the cursor of the next page (None on the last)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(f"limit: must be a whole number from 1 to {MAX_LIMIT}", status_code=400)
    query = select(Lead).where(col(Lead.broker_id).in_(sorted(principal.broker_ids)))
    if principal.lead_id is not None:
        query = query.where(Lead.id == principal.lead_id)
    if state:
        _check_state(state)
        if state == NEEDS_ATTENTION:
            query = query.where(col(Lead.state).in_([LeadState.handoff, LeadState.ready]),
                                col(Lead.handoff_worked_at).is_(None))
        else:
            query = query.where(Lead.state == state)
    if q and q.strip():
        text = q.strip()
        digits = "".join(ch for ch in text if ch.isdigit())
        matches = [func.lower(col(Lead.name)).like(_like(text.lower()), escape="\\")]
        if digits:
            matches.append(col(Lead.phone).like(_like(digits), escape="\\"))
        query = query.where(or_(*matches))
    if cursor:
        query = query.where(col(Lead.id) < decode_cursor(cursor))
    leads = list(session.exec(query.order_by(col(Lead.id).desc()).limit(limit + 1)))
    more = len(leads) > limit
    leads = leads[:limit]
    times = last_message_times(session, [lead.id for lead in leads if lead.id is not None])
    brokers = _brokers(session, ctx, {lead.broker_id for lead in leads})
    items = [lead_summary(lead, brokers[lead.broker_id], last_message_at=times.get(lead.id or 0)) for lead in leads]
    next_cursor = encode_cursor(leads[-1].id) if more and leads[-1].id is not None else None
    return items, next_cursor


def _brokers(session: Session, ctx: Any, ids: set[int]) -> dict[int, Broker]:
    """The brokers by id: from the context's loaded brokers, else the table (a broker since removed)."""
    known = {b.id: b for b in ctx.brokers_by_number.values() if b.id in ids}
    for missing in ids - set(known):
        row = session.get(Broker, missing)
        if row is not None:
            known[missing] = row
    return {k: v for k, v in known.items() if k is not None}


# -- one lead -----------------------------------------------------------------------------------------------

def visible_lead(session: Session, principal: Principal, lead_id: int) -> Lead:
    """The lead, if the principal may see it; 404 otherwise (the same answer as for a lead that does not exist)."""
    lead = session.get(Lead, lead_id)
    if lead is None or not principal.may_see(lead.broker_id, lead.id):
        raise ApiError(NOT_FOUND, status_code=404)
    return lead


def _author(msg: OutboundMessage) -> tuple[str, str, str | None]:
    """(author, author_kind, author_phone) of a text to the borrower."""
    if msg.purpose != Purpose.human:
        return "textback", "textback", None
    phone = msg.author if msg.author and msg.author.startswith("+") else None
    kind = "user" if phone else "token"
    return msg.author_name or msg.author or "a person", kind, phone


def message_json(msg: InboundMessage | OutboundMessage) -> dict[str, Any]:
    """One text of the conversation, as the lead page shows it."""
    if isinstance(msg, InboundMessage):
        return {"id": msg.id, "direction": "in", "body": msg.body, "at": iso(msg.received_at),
                "author": "borrower", "author_kind": "borrower", "author_phone": None, "template_id": None,
                "purpose": None, "status": msg.status, "delivery_status": None, "error": None,
                "guard_override": None, "media": msg.num_media}
    author, kind, phone = _author(msg)
    return {"id": msg.id, "direction": "out", "body": msg.body, "at": iso(msg.sent_at or msg.created_at),
            "author": author, "author_kind": kind, "author_phone": phone, "template_id": msg.template_id,
            "purpose": msg.purpose, "status": msg.status, "delivery_status": msg.delivery_status,
            "error": msg.last_error, "guard_override": msg.guard_override, "media": 0}


def _messages(session: Session, lead: Lead) -> list[dict[str, Any]]:
    """The conversation in time order: the borrower's texts and every text to them (the team's alerts aside)."""
    inbound = session.exec(select(InboundMessage).where(InboundMessage.lead_id == lead.id)).all()
    outbound = session.exec(select(OutboundMessage).where(
        OutboundMessage.lead_id == lead.id, OutboundMessage.audience == Audience.borrower)).all()
    timed: list[tuple[datetime, int, int, InboundMessage | OutboundMessage]] = [
        (m.received_at, 0, m.id or 0, m) for m in inbound]
    timed += [(m.sent_at or m.created_at, 1, m.id or 0, m) for m in outbound]
    return [message_json(m) for *_, m in sorted(timed, key=lambda t: t[:3])]


def _call_events(session: Session, lead: Lead) -> list[CallEvent]:
    """Every event of the calls this caller made to this broker (the screening acceptance carries no caller)."""
    sids = session.exec(select(CallEvent.call_sid).where(
        CallEvent.caller == lead.phone, CallEvent.broker_id == lead.broker_id)).all()
    if not sids:
        return []
    return list(session.exec(select(CallEvent).where(col(CallEvent.call_sid).in_(set(sids)))
                             .order_by(col(CallEvent.created_at), col(CallEvent.id))))


def _calls(events: list[CallEvent], human: list[HumanCall]) -> list[dict[str, Any]]:
    """The borrower's calls in (one item per call, with what happened on it) and the users' calls out, in order."""
    by_sid: dict[str, list[CallEvent]] = defaultdict(list)
    for event in events:
        by_sid[event.call_sid].append(event)
    timed: list[tuple[datetime, dict[str, Any]]] = []
    for call_sid, rows in by_sid.items():
        verdicts = [r for r in rows if r.missed is not None]
        durations = [r.duration for r in rows if r.kind in ("status", "dial-status") and r.duration is not None]
        timed.append((rows[0].created_at, {
            "kind": "borrower_call", "direction": "in", "call_sid": call_sid, "at": iso(rows[0].created_at),
            "missed": verdicts[-1].missed if verdicts else None,
            "reason": verdicts[-1].reason if verdicts else None,
            "duration": max(durations) if durations else None,
            "events": [{"kind": r.kind, "status": r.status, "at": iso(r.created_at)} for r in rows],
        }))
    timed += [(h.created_at, human_call_json(h)) for h in human]
    return [call for _, call in sorted(timed, key=lambda t: t[0])]


def human_call_json(call: HumanCall) -> dict[str, Any]:
    """A click-to-call, as the API answers it and the lead page lists it."""
    return {"kind": "click_to_call", "direction": "out", "id": call.id, "call_sid": call.call_sid,
            "at": iso(call.created_at), "user_name": call.user_name, "user_phone": call.user_phone,
            "status": call.status, "bridged": call.bridged, "duration": call.duration, "error": call.error,
            "ended_at": iso(call.ended_at)}


def _voicemails(events: list[CallEvent]) -> list[dict[str, Any]]:
    """Each voicemail left (calls.voicemail_recorded stores Twilio's https link in `reason`; a hang-up at the beep
    has a why there instead, and a duration under 2 s). The transcript itself is only texted to the team (see
    `alerts`): its status is kept, its words are not."""
    transcriptions = {e.call_sid: e for e in events if e.kind == "transcription"}
    voicemails = []
    for event in events:
        if event.kind != "voicemail":
            continue
        link = event.reason if event.reason and event.reason.startswith("https://") else None
        transcription = transcriptions.get(event.call_sid)
        voicemails.append({"call_sid": event.call_sid, "at": iso(event.created_at), "duration": event.duration,
                           "recording_url": link,
                           "transcription_status": transcription.status if transcription else None,
                           "transcript": None})
    return voicemails


def event_json(event: LeadEvent) -> dict[str, Any]:
    return {"id": event.id, "kind": event.kind, "at": iso(event.at), "actor": event.actor,
            "actor_name": event.actor_name, "data": event.data}


def alert_json(msg: OutboundMessage) -> dict[str, Any]:
    """A text to the team about the lead, and whether it got through."""
    return {"id": msg.id, "to": msg.to_phone, "template_id": msg.template_id, "body": msg.body,
            "status": msg.status, "delivery_status": msg.delivery_status, "error": msg.last_error,
            "at": iso(msg.sent_at or msg.created_at)}


def broker_json(broker: Broker) -> dict[str, Any]:
    return {"id": broker.id, "name": broker.name, "brokerage": broker.brokerage,
            "twilio_number": broker.twilio_number, "timezone": broker.timezone}


def broker_of(session: Session, ctx: Any, lead: Lead) -> Broker:
    """The lead's broker (as loaded, else as stored)."""
    return _brokers(session, ctx, {lead.broker_id})[lead.broker_id]


def lead_detail(session: Session, ctx: Any, principal: Principal, lead_id: int) -> dict[str, Any]:
    """The lead page: the summary, the conversation, the calls and voicemails, the history and the alerts."""
    lead = visible_lead(session, principal, lead_id)
    broker = broker_of(session, ctx, lead)
    last = last_message_times(session, [lead_id]).get(lead_id)
    call_events = _call_events(session, lead)
    human = list(session.exec(select(HumanCall).where(HumanCall.lead_id == lead.id).order_by(col(HumanCall.id))))
    events = session.exec(select(LeadEvent).where(LeadEvent.lead_id == lead.id)
                          .order_by(col(LeadEvent.at), col(LeadEvent.id))).all()
    alerts = session.exec(select(OutboundMessage).where(
        OutboundMessage.lead_id == lead.id, OutboundMessage.audience == Audience.broker)
        .order_by(col(OutboundMessage.id))).all()
    return {
        **lead_summary(lead, broker, last_message_at=last),
        "outcome_note": lead.outcome_note,
        "outcome_at": iso(lead.outcome_at),
        "outcome_by": lead.outcome_by,
        "human_by": lead.human_by,
        "handoff_at": iso(lead.handoff_at),
        "handoff_worked_at": iso(lead.handoff_worked_at),
        "closed_reason": lead.closed_reason,
        "language": lead.language or "en",  # the borrower's, and every text's to them (service.reply_language)
        "broker_info": broker_json(broker),
        "messages": _messages(session, lead),
        "calls": _calls(call_events, human),
        "voicemails": _voicemails(call_events),
        "events": [event_json(e) for e in events],
        "alerts": [alert_json(a) for a in alerts],
        "opt_out": opt_out_json(session, ctx, broker, lead.phone),
    }


def opt_out_json(session: Session, ctx: Any, broker: Broker, phone: str) -> dict[str, Any]:
    """Whether this broker may text the number under the opt-out scope, and why not (service.optout_lock)."""
    scope = ctx.sending_policy.opt_out_scope
    state = opt_out_state(session, saved_id(broker), phone, scope)
    opted_out = state is not None and state.opted_out
    return {"opted_out": opted_out, "scope": scope, "reason": describe(state) if state and opted_out else None}


