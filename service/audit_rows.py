"""What each stored record says in the audit export: one query per table, and its rows as event dicts.

An event's keys are names from service.audit.COLUMNS (a key left out is an empty field). The streaming
around this (keyset paging, the time-ordered merge, masking, CSV and JSON lines) is service/audit.py; this
module is the part that changes when a table gains a field an examiner should see.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import SQLModel, col, select
from sqlmodel.sql.expression import Select, SelectOfScalar

from service.models import (
    AlertFailure,
    Broker,
    CallEvent,
    Decision,
    DeliveryEvent,
    InboundMessage,
    Lead,
    OptOutEvent,
    OutboundMessage,
)

Event = dict[str, Any]


@dataclass(frozen=True)
class Source:
    """One table's events: the query (the table's model first), its time column, and the row -> event mapping."""

    kind: str
    query: Select[*tuple[Any, ...]] | SelectOfScalar[Any]
    model: type[SQLModel]
    time_column: str
    build: Callable[[Sequence[Any]], Event]


def _guard_fields(result: dict[str, Any] | None) -> tuple[bool | None, list[dict[str, Any]] | None]:
    if not result:
        return None, None
    return result.get("allowed"), list(result.get("violations") or [])


class EventRows:
    """Maps rows to events; `brokers` turns a broker id into the broker's Twilio number."""

    def __init__(self, brokers: dict[int | None, Broker]) -> None:
        self.brokers = brokers

    def number(self, broker_id: int | None) -> str | None:
        broker = self.brokers.get(broker_id) if broker_id is not None else None
        return broker.twilio_number if broker else None

    def sources(self) -> list[Source]:
        """Every table in the export, in the order that breaks ties between events at the same instant."""
        return [
            Source("call", select(CallEvent), CallEvent, "created_at", self.call),
            Source("inbound_message", select(InboundMessage), InboundMessage, "received_at", self.inbound),
            Source(
                "decision",
                select(Decision, InboundMessage.from_phone, InboundMessage.broker_id).outerjoin(
                    InboundMessage, col(Decision.inbound_id) == col(InboundMessage.id)
                ),
                Decision,
                "created_at",
                self.decision,
            ),
            Source("opt_out_event", select(OptOutEvent), OptOutEvent, "created_at", self.opt_out),
            Source(
                "outbound_text",
                select(OutboundMessage, Lead.phone).outerjoin(
                    Lead, col(OutboundMessage.lead_id) == col(Lead.id)
                ),
                OutboundMessage,
                "created_at",
                self.outbound,
            ),
            Source(
                "delivery",
                select(
                    DeliveryEvent,
                    OutboundMessage.to_phone,
                    OutboundMessage.broker_id,
                    OutboundMessage.audience,
                ).outerjoin(
                    OutboundMessage, col(OutboundMessage.twilio_sid) == col(DeliveryEvent.message_sid)
                ),
                DeliveryEvent,
                "created_at",
                self.delivery,
            ),
            Source(
                "alert_failure",
                select(AlertFailure, Lead.phone).outerjoin(Lead, col(AlertFailure.lead_id) == col(Lead.id)),
                AlertFailure,
                "created_at",
                self.alert_failure,
            ),
        ]

    def outbound(self, row: Sequence[Any]) -> Event:
        msg, lead_phone = row
        allowed, violations = _guard_fields(msg.guard_result)
        return {
            "time": msg.created_at,
            "record_id": msg.id,
            "broker_id": msg.broker_id,
            "broker_number": self.number(msg.broker_id),
            "lead_id": msg.lead_id,
            "phone": lead_phone or (msg.to_phone if msg.audience == "borrower" else None),
            "from": msg.from_phone,
            "to": msg.to_phone,
            "audience": msg.audience,
            "purpose": msg.purpose,
            "template_id": msg.template_id,
            # Borrower texts from before the column were English; an alert has no borrower language.
            "language": msg.language or ("en" if msg.audience == "borrower" else None),
            "policy_version": msg.policy_version,
            "guard_allowed": allowed,
            "guard_violations": violations,
            "guard_override": msg.guard_override,
            "author": msg.author,
            "author_name": msg.author_name,
            "status": msg.status,
            "twilio_sid": msg.twilio_sid,
            "delivery_status": msg.delivery_status,
            "error_code": msg.error_code,
            "last_error": msg.last_error,
            "sent_at": msg.sent_at,
            "body": msg.body,
        }

    def inbound(self, row: Sequence[Any]) -> Event:
        (msg,) = row
        return {
            "time": msg.received_at,
            "record_id": msg.id,
            "broker_id": msg.broker_id,
            "broker_number": self.number(msg.broker_id),
            "lead_id": msg.lead_id,
            "phone": msg.from_phone,
            "from": msg.from_phone,
            "to": self.number(msg.broker_id),
            "status": msg.status,
            "message_sid": msg.message_sid,
            "opt_out_type": msg.opt_out_type,
            "body": msg.body,
        }

    def decision(self, row: Sequence[Any]) -> Event:
        dec, from_phone, broker_id = row
        return {
            "time": dec.created_at,
            "record_id": dec.id,
            "broker_id": broker_id,
            "broker_number": self.number(broker_id),
            "lead_id": dec.lead_id,
            "phone": from_phone,
            "inbound_id": dec.inbound_id,
            "action": dec.action,
            "language": dec.language or "en",  # the lead's language once the reply was read
            "source": dec.source,
            "rules_fired": list(dec.rules_fired or []),
            "rules_version": dec.rules_version,
            "llm_prompt": dec.llm_prompt,
            "llm_prompt_version": dec.llm_prompt_version,
            "llm_model": dec.llm_model,
            "llm_error": dec.llm_error,
        }

    def opt_out(self, row: Sequence[Any]) -> Event:
        (event,) = row
        return {
            "time": event.created_at,
            "record_id": event.id,
            "broker_id": event.broker_id,
            "broker_number": self.number(event.broker_id),
            "phone": event.phone,
            "action": event.action,
            "source": event.source,
            "message_sid": event.message_sid,
            "reason": f"{event.scope or 'broker'} scope",  # the opt-out scope in force (NULL: before scopes, broker)
        }

    def call(self, row: Sequence[Any]) -> Event:
        (event,) = row
        return {
            "time": event.created_at,
            "record_id": event.id,
            "broker_id": event.broker_id,
            "broker_number": self.number(event.broker_id),
            "phone": event.caller,
            "from": event.caller,
            "to": self.number(event.broker_id),
            "call_sid": event.call_sid,
            "kind": event.kind,
            "status": event.status,
            "missed": event.missed,
            "reason": event.reason,
            "duration": event.duration,
        }

    def delivery(self, row: Sequence[Any]) -> Event:
        event, to_phone, broker_id, audience = row
        return {
            "time": event.created_at,
            "record_id": event.id,
            "broker_id": broker_id,
            "broker_number": self.number(broker_id),
            "phone": to_phone if audience == "borrower" else None,
            "to": to_phone,
            "message_sid": event.message_sid,
            "twilio_sid": event.message_sid,
            "delivery_status": event.status,
            "error_code": event.error_code,
        }

    def alert_failure(self, row: Sequence[Any]) -> Event:
        # An alert to the broker's team that did not get through; `status` says what was done about it.
        failure, lead_phone = row
        return {
            "time": failure.created_at,
            "record_id": failure.id,
            "broker_id": failure.broker_id,
            "broker_number": self.number(failure.broker_id),
            "lead_id": failure.lead_id,
            "phone": lead_phone,
            "from": failure.from_phone,
            "to": failure.to_phone,
            "audience": "broker",
            "template_id": failure.template_id,
            "status": failure.action,
            "error_code": failure.error_code,
            "last_error": failure.error,
        }
