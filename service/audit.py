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
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any

import phonenumbers
from sqlalchemy import Select, and_, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service.audit_rows import Event, EventRows, Source
from service.errors import date_out_of_range
from service.models import Broker

PAGE = 1000

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
    # the language of a text sent (outbound) and of the lead after a reply (decisions): "en" or "es"
    "language",
    "policy_version",
    "guard_allowed",
    "guard_violations",
    "guard_override",
    "author",
    "author_name",
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
TIME_FIELDS = ("time", "sent_at")
FORMATS = ("csv", "jsonl")


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
            parsed: date = date.fromisoformat(value)
        elif re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}.*", value):
            parsed = datetime.fromisoformat(value)
        else:
            raise ValueError(hint)
    except ValueError as exc:
        detail = str(exc)
        raise ValueError(hint if detail == hint else f"{hint}: {detail}") from None
    why = date_out_of_range(text, parsed.year)
    if why:
        raise ValueError(why)
    if not isinstance(parsed, datetime):  # a day (a datetime is a date too)
        start = datetime(parsed.year, parsed.month, parsed.day, tzinfo=UTC)
        return start + timedelta(days=1) if end_of_day else start
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


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
# Reading (what each table contributes is service/audit_rows.py)


def _paged(session: Session, source: Source, since: datetime, until: datetime | None) -> Iterator[Any]:
    """The source's rows with since <= time < until, ordered by (time, id), fetched PAGE at a time."""
    time_col, id_col = (getattr(source.model, name) for name in (source.time_column, "id"))
    last: tuple[datetime, int] | None = None
    while True:
        stmt: Select[Any] = source.query.where(time_col >= since)
        if until is not None:
            stmt = stmt.where(time_col < until)
        if last is not None:
            stmt = stmt.where(or_(time_col > last[0], and_(time_col == last[0], id_col > last[1])))
        rows = session.execute(stmt.order_by(time_col, id_col).limit(PAGE)).all()
        yield from rows
        if len(rows) < PAGE:
            return
        head = rows[-1][0]
        last = (getattr(head, source.time_column), head.id)


def iter_events(engine: Engine, *, since: datetime, until: datetime | None = None) -> Iterator[Event]:
    """Every event with since <= time < until, in time order, as dicts over COLUMNS (unmasked)."""
    with Session(engine) as session:
        rows = EventRows({b.id: b for b in session.exec(select(Broker)).all()})

        def stream(order: int, source: Source) -> Iterator[tuple[datetime, int, int, Event]]:
            for row in _paged(session, source, since, until):
                event = {"event_type": source.kind, **source.build(row)}
                yield event["time"], order, event["record_id"], event

        streams = [stream(order, source) for order, source in enumerate(rows.sources())]
        for _time, _order, _id, event in heapq.merge(*streams, key=lambda item: item[:3]):
            row = dict.fromkeys(COLUMNS)
            row.update(event)
            for name in TIME_FIELDS:
                row[name] = format_time(row[name])
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
    if str(event.get("author") or "").startswith("+"):  # a person's phone (a token is "token:<id>")
        event["author"] = masker.number(event["author"])
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


def write_events(events: Iterable[dict[str, Any]], stream: IO[str], fmt: str) -> int:
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
    stream: IO[str],
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
