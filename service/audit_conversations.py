"""The audit export by conversation: each lead's full history, in order, for an examiner's questions.

A conversation is a lead (one borrower number with one broker). Its history is every record about it:
calls and voicemails from the number to the broker, inbound texts, reply decisions, each outbound text (queued
with its gate verdict, held, checked again and sent at send time, failed), Twilio's delivery callbacks, what
people did (LeadEvent: handoffs, a person's text, calls, outcomes), alerts to the team about the lead, and the
opt-outs and opt-ins recorded for the number (with this broker, or with another broker of the same brokerage,
or under a scope covering every broker: an opt-out recorded elsewhere that applies here is part of the history).

Selection: `Filters` by broker (Twilio number), borrower phone and lead id; a kind given twice means either,
different kinds must all hold. With a window (since/until), only events inside it are exported and only the
conversations with at least one. Leads are read in batches of BATCH by id, each batch's records in one query
per table, so memory holds one batch, never the whole history.

What each record says (kind, who, summary, reason, details) is service/audit_events.py; rendering (CSV, JSON
lines, HTML) is service/audit_render.py.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, union
from sqlmodel import Session, col, select

from service.audit_events import Rows
from service.models import (
    AlertFailure,
    Audience,
    Broker,
    CallEvent,
    Decision,
    DeliveryEvent,
    HumanCall,
    InboundMessage,
    Lead,
    LeadEvent,
    OptOutEvent,
    OutboundMessage,
)

BATCH = 500

# One row per event. `details` is a JSON object with the record's own fields.
COLUMNS: tuple[str, ...] = (
    "conversation", "seq", "time", "broker", "phone", "kind", "who", "summary", "reason", "record", "details",
)  # fmt: skip

# LeadEvent kinds that repeat a record exported from its own table (the text, the call, the opt-out event).
_REPEATED = frozenset({
    "opener", "opener_delivered", "opener_failed", "reply", "human_text", "opted_out", "opted_in", "missed_call",
    "call_started",  # the click-to-call itself (HumanCall) says who, how it went and how long
})  # fmt: skip

# Which of several events at the same instant comes first (a text's verdict after the text, a delivery after it).
_RANK = {
    "call": 0, "voicemail": 0, "inbound_text": 1, "reply_decision": 2, "opt_out": 3, "opt_in": 3,
    "text_queued": 5, "gate_verdict": 6, "text_sent": 7, "text_failed": 7, "delivery": 8, "alert": 9,
    "alert_failure": 10, "human_call": 4,
}  # fmt: skip
_LEAD_EVENT_RANK = 4


@dataclass(frozen=True)
class Filters:
    """Which conversations (and, with a window, which of their events) to export."""

    brokers: tuple[str, ...] = ()  # Twilio numbers, E.164
    phones: tuple[str, ...] = ()  # borrower numbers, E.164
    leads: tuple[int, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    # Not a filter: the opt-out scope in force, which decides whether another broker's opt-out is part of a
    # conversation (as the gates decide it).
    opt_out_scope: str = "brokerage"

    def within(self, when: datetime) -> bool:
        return (self.since is None or when >= self.since) and (self.until is None or when < self.until)


class UnknownBroker(LookupError):
    """A --broker number that is no broker's Twilio number."""


@dataclass
class Conversation:
    """One lead's exported history; `events` are in order and numbered from 1 (`seq`)."""

    lead: Lead
    broker: Broker
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        lead = self.lead
        if lead.outcome:
            return lead.outcome + (f": {lead.outcome_note}" if lead.outcome_note else "")
        if lead.closed_reason:
            return f"closed: {lead.closed_reason}"
        return f"open ({lead.state})"


def broker_ids(session: Session, numbers: Iterable[str]) -> list[int]:
    """The ids of the brokers with these Twilio numbers; UnknownBroker names any number that is none."""
    wanted = list(dict.fromkeys(numbers))
    if not wanted:
        return []
    found = {b.twilio_number: b.id for b in session.exec(select(Broker).where(col(Broker.twilio_number).in_(wanted)))}
    missing = [n for n in wanted if n not in found]
    if missing:
        known = ", ".join(sorted(b.twilio_number for b in session.exec(select(Broker)))) or "none"
        msg = f"no broker has the Twilio number {', '.join(missing)} (brokers: {known})"
        raise UnknownBroker(msg)
    return [i for i in found.values() if i is not None]


def _active_leads(filters: Filters) -> Any:
    """The ids of leads with a record inside the window (the conversations a windowed export can show)."""
    def window(column: Any) -> list[ColumnElement[bool]]:
        conditions = []
        if filters.since is not None:
            conditions.append(column >= filters.since)
        if filters.until is not None:
            conditions.append(column < filters.until)
        return conditions

    return union(
        select(Lead.id).where(*window(Lead.created_at)),
        select(InboundMessage.lead_id).where(*window(InboundMessage.received_at)),
        select(OutboundMessage.lead_id).where(*window(OutboundMessage.created_at)),
        select(OutboundMessage.lead_id).where(*window(OutboundMessage.sent_at)),
        select(LeadEvent.lead_id).where(*window(LeadEvent.at)),
    )


