"""The audit export: every text, decision, opt-out and call as one time-ordered stream of rows for examiners.

Each table is read in keyset-paged batches ordered by (time, id) and the streams are merged, so an export of
years of history never holds it all in memory. One row per event; the column set is fixed (COLUMNS), with a
field left empty where it does not apply to that kind of event. With masking on, every borrower number (and
every phone-like digit run inside a text) is replaced by a mask such as +1******0199; the brokers' own numbers
are left as they are.
"""

from __future__ import annotations

import csv
import heapq
import json
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import phonenumbers
from sqlalchemy import and_, inspect, or_
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, select

from service.db import make_engine, normalize_url
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

PAGE = 1000

# Event types, in the order used to break ties between events at the same instant.
EVENT_TYPES = ("call", "inbound_message", "decision", "opt_out_event", "outbound_text", "delivery", "alert_failure")

COLUMNS: tuple[str, ...] = (
    # every event
    "event_type",
    "time",
    "record_id",
    "broker_id",
    "broker_number",
    "lead_id",
    "phone",
    "from",
    "to",
    # outbound texts
    "audience",
    "purpose",
    "template_id",
    "policy_version",
    "guard_allowed",
    "guard_violations",
    "status",
    "twilio_sid",
    "delivery_status",
    "error_code",
    "last_error",
    "sent_at",
    # inbound messages (message_sid also for opt-out and delivery events)
    "message_sid",
    "opt_out_type",
    "body",
    # decisions (action and source also for opt-out events)
    "inbound_id",
    "action",
    "source",
    "rules_fired",
    "rules_version",
    "llm_prompt",
    "llm_prompt_version",
    "llm_model",
    "llm_error",
    # calls
    "call_sid",
    "kind",
    "missed",
    "reason",
    "duration",
)
# Free text that may hold a phone number (masked with --mask-phones) or start like a spreadsheet formula.
TEXT_FIELDS = ("body", "reason", "last_error")
PHONE_FIELDS = ("phone", "from", "to")
FORMATS = ("csv", "jsonl")


class AuditError(Exception):
    """The export cannot run (no database, no tables); the message says why."""


# ---------------------------------------------------------------------------------------------------------
# Dates


def parse_when(text: str, *, end_of_day: bool = False) -> datetime:
    """YYYY-MM-DD (midnight UTC; with end_of_day the following midnight) or a full ISO-8601 date-time.

    A date-time without a zone is taken as UTC. Raises ValueError with a readable message.
    """
    value = (text or "").strip()
    hint = f"{text!r} is not a date (YYYY-MM-DD) or an ISO-8601 date-time (e.g. 2025-03-01T09:30:00Z)"
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end_of_day else start
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}.*", value):
            raise ValueError(hint)
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        detail = str(exc)
        raise ValueError(hint if detail == hint else f"{hint}: {detail}") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def format_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------------------
# Masking

# A run of 7 to 15 digits, optionally with a leading + and the usual separators between them.
_DIGIT_RUN = re.compile(r"(?<![\w+])\+?\(?\d(?:[ ().-]{0,2}\d){6,14}(?!\w)")
_SEPARATED_LOCAL = re.compile(r"\d{3}[ .-]\d{4}")
PHONE_DIGITS = 10


def mask_phone(value: str) -> str:
    """+14155550199 -> +1******0199: the country code and the last four digits only."""
    try:
        parsed = phonenumbers.parse(value, "US")
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is not None and parsed.national_number:
        national = phonenumbers.national_significant_number(parsed)
        return f"+{parsed.country_code}{'*' * max(len(national) - 4, 0)}{national[-4:]}"
    digits = re.sub(r"\D", "", value)
    return "*" * max(len(digits) - 4, 0) + digits[-4:] if digits else value


def _e164(value: str) -> str | None:
    try:
        parsed = phonenumbers.parse(value, "US")
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


