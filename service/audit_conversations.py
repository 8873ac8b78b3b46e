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

Rendering (CSV, JSON lines, HTML) is service/audit_render.py.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, union
from sqlmodel import Session, col, select

from service.audit import format_time
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
    MessageStatus,
    OptOutEvent,
    OutboundMessage,
)

BATCH = 500
NOT_RECORDED = "not recorded"

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
    rows = Rows(brokers)
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


def _event(time: datetime, kind: str, who: str, summary: str, reason: str | None, record: str,
           **details: Any) -> dict[str, Any]:
    return {"time": time, "kind": kind, "who": who, "summary": summary, "reason": reason, "record": record,
            "details": {k: v for k, v in details.items() if v is not None}}


class Rows:
    """What each record says in a conversation's history."""

    def __init__(self, brokers: dict[int | None, Broker]) -> None:
        self.brokers = brokers

    def inbound(self, msg: InboundMessage) -> dict[str, Any]:
        reason = f"opt-out keyword ({msg.opt_out_type})" if msg.opt_out_type else None
        return _event(msg.received_at, "inbound_text", "borrower", msg.body, reason, f"inbound:{msg.id}",
                      message_sid=msg.message_sid, media=msg.num_media or None)

    def decision(self, dec: Decision) -> dict[str, Any]:
        rules = ", ".join(dec.rules_fired or []) or "none"
        if dec.llm_model:
            llm = f"LLM {dec.llm_model}" + (f" (error: {dec.llm_error})" if dec.llm_error else "")
        else:
            llm = "LLM not used" + (f" ({dec.llm_skipped})" if dec.llm_skipped else "")
        return _event(dec.created_at, "reply_decision", "textback", f"{dec.action}; rules fired: {rules}; {llm}",
                      None, f"decision:{dec.id}", action=dec.action, source=dec.source,
                      rules_fired=list(dec.rules_fired or []), rules_version=dec.rules_version,
                      llm_prompt=dec.llm_prompt, llm_prompt_version=dec.llm_prompt_version,
                      language=dec.language, inbound_id=dec.inbound_id)

    def outbound(self, msg: OutboundMessage) -> list[dict[str, Any]]:
        record = f"outbound:{msg.id}"
        if msg.audience != Audience.borrower:
            return [_event(msg.created_at, "alert", "textback", msg.body, None, record, to=msg.to_phone,
                           template_id=msg.template_id, status=msg.status)]
        who = f"{msg.author_name} ({msg.author})" if msg.author_name else (msg.author or "textback")
        entries = list(msg.verdicts or [])
        queued = next((v for v in entries if v.get("stage") == "queue"), None)
        guard = msg.guard_result or {}
        out = [_event(
            msg.created_at, "text_queued", who, msg.body, queued["reason"] if queued else NOT_RECORDED, record,
            purpose=msg.purpose, template_id=msg.template_id, language=msg.language,
            verdict=queued["verdict"] if queued else None, cause=queued.get("cause") if queued else None,
            until=queued.get("until") if queued else None,
            policy_version=(queued or {}).get("policy_version") or msg.policy_version,
            guard_allowed=guard.get("allowed"), guard_violations=[v.get("rule") for v in guard.get("violations", [])]
            or None, guard_override=msg.guard_override or None,
        )]
        for entry in entries:
            if entry is queued:
                continue
            at = _parse(entry.get("at")) or msg.created_at
            until = f" until {entry['until']}" if entry.get("until") else ""
            said = ("withdrawn before sending" if entry.get("stage") == "waiting"
                    else f"{entry.get('stage')}-time check: {entry.get('verdict')}{until}")
            out.append(_event(at, "gate_verdict", "textback", said, entry.get("reason"), record,
                              stage=entry.get("stage"), verdict=entry.get("verdict"), cause=entry.get("cause"),
                              until=entry.get("until"), policy_version=entry.get("policy_version")))
        if msg.sent_at is not None and msg.status in {MessageStatus.sent, MessageStatus.dry_run}:
            said = f"sent ({msg.twilio_sid})" if msg.twilio_sid else "printed (dry run: not sent)"
            out.append(_event(msg.sent_at, "text_sent", "textback", said, None, record,
                              twilio_sid=msg.twilio_sid, attempts=msg.attempts))
        if msg.status == MessageStatus.failed:
            out.append(_event(msg.claimed_at or msg.created_at, "text_failed", "textback",
                              f"send failed after {msg.attempts} attempt(s)", msg.last_error, record,
                              error_code=msg.error_code))
        stopped = any(v.get("verdict") in {"suppress", "block"} for v in entries)
        if not stopped and msg.status in {MessageStatus.suppressed, MessageStatus.blocked}:
            # Not sent, and no verdict says when (an older row, or an opt-out withdrawing waiting texts): the
            # outcome as the row has it.
            out[0]["details"]["status"] = msg.status
            out[0]["details"]["last_error"] = msg.last_error
        return out

    def delivery(self, event: DeliveryEvent, message_id: int | None) -> dict[str, Any]:
        code = f" (error {event.error_code})" if event.error_code else ""
        return _event(event.created_at, "delivery", "Twilio", f"{event.status}{code}", None,
                      f"outbound:{message_id}", message_sid=event.message_sid, status=event.status,
                      error_code=event.error_code)

    def lead_event(self, event: LeadEvent) -> dict[str, Any]:
        data = dict(event.data or {})
        who = f"{event.actor_name} ({event.actor})" if event.actor_name else event.actor
        summaries: dict[str, Callable[[], str]] = {
            "handoff": lambda: "handed to the broker: " + ", ".join(data.get("reasons") or []),
            "handoff_worked": lambda: "a person took the handoff up",
            "field_captured": lambda: f"{data.get('field')}: {data.get('value')}",
            "human_contact": lambda: f"a person reached the borrower ({data.get('how')})",
            "outcome": lambda: f"outcome: {data.get('outcome')}",
            "bot_stopped": lambda: f"automated texts stopped ({data.get('canceled', 0)} pending canceled)",
            "call_answered": lambda: "the broker answered a call from the borrower",
            "sla_alert": lambda: f"unworked handoff re-alerted (level {data.get('level')})",
            "language": lambda: f"language: {data.get('previous')} -> {data.get('language')}",
        }
        summary = summaries.get(event.kind, lambda: event.kind.replace("_", " "))()
        reason = data.get("note") if event.kind == "outcome" else None
        return _event(event.at, event.kind, who, summary, reason, f"lead_event:{event.id}", **data)

    def human_call(self, call: HumanCall) -> dict[str, Any]:
        who = f"{call.user_name} ({call.user_phone})" if call.user_name else call.user_phone
        took = f", {call.duration} s" if call.duration else ""
        return _event(call.created_at, "human_call", who,
                      f"click-to-call: {call.status}{', bridged' if call.bridged else ''}{took}", call.error,
                      f"human_call:{call.id}", call_sid=call.call_sid, ended_at=_iso(call.ended_at))

    def alert_failure(self, failure: AlertFailure) -> dict[str, Any]:
        return _event(failure.created_at, "alert_failure", "textback",
                      f"alert {failure.template_id} to {failure.to_phone} failed: {failure.error}", failure.action,
                      f"alert_failure:{failure.id}", message_id=failure.message_id, error_code=failure.error_code)

    def call(self, call: CallEvent) -> dict[str, Any]:
        summary = {
            "voice": f"incoming call ({call.status or 'ringing'})",
            "dial-status": f"forwarded to the broker: {call.status}" + (" (missed)" if call.missed else ""),
            "status": f"call ended: {call.status}" + (f", {call.duration} s" if call.duration else ""),
            "screen-accept": "the broker accepted the screened call",
            "voicemail": "voicemail" + (f" ({call.duration} s)" if call.duration is not None else ""),
            "transcription": f"voicemail transcription: {call.status}",
        }.get(call.kind, f"{call.kind}: {call.status}")
        kind = "voicemail" if call.kind in {"voicemail", "transcription"} else "call"
        # A voicemail's `reason` is its recording link (or why no alert); a transcription's, the recording SID.
        reason, recording = call.reason, None
        if call.kind == "voicemail" and not (reason or "").startswith("hang-up"):
            reason, recording = None, call.reason
        return _event(call.created_at, kind, "borrower", summary, reason, f"call:{call.id}",
                      call_sid=call.call_sid, call_kind=call.kind, status=call.status, missed=call.missed,
                      duration=call.duration, recording=recording)

    def opt_out_applies(self, event: OptOutEvent, lead: Lead) -> str | None:
        """None when the event is not this conversation's; "" when recorded with its broker; else why it applies."""
        if event.broker_id == lead.broker_id:
            return ""
        scope = getattr(event, "scope", None)  # the opt-out scope, on rows that record one
        mine, theirs = self.brokers.get(lead.broker_id), self.brokers.get(event.broker_id)
        if scope not in (None, "broker", "brokerage"):
            return f"recorded with {_name(theirs)}; its scope ({scope}) covers this broker"
        if scope != "broker" and mine is not None and theirs is not None and mine.brokerage == theirs.brokerage:
            return f"recorded with {_name(theirs)}, same brokerage ({mine.brokerage})"
        return None

    def opt_out(self, event: OptOutEvent, lead: Lead, applies: str) -> dict[str, Any]:
        action = "opt_in" if event.action == "opt_in" else "opt_out"
        who = "borrower" if event.source.split(":")[0] in {"keyword", "twilio", "plain_words", "llm"} else "textback"
        words = "opted in" if action == "opt_in" else "opted out"
        return _event(event.created_at, action, who, f"{words} ({event.source})", applies or None,
                      f"opt_out_event:{event.id}", source=event.source, message_sid=event.message_sid,
                      recorded_with=self.brokers[event.broker_id].twilio_number if applies else None,
                      scope=getattr(event, "scope", None))


def _name(broker: Broker | None) -> str:
    return f"{broker.name} ({broker.twilio_number})" if broker else "another broker"


def _iso(value: datetime | None) -> str | None:
    return format_time(value)  # one time format for every export


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def details_json(details: dict[str, Any]) -> str:
    return json.dumps(details, ensure_ascii=False, separators=(",", ":"), default=str)