def iter_conversations(session: Session, filters: Filters) -> Iterator[Conversation]:
    """Every selected conversation, by lead id, with its events in time order."""
    brokers = {b.id: b for b in session.exec(select(Broker))}
    conditions: list[ColumnElement[bool]] = []
    if filters.brokers:
        conditions.append(col(Lead.broker_id).in_(broker_ids(session, filters.brokers)))
    if filters.phones:
        conditions.append(col(Lead.phone).in_(filters.phones))
    if filters.leads:
        conditions.append(col(Lead.id).in_(filters.leads))
    if filters.since is not None or filters.until is not None:
        conditions.append(col(Lead.id).in_(_active_leads(filters)))
    last = 0
    while True:
        batch = list(session.exec(
            select(Lead).where(*conditions, col(Lead.id) > last).order_by(col(Lead.id)).limit(BATCH)
        ))
        if not batch:
            return
        last = batch[-1].id or last
        for conversation in _histories(session, brokers, batch, filters):
            if conversation.events:
                yield conversation
        if len(batch) < BATCH:
            return


def _histories(
    session: Session, brokers: dict[int | None, Broker], leads: Sequence[Lead], filters: Filters
) -> list[Conversation]:
    rows = Rows(brokers, filters.opt_out_scope)
    by_id = {lead.id: Conversation(lead, brokers[lead.broker_id]) for lead in leads}
    ids = list(by_id)
    events: dict[int | None, list[dict[str, Any]]] = defaultdict(list)

    def add(lead_id: int | None, items: Iterable[dict[str, Any]]) -> None:
        events[lead_id].extend(items)

    for (msg,) in session.execute(select(InboundMessage).where(col(InboundMessage.lead_id).in_(ids))):
        add(msg.lead_id, [rows.inbound(msg)])
    for dec, lead_id in session.execute(
        select(Decision, InboundMessage.lead_id)
        .join(InboundMessage, col(Decision.inbound_id) == col(InboundMessage.id))
        .where(col(InboundMessage.lead_id).in_(ids))
    ):
        add(lead_id, [rows.decision(dec)])
    for (msg,) in session.execute(select(OutboundMessage).where(col(OutboundMessage.lead_id).in_(ids))):
        add(msg.lead_id, rows.outbound(msg))
    for delivery, lead_id, message_id in session.execute(
        select(DeliveryEvent, OutboundMessage.lead_id, OutboundMessage.id)
        .join(OutboundMessage, col(OutboundMessage.twilio_sid) == col(DeliveryEvent.message_sid))
        .where(col(OutboundMessage.lead_id).in_(ids), col(OutboundMessage.audience) == Audience.borrower)
    ):
        add(lead_id, [rows.delivery(delivery, message_id)])
    for (event,) in session.execute(select(LeadEvent).where(col(LeadEvent.lead_id).in_(ids))):
        if event.kind not in _REPEATED:
            add(event.lead_id, [rows.lead_event(event)])
    for (call,) in session.execute(select(HumanCall).where(col(HumanCall.lead_id).in_(ids))):
        add(call.lead_id, [rows.human_call(call)])
    for (failure,) in session.execute(select(AlertFailure).where(col(AlertFailure.lead_id).in_(ids))):
        add(failure.lead_id, [rows.alert_failure(failure)])

    by_number: dict[tuple[int, str], list[int | None]] = defaultdict(list)
    by_phone: dict[str, list[Lead]] = defaultdict(list)
    for lead in leads:
        by_number[(lead.broker_id, lead.phone)].append(lead.id)
        by_phone[lead.phone].append(lead)
    phones = list(by_phone)
    for (call,) in session.execute(
        select(CallEvent).where(col(CallEvent.caller).in_(phones), col(CallEvent.broker_id).in_(sorted({lead.broker_id for lead in leads})))
    ):
        for lead_id in by_number.get((call.broker_id, call.caller or ""), []):
            add(lead_id, [rows.call(call)])
    for (event,) in session.execute(select(OptOutEvent).where(col(OptOutEvent.phone).in_(phones))):
        for lead in by_phone[event.phone]:
            applies = rows.opt_out_applies(event, lead)
            if applies is not None:
                add(lead.id, [rows.opt_out(event, lead, applies)])

    out = []
    for lead_id, conversation in by_id.items():
        kept = [e for e in events.get(lead_id, []) if filters.within(e["time"])]
        kept.sort(key=_order)
        for seq, event in enumerate(kept, 1):
            event.update(conversation=lead_id, seq=seq, broker=conversation.broker.twilio_number,
                         phone=conversation.lead.phone)
        conversation.events = kept
        out.append(conversation)
    return out


def _order(event: dict[str, Any]) -> tuple[datetime, int, str, int]:
    """Time, then which kind of event comes first at one instant, then the record (by table, then id)."""
    table, _, number = event["record"].partition(":")
    return event["time"], _RANK.get(event["kind"], _LEAD_EVENT_RANK), table, int(number or 0)


def details_json(details: dict[str, Any]) -> str:
    return json.dumps(details, ensure_ascii=False, separators=(",", ":"), default=str)