class Masker:
    """Masks borrower numbers; the brokers' own (Twilio, forwarding and alert) numbers stay readable."""

    def __init__(self, keep: Iterable[str]) -> None:
        self.keep = {k for k in keep if k}

    def number(self, value: str | None) -> str | None:
        if not value or not any(ch.isdigit() for ch in value):
            return value  # empty, or "anonymous" / "restricted"
        if value in self.keep or _e164(value) in self.keep:
            return value
        return mask_phone(value)

    def text(self, value: str | None) -> str | None:
        if not value:
            return value
        return _DIGIT_RUN.sub(self._run, value)

    def _run(self, match: re.Match[str]) -> str:
        run = match.group()
        digits = re.sub(r"\D", "", run)
        if len(digits) >= PHONE_DIGITS:
            return run if _e164(run) in self.keep else mask_phone(run)
        if _SEPARATED_LOCAL.search(run) or "(" in run:
            return "*" * (len(digits) - 4) + digits[-4:]  # 555-0199, a local number
        return run  # a bare 7-9 digit figure (an NMLS ID, a ZIP+4 ...)


# ---------------------------------------------------------------------------------------------------------
# Reading


def open_database(url: str) -> Engine:
    """An engine on an existing textback database (never creates one: an export reads what is there)."""
    parsed = make_url(normalize_url(url))
    sqlite = parsed.drivername.startswith("sqlite")
    if sqlite and (
        not parsed.database or parsed.database == ":memory:" or not Path(parsed.database).exists()
    ):
        raise AuditError(f"no database at {parsed.database or url!r} (TEXTBACK_DATABASE_URL)")
    engine = make_engine(url)
    try:
        missing = [
            t
            for t in ("outboundmessage", "inboundmessage", "decision", "optoutevent", "callevent")
            if not inspect(engine).has_table(t)
        ]
    except Exception as exc:
        engine.dispose()
        raise AuditError(f"cannot open the database: {type(exc).__name__}") from None
    if missing:
        engine.dispose()
        raise AuditError(
            f"the database has no textback tables ({', '.join(missing)} missing); run textback serve once"
        )
    return engine


def _paged(
    session: Session,
    base: Any,
    time_col: Any,
    id_col: Any,
    since: datetime,
    until: datetime | None,
) -> Iterator[Any]:
    """Rows of `base` with since <= time < until, ordered by (time, id), fetched PAGE at a time."""
    last: tuple[datetime, int] | None = None
    while True:
        stmt = base.where(time_col >= since)
        if until is not None:
            stmt = stmt.where(time_col < until)
        if last is not None:
            stmt = stmt.where(or_(time_col > last[0], and_(time_col == last[0], id_col > last[1])))
        rows = session.execute(stmt.order_by(time_col, id_col).limit(PAGE)).all()
        yield from rows
        if len(rows) < PAGE:
            return
        head = rows[-1][0]
        last = (getattr(head, time_col.key), head.id)


def _guard_fields(result: dict[str, Any] | None) -> tuple[bool | None, list[dict[str, Any]] | None]:
    if not result:
        return None, None
    return result.get("allowed"), list(result.get("violations") or [])


