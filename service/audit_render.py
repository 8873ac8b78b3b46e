"""Writing conversations (service.audit_conversations) as CSV, JSON lines or one standalone HTML file.

CSV and JSON lines: one row per event over audit_conversations.COLUMNS, conversation after conversation, each
in order (`seq` from 1). HTML: a file with no external resources (inline CSS, no script), one section per
conversation with a header (broker, borrower number, first and last event, outcome) and a timeline table
whose times are in the broker's timezone; it wraps long text instead of running off the page and starts each
conversation on a new page when printed. With a Masker every borrower number (fields, and digit runs inside
texts) is masked; the brokers' own numbers stay readable.
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any
from zoneinfo import ZoneInfo

from sqlmodel import Session

from service.audit import Masker, broker_numbers, format_time
from service.audit_conversations import (
    COLUMNS,
    Conversation,
    Filters,
    broker_ids,
    details_json,
    iter_conversations,
)

FORMATS = ("csv", "jsonl", "html")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FREE_TEXT = ("who", "summary", "reason")


def _mask_value(value: Any, masker: Masker) -> Any:
    if isinstance(value, str):
        return masker.text(value)
    if isinstance(value, list):
        return [_mask_value(v, masker) for v in value]
    if isinstance(value, dict):
        return {k: _mask_value(v, masker) for k, v in value.items()}
    return value


def masked(conversations: Iterable[Conversation], masker: Masker | None) -> Iterator[Conversation]:
    """The conversations with borrower numbers masked (in place: each is read once)."""
    for conversation in conversations:
        if masker is not None:
            for event in conversation.events:
                event["phone"] = masker.number(event["phone"])
                for name in _FREE_TEXT:
                    event[name] = masker.text(event[name])
                event["details"] = _mask_value(event["details"], masker)
        yield conversation


def _rows(conversations: Iterable[Conversation]) -> Iterator[dict[str, Any]]:
    for conversation in conversations:
        for event in conversation.events:
            yield {name: format_time(event[name]) if name == "time" else event.get(name) for name in COLUMNS}


def _csv_cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if name == "details":
        return details_json(value)
    text = str(value)
    if name in _FREE_TEXT and text.startswith(_FORMULA_START):
        return "'" + text  # a borrower's "=HYPERLINK(...)" must not run in the examiner's spreadsheet
    return text


def write_csv(conversations: Iterable[Conversation], stream: IO[str]) -> int:
    writer = csv.writer(stream, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    count = 0
    for row in _rows(conversations):
        writer.writerow([_csv_cell(name, row[name]) for name in COLUMNS])
        count += 1
    return count


def write_jsonl(conversations: Iterable[Conversation], stream: IO[str]) -> int:
    count = 0
    for row in _rows(conversations):
        stream.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        count += 1
    return count


# ---------------------------------------------------------------------------------------------------- HTML

_CSS = """
:root { color: #111; background: #fff; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
body { margin: 0; }
main { max-width: 72rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
h2 { font-size: 1.15rem; margin: 0 0 .5rem; }
.meta, .detail { color: #444; }
.conversation { border-top: 2px solid #111; margin-top: 1.5rem; padding-top: .75rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: 0 0 .75rem; }
dt { font-weight: 600; }
dd { margin: 0; overflow-wrap: anywhere; }
table { width: 100%; table-layout: fixed; border-collapse: collapse; }
th, td { text-align: left; vertical-align: top; padding: .3rem .4rem; border-bottom: 1px solid #bbb;
  overflow-wrap: anywhere; word-break: break-word; }
th { background: #eee; }
col.seq { width: 2.5rem; } col.time { width: 9.5rem; } col.kind { width: 8rem; } col.who { width: 9rem; }
col.why { width: 30%; }
.detail { font-size: .8rem; margin-top: .2rem; }
tr.gate_verdict td, tr.text_queued td.why { background: #f5f5f0; }
@media screen and (max-width: 40rem) {
  table, tbody, tr, td { display: block; width: auto; }
  colgroup, thead { display: none; }
  tr { border-bottom: 1px solid #bbb; padding: .3rem 0; }
  td { border: none; padding: .1rem .4rem; }
  td::before { content: attr(data-label) ": "; font-weight: 600; }
}
@page { size: A4; margin: 12mm; }
@media print {
  :root { font-size: 10px; }
  main { max-width: none; padding: 0; }
  .conversation { break-before: page; border-top: none; }
  .conversation:first-of-type { break-before: auto; }
  tr { break-inside: avoid; }
  thead { display: table-header-group; }
}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _local(value: datetime, zone: ZoneInfo) -> str:
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def _details(details: dict[str, Any]) -> str:
    shown = []
    for key, value in details.items():
        if isinstance(value, bool):
            text: Any = "yes" if value else "no"
        else:
            text = ", ".join(map(str, value)) if isinstance(value, list) else value
        shown.append(f"{key}: {text}")
    return f'<div class="detail">{_e("; ".join(shown))}</div>' if shown else ""


def _section(conversation: Conversation, masker: Masker | None) -> str:
    lead, broker, events = conversation.lead, conversation.broker, conversation.events
    zone = ZoneInfo(broker.timezone)
    phone = masker.number(lead.phone) if masker is not None else lead.phone
    first, last = events[0]["time"], events[-1]["time"]
    rows = []
    for event in events:
        rows.append(
            f'<tr class="{_e(event["kind"])}"><td data-label="#">{event["seq"]}</td><td data-label="Time">'
            f'<time datetime="{_e(format_time(event["time"]))}">{_e(_local(event["time"], zone))}</time></td>'
            f'<td data-label="Event">{_e(event["kind"].replace("_", " "))}</td>'
            f'<td data-label="Who">{_e(event["who"])}</td>'
            f'<td data-label="What">{_e(event["summary"])}{_details(event["details"])}</td>'
            f'<td class="why" data-label="Reason">{_e(event["reason"])}</td></tr>'
        )
    return (
        f'<section class="conversation" id="conversation-{lead.id}" aria-labelledby="h-{lead.id}">'
        f'<h2 id="h-{lead.id}">Conversation {lead.id}: {_e(phone)} with {_e(broker.name)}</h2>'
        "<dl>"
        f"<dt>Broker</dt><dd>{_e(broker.name)}, {_e(broker.brokerage)} (NMLS {_e(broker.nmls_id)}), "
        f"{_e(broker.twilio_number)}</dd>"
        f"<dt>Borrower</dt><dd>{_e(phone)}</dd>"
        f"<dt>Dates</dt><dd>{_e(_local(first, zone))} to {_e(_local(last, zone))} ({_e(broker.timezone)})</dd>"
        f"<dt>Outcome</dt><dd>{_e(conversation.outcome)}</dd>"
        f"<dt>Events</dt><dd>{len(events)}</dd>"
        "</dl>"
        '<table><colgroup><col class="seq"><col class="time"><col class="kind"><col class="who"><col class="what">'
        '<col class="why"></colgroup>'
        "<thead><tr><th>#</th><th>Time</th><th>Event</th><th>Who</th><th>What</th><th>Reason</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>\n"
    )


def selection(filters: Filters, masker: Masker | None) -> str:
    """The filters in words, for the page's opening line: "broker +14155550100; since 2026-06-01T00:00:00Z"."""
    parts = [f"broker {n}" for n in filters.brokers]
    parts += [f"phone {masker.number(n) if masker is not None else n}" for n in filters.phones]
    parts += [f"lead {n}" for n in filters.leads]
    parts += [f"{name} {format_time(when)}" for name, when in (("since", filters.since), ("until", filters.until))
              if when is not None]
    return "; ".join(parts) or "everything"


def write_html(conversations: Iterable[Conversation], stream: IO[str], *, title: str, masker: Masker | None,
               now: datetime | None = None, selected: str = "everything") -> int:
    """One standalone page, written a conversation at a time; returns the number of events."""
    made = format_time(now or datetime.now(UTC))
    stream.write(
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{_e(title)}</h1>"
        f'<p class="meta">Exported {_e(made)}; selection: {_e(selected)}. Times are in each broker\'s timezone; "Reason" is why a gate '
        'allowed, held or stopped a text, as recorded when it decided ("not recorded" for texts queued before '
        f"verdicts were kept).{' Borrower numbers are masked.' if masker is not None else ''}</p>\n"
    )
    count = conversations_seen = 0
    for conversation in conversations:
        stream.write(_section(conversation, masker))
        count += len(conversation.events)
        conversations_seen += 1
    if not conversations_seen:
        stream.write('<p class="meta">No conversation matches.</p>')
    stream.write("</main></body></html>\n")
    return count


def export_conversations(engine: Any, stream: IO[str], *, filters: Filters, fmt: str = "csv",
                         mask_phones: bool = False) -> tuple[int, int]:
    """Read, optionally mask, write. Returns (events, conversations) written. Raises UnknownBroker."""
    if fmt not in FORMATS:
        msg = f"unknown format {fmt!r} (one of {', '.join(FORMATS)})"
        raise ValueError(msg)
    masker = Masker(broker_numbers(engine)) if mask_phones else None
    seen = [0]

    def counted(items: Iterable[Conversation]) -> Iterator[Conversation]:
        for item in items:
            seen[0] += 1
            yield item

    with Session(engine) as session:
        broker_ids(session, filters.brokers)  # an unknown broker is an error before anything is written
        conversations = counted(masked(iter_conversations(session, filters), masker))
        if fmt == "csv":
            count = write_csv(conversations, stream)
        elif fmt == "jsonl":
            count = write_jsonl(conversations, stream)
        else:
            count = write_html(conversations, stream, title="Audit trail by conversation", masker=masker,
                               selected=selection(filters, masker))
    return count, seen[0]
