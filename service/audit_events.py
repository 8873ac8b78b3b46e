"""What each record says in a conversation's history (service.audit_conversations reads the records).

One method per table: the row as an event dict with `time`, `kind`, `who` (borrower, textback, Twilio, or the
person by name and number), `summary` (the text itself, or what happened), `reason` (why: a gate's recorded
verdict, a call's classification, an outcome's note), `record` (table:id, shared by every event of one text)
and `details` (the record's own fields). This is the module that changes when a table gains a field an
examiner should see.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

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
from service.sending.opt_out_policy import same_brokerage

NOT_RECORDED = "not recorded"


def _event(time: datetime, kind: str, who: str, summary: str, reason: str | None, record: str,
           **details: Any) -> dict[str, Any]:
    return {"time": time, "kind": kind, "who": who, "summary": summary, "reason": reason, "record": record,
            "details": {k: v for k, v in details.items() if v is not None}}


class Rows:
    """What each record says in a conversation's history."""

    def __init__(self, brokers: dict[int | None, Broker], scope: str = "brokerage") -> None:
        self.brokers = brokers
        self.scope = scope  # the opt-out scope in force (policies/sending/opt_out.yaml)

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
        """None when the event is not this conversation's; "" when recorded with its broker; else why it applies.

        Decided as the gates decide (service.optout_lock.opt_out_state): by the scope in force now, for every
        opt-out already recorded, old ones included; another broker's carrier block stays on its own number."""
        if event.broker_id == lead.broker_id:
            return ""
        if event.source.startswith("error:"):
            return None
        mine, theirs = self.brokers.get(lead.broker_id), self.brokers.get(event.broker_id)
        if self.scope == "all":
            return f"recorded with {_name(theirs)}; the opt-out scope in force (all) covers every broker"
        if self.scope == "brokerage" and mine is not None and theirs is not None and same_brokerage(mine, theirs):
            return f"recorded with {_name(theirs)}, same brokerage ({mine.brokerage})"
        return None

    def opt_out(self, event: OptOutEvent, lead: Lead, applies: str) -> dict[str, Any]:
        action = "opt_in" if event.action == "opt_in" else "opt_out"
        who = "borrower" if event.source.split(":")[0] in {"keyword", "twilio", "plain_words", "llm"} else "textback"
        words = "opted in" if action == "opt_in" else "opted out"
        return _event(event.created_at, action, who, f"{words} ({event.source})", applies or None,
                      f"opt_out_event:{event.id}", source=event.source, message_sid=event.message_sid,
                      recorded_with=self.brokers[event.broker_id].twilio_number if applies else None,
                      scope=event.scope or "broker")


def _name(broker: Broker | None) -> str:
    return f"{broker.name} ({broker.twilio_number})" if broker else "another broker"


def _iso(value: datetime | None) -> str | None:
    return format_time(value)  # one time format for every export


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