def iter_events(
    engine: Engine, *, since: datetime, until: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Every event with since <= time < until, in time order, as dicts over COLUMNS (unmasked)."""
    with Session(engine) as session:
        brokers = {b.id: b for b in session.exec(select(Broker)).all()}

        def number(broker_id: int | None) -> str | None:
            broker = brokers.get(broker_id) if broker_id is not None else None
            return broker.twilio_number if broker else None

        def outbound(row: Any) -> dict[str, Any]:
            msg, lead_phone = row
            allowed, violations = _guard_fields(msg.guard_result)
            return {
                "time": msg.created_at,
                "record_id": msg.id,
                "broker_id": msg.broker_id,
                "broker_number": number(msg.broker_id),
                "lead_id": msg.lead_id,
                "phone": lead_phone or (msg.to_phone if msg.audience == "borrower" else None),
                "from": msg.from_phone,
                "to": msg.to_phone,
                "audience": msg.audience,
                "purpose": msg.purpose,
                "template_id": msg.template_id,
                "policy_version": msg.policy_version,
                "guard_allowed": allowed,
                "guard_violations": violations,
                "status": msg.status,
                "twilio_sid": msg.twilio_sid,
                "delivery_status": msg.delivery_status,
                "error_code": msg.error_code,
                "last_error": msg.last_error,
                "sent_at": format_time(msg.sent_at),
                "body": msg.body,
            }

        def inbound(row: Any) -> dict[str, Any]:
            (msg,) = row
            return {
                "time": msg.received_at,
                "record_id": msg.id,
                "broker_id": msg.broker_id,
                "broker_number": number(msg.broker_id),
                "lead_id": msg.lead_id,
                "phone": msg.from_phone,
                "from": msg.from_phone,
                "to": number(msg.broker_id),
                "status": msg.status,
                "message_sid": msg.message_sid,
                "opt_out_type": msg.opt_out_type,
                "body": msg.body,
            }

        def decision(row: Any) -> dict[str, Any]:
            dec, from_phone, broker_id = row
            return {
                "time": dec.created_at,
                "record_id": dec.id,
                "broker_id": broker_id,
                "broker_number": number(broker_id),
                "lead_id": dec.lead_id,
                "phone": from_phone,
                "inbound_id": dec.inbound_id,
                "action": dec.action,
                "source": dec.source,
                "rules_fired": list(dec.rules_fired or []),
                "rules_version": dec.rules_version,
                "llm_prompt": dec.llm_prompt,
                "llm_prompt_version": dec.llm_prompt_version,
                "llm_model": dec.llm_model,
                "llm_error": dec.llm_error,
            }

        def opt_out(row: Any) -> dict[str, Any]:
            (event,) = row
            return {
                "time": event.created_at,
                "record_id": event.id,
                "broker_id": event.broker_id,
                "broker_number": number(event.broker_id),
                "phone": event.phone,
                "action": event.action,
                "source": event.source,
                "message_sid": event.message_sid,
            }

        def call(row: Any) -> dict[str, Any]:
            (event,) = row
            return {
                "time": event.created_at,
                "record_id": event.id,
                "broker_id": event.broker_id,
                "broker_number": number(event.broker_id),
                "phone": event.caller,
                "from": event.caller,
                "to": number(event.broker_id),
                "call_sid": event.call_sid,
                "kind": event.kind,
                "status": event.status,
                "missed": event.missed,
                "reason": event.reason,
                "duration": event.duration,
            }

        def delivery(row: Any) -> dict[str, Any]:
            event, to_phone, broker_id, audience = row
            return {
                "time": event.created_at,
                "record_id": event.id,
                "broker_id": broker_id,
                "broker_number": number(broker_id),
                "phone": to_phone if audience == "borrower" else None,
                "to": to_phone,
                "message_sid": event.message_sid,
                "twilio_sid": event.message_sid,
                "delivery_status": event.status,
                "error_code": event.error_code,
            }

        def alert_failure(row: Any) -> dict[str, Any]:
            # An alert to the broker's team that did not get through; `status` says what was done about it.
            failure, lead_phone = row
            return {
                "time": failure.created_at,
                "record_id": failure.id,
                "broker_id": failure.broker_id,
                "broker_number": number(failure.broker_id),
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

        sources: list[tuple[str, Any, Any, Callable[[Any], dict[str, Any]]]] = [
            ("call", select(CallEvent), CallEvent, call),
            ("inbound_message", select(InboundMessage), InboundMessage, inbound),
            (
                "decision",
                select(Decision, InboundMessage.from_phone, InboundMessage.broker_id).outerjoin(
                    InboundMessage, Decision.inbound_id == InboundMessage.id
                ),
                Decision,
                decision,
            ),
            ("opt_out_event", select(OptOutEvent), OptOutEvent, opt_out),
            (
                "outbound_text",
                select(OutboundMessage, Lead.phone).outerjoin(Lead, OutboundMessage.lead_id == Lead.id),
                OutboundMessage,
                outbound,
            ),
            (
                "delivery",
                select(
                    DeliveryEvent,
                    OutboundMessage.to_phone,
                    OutboundMessage.broker_id,
                    OutboundMessage.audience,
                ).outerjoin(OutboundMessage, OutboundMessage.twilio_sid == DeliveryEvent.message_sid),
                DeliveryEvent,
                delivery,
            ),
            (
                "alert_failure",
                select(AlertFailure, Lead.phone).outerjoin(Lead, AlertFailure.lead_id == Lead.id),
                AlertFailure,
                alert_failure,
            ),
        ]

        def stream(
            order: int, kind: str, base: Any, model: Any, build: Callable[[Any], dict[str, Any]]
        ) -> Iterator[tuple[datetime, int, int, dict[str, Any]]]:
            time_col = model.received_at if model is InboundMessage else model.created_at
            for row in _paged(session, base, time_col, model.id, since, until):
                event = {"event_type": kind, **build(row)}
                yield event["time"], order, event["record_id"], event

        streams = [
            stream(i, kind, base, model, build) for i, (kind, base, model, build) in enumerate(sources)
        ]
        for _time, _order, _id, event in heapq.merge(*streams, key=lambda item: item[:3]):
            row = dict.fromkeys(COLUMNS)
            row.update(event)
            row["time"] = format_time(event["time"])
            yield row


def broker_numbers(engine: Engine) -> set[str]:
    """The brokers' own numbers, kept readable when masking (not do_not_text: it may list past clients)."""
    with Session(engine) as session:
        numbers: set[str] = set()
        for broker in session.exec(select(Broker)).all():
            numbers.update([broker.twilio_number, broker.forward_to, *(broker.alert_to or [])])
    return numbers - {""}


def mask_event(event: dict[str, Any], masker: Masker) -> dict[str, Any]:
    for name in PHONE_FIELDS:
        event[name] = masker.number(event[name])
    for name in TEXT_FIELDS:
        event[name] = masker.text(event[name])
    if event.get("guard_violations"):
        event["guard_violations"] = [
            {**v, "match": masker.text(v.get("match"))} for v in event["guard_violations"]
        ]
    return event


# ---------------------------------------------------------------------------------------------------------
# Writing

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = str(value)
    if name in TEXT_FIELDS and text.startswith(_FORMULA_START):
        return "'" + text  # a borrower's "=HYPERLINK(...)" must not run in the examiner's spreadsheet
    return text


def write_events(events: Iterable[dict[str, Any]], stream: TextIO, fmt: str) -> int:
    """Write events as CSV (header = COLUMNS) or JSON lines; returns how many were written."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(stream, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        for event in events:
            writer.writerow([_csv_cell(name, event[name]) for name in COLUMNS])
            count += 1
        return count
    if fmt == "jsonl":
        for event in events:
            stream.write(json.dumps({name: event[name] for name in COLUMNS}, ensure_ascii=False) + "\n")
            count += 1
        return count
    msg = f"unknown format {fmt!r} (one of {', '.join(FORMATS)})"
    raise ValueError(msg)


def export(
    engine: Engine,
    stream: TextIO,
    *,
    since: datetime,
    until: datetime | None = None,
    fmt: str = "csv",
    mask_phones: bool = False,
) -> int:
    """The whole export: read, optionally mask, write. Returns the number of events written."""
    events: Iterable[dict[str, Any]] = iter_events(engine, since=since, until=until)
    if mask_phones:
        masker = Masker(broker_numbers(engine))
        events = (mask_event(event, masker) for event in events)
    return write_events(events, stream, fmt)
