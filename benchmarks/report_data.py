"""Realistic missed-call histories for the report benchmark (bench_report.py) and its test, written straight
into the tables the way the service would have left them, in bulk (Core executemany on SQLite, COPY on
PostgreSQL): 100,000 leads (1.3 M rows) in ~30 s on the shared 2-core box, where the webhooks would take an hour.

Per lead: one Lead, one LeadCase (what came of the missed call, as service.cases keeps it), the opener
OutboundMessage (and a question or a team alert when the story has one), one or two CallEvent rows per call
(the incoming call and the <Dial> result; a carrier-forwarded broker's calls arrive missed already), and the
lead's history in LeadEvent rows (~6 a lead). Brokers are five, in five time zones, three with working hours.
The mix: a few openers never sent (a landline) or refused, most delivered, some undelivered; ~45% of
delivered openers replied to, minutes to hours later; handoffs with reasons; a person reaching the borrower
within minutes, hours or days, or never; repeat calls before that; outcomes; opt-outs. Anything that would
happen after `now` has not happened yet.

`generate` yields the rows in chunks (a chunk is a dict table name -> rows), with a `Truth` per case that
says what was generated, so a test can check the report's figures against it.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Engine

from service import hours
from service.cases import hour_of_week
from service.models import Broker, CallEvent, Lead, LeadCase, LeadEvent, OutboundMessage

WEEKDAYS = {"mon": "09:00-17:30", "tue": "09:00-17:30", "wed": "09:00-17:30", "thu": "09:00-17:30",
            "fri": "09:00-17:00", "sat": "10:00-13:00", "holidays": []}
# number, name, time zone, call mode, working hours, share of the leads
BROKERS = (
    ("+12125550100", "Ana Ortiz", "America/New_York", "forwarding", WEEKDAYS, 0.34),
    ("+13125550100", "Ben Okafor", "America/Chicago", "forwarding", WEEKDAYS, 0.24),
    ("+13035550100", "Cleo Park", "America/Denver", "forward_on_no_answer", None, 0.18),
    ("+14155550100", "Dana Whitfield", "America/Los_Angeles", "forwarding", WEEKDAYS, 0.14),
    ("+18085550100", "Eli Kahale", "Pacific/Honolulu", "forwarding", None, 0.10),
)
# How likely a missed call is at each local hour (a mortgage line: office hours, evenings, little at night).
HOUR_WEIGHT = (1, 0.5, 0.3, 0.3, 0.5, 1, 3, 6, 10, 12, 12, 11, 10, 11, 11, 10, 10, 9, 8, 6, 5, 4, 3, 2)
REASONS = (("rate_or_terms", 30), ("human_request", 25), ("preapproval", 12), ("rate_lock", 8),
           ("deadline", 8), ("closing", 6), ("complaint", 3), ("transaction_issue", 4), ("wire", 2))
FIELDS = ("loan_type", "timeline", "applied_elsewhere", "callback_window")
# How long until a person reached the borrower: (share, shortest s, longest s).
CONTACT_DELAYS = ((0.28, 30, 300), (0.24, 300, 900), (0.2, 900, 3600), (0.15, 3600, 4 * 3600),
                  (0.09, 4 * 3600, 24 * 3600), (0.04, 24 * 3600, 5 * 24 * 3600))
HOW = (("text", 45), ("call", 30), ("answered_call", 10), ("reached", 10), ("appointment", 5))
REACHED_OUTCOMES = (("appointment", 25), ("application", 10), ("reached", 35), ("not_a_fit", 10), ("lost", 5),
                    (None, 15))
CHUNK = 5000


@dataclass
class Truth:
    """What was generated for one case (what the report must find), with `now` applied."""

    broker: int
    missed_at: datetime
    calls: int  # calls from the caller within the case (the first included)
    opener: str | None  # the opener's status: sent, failed, pending; None without one
    delivery: str | None
    reply_seconds: int | None  # opener sent to first reply; None: no reply (yet)
    opted_out: bool
    handoff_reasons: list[str] | None  # None: no handoff
    human_seconds: int | None  # missed call to the first human contact; None: not reached (yet)
    outcome: str | None


@dataclass
class Chunk:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    truths: list[Truth] = field(default_factory=list)

    def add(self, table: Table, row: dict[str, Any]) -> None:
        self.rows.setdefault(table.name, []).append(row)


def broker_rows() -> list[dict[str, Any]]:
    return [
        {"id": i + 1, "twilio_number": number, "name": name, "brokerage": f"{name.split()[1]} Home Loans",
         "nmls_id": f"{100000 + i}", "forward_to": number[:-4] + "0111", "timezone": zone,
         "alert_to": [number[:-4] + "0112"], "mode": mode, "hours": hours_json, "team": [], "webhooks": [],
         "do_not_text": [], "backup_alert_to": []}
        for i, (number, name, zone, mode, hours_json, _share) in enumerate(BROKERS)
    ]


def _pick(rng: random.Random, weighted: tuple[tuple[Any, float], ...]) -> Any:
    values, weights = zip(*weighted, strict=True)
    return rng.choices(values, weights)[0]


def _missed_at(rng: random.Random, zone: ZoneInfo, start: datetime, span: float) -> datetime:
    """A moment in [start, start + span s), more likely in the busy local hours."""
    top = max(HOUR_WEIGHT)
    while True:
        at = start + timedelta(seconds=rng.random() * span)
        local = at.astimezone(zone)
        if rng.random() * top < HOUR_WEIGHT[local.hour] * (0.45 if local.weekday() == 6 else 1):
            return at.replace(microsecond=0)


def _contact_delay(rng: random.Random) -> int:
    roll, acc = rng.random(), 0.0
    for share, low, high in CONTACT_DELAYS:
        acc += share
        if roll < acc:
            return int(math.exp(rng.uniform(math.log(low), math.log(high))))
    return CONTACT_DELAYS[-1][2]


class _Ids:
    def __init__(self) -> None:
        self.next: dict[str, int] = {}

    def __call__(self, table: Table) -> int:
        value = self.next.get(table.name, 1)
        self.next[table.name] = value + 1
        return value


def generate(leads: int, *, end: datetime, days: int = 90, seed: int = 12) -> Iterator[Chunk]:
    """`leads` cases missed in [end - days, end), in chunks of CHUNK leads; `end` is also now."""
    rng = random.Random(seed)
    start = end - timedelta(days=days)
    brokers = [SimpleNamespace(id=i + 1, number=b[0], zone=ZoneInfo(b[2]), timezone=b[2], mode=b[3], hours=b[4])
               for i, b in enumerate(BROKERS)]
    shares = tuple((b, spec[5]) for b, spec in zip(brokers, BROKERS, strict=True))
    span = days * 86400.0
    # In time order, as the service writes them (ids follow time, so a window's rows lie together on disk).
    picked = [_pick(rng, shares) for _ in range(leads)]
    calls = sorted(((_missed_at(rng, b.zone, start, span), b) for b in picked), key=lambda c: (c[0], c[1].id))
    ids = _Ids()
    chunk = Chunk()
    for n, (missed_at, broker) in enumerate(calls):
        _lead(chunk, ids, rng, n, broker, missed_at, end, start)
        if (n + 1) % CHUNK == 0:
            yield chunk
            chunk = Chunk()
    if chunk.truths:
        yield chunk


def _lead(chunk: Chunk, ids: _Ids, rng: random.Random, n: int, broker: SimpleNamespace, missed_at: datetime,
          now: datetime, start: datetime) -> None:
    """One caller's story from their missed call on, as rows and as a Truth."""
    phone = f"+1{2000000000 + n}"
    lead_id = ids(Lead.__table__)
    events: list[tuple[datetime, str, str, dict[str, Any]]] = []
    team = broker.number[:-4] + "0111"

    def happened(at: datetime | None) -> datetime | None:
        return at if at is not None and at < now else None

    # The opener: none for a landline, refused by Twilio, waiting out quiet hours, or sent (and delivered...).
    roll = rng.random()
    status = None if roll < 0.03 else "failed" if roll < 0.05 else "pending" if roll < 0.06 else "sent"
    opener_at = missed_at + timedelta(seconds=1) if status else None
    sent_at = missed_at + timedelta(seconds=rng.randint(2, 20)) if status == "sent" else None
    delivery = None
    if status == "sent":
        delivery = _pick(rng, (("delivered", 90), ("undelivered", 5), ("failed", 2), (None, 3)))
    delivered_at = happened(sent_at + timedelta(seconds=rng.randint(2, 30))) if delivery and sent_at else None

    # The borrower's reply, an opt-out, a handoff, the fields captured.
    reply_at = None
    if sent_at and delivery in ("delivered", None) and rng.random() < 0.45:
        reply_at = happened(sent_at + timedelta(seconds=int(math.exp(rng.gauss(math.log(360), 1.3))) + 5))
    opted_out_at = reply_at if reply_at and rng.random() < 0.06 else None
    handoff_at, reasons = None, None
    fields: list[str] = []
    if reply_at and not opted_out_at:
        fields = rng.sample(FIELDS, rng.randint(0, 3))
        if rng.random() < 0.45:
            handoff_at = happened(reply_at + timedelta(seconds=rng.randint(3, 900)))
            if handoff_at:
                reasons = list(dict.fromkeys(_pick(rng, REASONS) for _ in range(rng.randint(1, 2))))
                if rng.random() < 0.2:
                    reasons.append("ready")

    # A person reaching them (or not), and the outcome.
    reach = 0.08 if opted_out_at else 0.9 if handoff_at else 0.7
    human_at = happened(missed_at + timedelta(seconds=_contact_delay(rng))) if rng.random() < reach else None
    how = _pick(rng, HOW) if human_at else None
    outcome, outcome_at = None, None
    if how in ("reached", "appointment"):
        outcome, outcome_at = how, human_at
    elif human_at:
        outcome = _pick(rng, REACHED_OUTCOMES)
        outcome_at = happened(human_at + timedelta(seconds=rng.randint(60, 3 * 86400))) if outcome else None
        outcome = outcome if outcome_at else None
    elif rng.random() < 0.3:
        outcome, outcome_at = "no_response", happened(missed_at + timedelta(days=rng.uniform(1, 4)))
        outcome = outcome if outcome_at else None

    # Repeat calls before anyone reached them (one of which may be the broker answering: the contact).
    repeat_times: list[datetime] = []
    if rng.random() < 0.2:
        until = human_at or min(missed_at + timedelta(days=3), now)
        repeat_times = sorted(missed_at + (until - missed_at) * rng.uniform(0.05, 0.95)
                              for _ in range(rng.choice((1, 1, 1, 2, 2, 3))))
        repeat_times = [t.replace(microsecond=0) for t in repeat_times if missed_at < t < until]
    if how == "answered_call" and human_at:
        repeat_times.append(human_at)

    case_id = ids(LeadCase.__table__)
    call_sids = [f"CA{lead_id:016x}{i:016x}" for i in range(1 + len(repeat_times))]
    for i, (at, sid) in enumerate(zip([missed_at, *repeat_times], call_sids, strict=True)):
        answered = how == "answered_call" and at == human_at
        _call(chunk, ids, broker, phone, sid, at, answered=answered)
        kind = "call_answered" if answered else "missed_call"
        events.append((at, kind, "borrower", {"call_sid": sid} | ({} if answered or i else {"reason": "opener"})))

    opener_id = None
    if status:
        opener_id = _message(chunk, ids, broker, lead_id, phone, "opener", status, opener_at or missed_at,
                             sent_at, delivery if delivered_at else None)
        events.append((opener_at or missed_at, "opener", "textback", {"message_id": opener_id,
                                                                      "template_id": "opener"}))
    if delivered_at:
        kind = "opener_delivered" if delivery == "delivered" else "opener_failed"
        events.append((delivered_at, kind, "textback", {"message_id": opener_id, "status": delivery}))
    if reply_at:
        for k in range(rng.choice((1, 1, 2, 3))):
            events.append((reply_at + timedelta(minutes=3 * k), "reply", "borrower", {"message_id": None}))
        if not opted_out_at:
            _message(chunk, ids, broker, lead_id, phone, "question", "sent", reply_at, reply_at, "delivered")
    for k, name in enumerate(fields):
        events.append((reply_at + timedelta(seconds=k + 1) if reply_at else missed_at, "field_captured",
                       "borrower", {"field": name, "value": "x"}))
    if handoff_at and reasons:
        events.append((handoff_at, "handoff", "textback", {"reasons": [r for r in reasons if r != "ready"],
                                                           "ready": "ready" in reasons}))
        _message(chunk, ids, broker, lead_id, team, "alert", "sent", handoff_at, handoff_at, "delivered",
                 audience="broker")
    if human_at and how:
        if how == "text":
            events.append((human_at, "human_text", team, {"message_id": None, "override": False}))
        events.append((human_at, "human_contact", team, {"how": how}))
    if outcome and outcome_at:
        events.append((outcome_at, "outcome", team, {"outcome": outcome, "note": None}))
    if opted_out_at:
        events.append((opted_out_at, "opted_out", "borrower", {}))
    for at, kind, actor, data in sorted(events, key=lambda e: e[0]):
        chunk.add(LeadEvent.__table__, {"id": ids(LeadEvent.__table__), "lead_id": lead_id,
                                        "broker_id": broker.id, "kind": kind, "actor": actor, "actor_name": None,
                                        "data": data, "at": at})

    state = "closed" if opted_out_at else "handoff" if handoff_at else "asking" if reply_at else \
        "opened" if status else "new"
    chunk.add(Lead.__table__, {
        "id": lead_id, "broker_id": broker.id, "phone": phone, "state": state, "loan_type": None,
        "timeline": None, "handoff_reasons": reasons or [], "asked": fields, "opener_at": opener_at,
        "automated_count": 1 if status else 0, "summary_alert_sent": bool(handoff_at), "missed_call_at": missed_at,
        "handoff_at": handoff_at, "human_at": human_at, "human_by": team if human_at else None,
        "outcome": outcome, "outcome_at": outcome_at, "sla_alerts": 0, "created_at": missed_at,
        "updated_at": max(e[0] for e in events),
    })
    in_hours = None if broker.hours is None else hours.is_open(broker, missed_at)
    chunk.add(LeadCase.__table__, {
        "id": case_id, "broker_id": broker.id, "lead_id": lead_id, "call_sid": call_sids[0], "missed_at": missed_at,
        "last_call_at": max([missed_at, *repeat_times]), "hour_of_week": hour_of_week(missed_at, broker.timezone),
        "in_hours": in_hours, "opener_message_id": opener_id, "opener_at": opener_at, "first_reply_at": reply_at,
        "fields": fields, "handoff_at": handoff_at, "handoff_reasons": reasons or [], "human_at": human_at,
        "human_by": team if human_at else None, "human_how": how, "repeat_calls": len(repeat_times),
        "first_repeat_at": repeat_times[0] if repeat_times else None, "calls_after_contact": 0,
        "outcome": outcome, "outcome_at": outcome_at, "opted_out_at": opted_out_at,
    })
    chunk.truths.append(Truth(
        broker=broker.id, missed_at=missed_at, calls=1 + len(repeat_times), opener=status,
        delivery=delivery if delivered_at else None,
        reply_seconds=int((reply_at - sent_at).total_seconds()) if reply_at and sent_at else None,
        opted_out=opted_out_at is not None, handoff_reasons=reasons,
        human_seconds=int((human_at - missed_at).total_seconds()) if human_at else None, outcome=outcome,
    ))
    # Some callers the broker answers at once: calls, never missed-call leads.
    if broker.mode == "forwarding" and rng.random() < 0.3:
        at = _missed_at(rng, broker.zone, missed_at - timedelta(hours=12), 86400.0)
        if start <= at < now:
            _call(chunk, ids, broker, f"+1{3000000000 + n}", f"CA{n:016x}{'a' * 16}", at, answered=True)


def _call(chunk: Chunk, ids: _Ids, broker: SimpleNamespace, caller: str, sid: str, at: datetime, *,
          answered: bool) -> None:
    """The webhooks of one call: a carrier-forwarded call is missed on arrival; else the <Dial> says."""
    table = CallEvent.__table__
    forwarded = broker.mode == "forward_on_no_answer" and not answered
    base = {"call_sid": sid, "broker_id": broker.id, "caller": caller}
    chunk.add(table, {**base, "id": ids(table), "kind": "voice", "status": "", "missed": True if forwarded else None,
                      "reason": "forwarded on no answer" if forwarded else None, "duration": None, "created_at": at})
    if forwarded:
        return
    chunk.add(table, {**base, "id": ids(table), "kind": "dial-status", "status": "completed" if answered else "no-answer",
                      "missed": not answered, "reason": "answered (dial completed, bridged, 120 s)" if answered
                      else "dial no-answer", "duration": 120 if answered else 0,
                      "created_at": at + timedelta(seconds=120 if answered else 20)})


def _message(chunk: Chunk, ids: _Ids, broker: SimpleNamespace, lead_id: int, to: str, purpose: str, status: str,
             at: datetime, sent_at: datetime | None, delivery: str | None, audience: str = "borrower") -> int:
    table = OutboundMessage.__table__
    row_id = ids(table)
    chunk.add(table, {
        "id": row_id, "dedupe_key": f"{purpose}:{lead_id}:{row_id}", "broker_id": broker.id, "lead_id": lead_id,
        "audience": audience, "purpose": purpose, "template_id": purpose, "policy_version": "bench",
        "guard_result": {"ok": True, "violations": []}, "to_phone": to, "from_phone": broker.number,
        "body": "Hi, this is the team you just called. How can we help with your home loan?",
        "status": status, "attempts": 1 if sent_at else 0, "next_attempt_at": at, "claimed_at": None,
        "last_error": "21614: not a mobile number" if status == "failed" else None, "unknown_outcome": False,
        "twilio_sid": f"SM{row_id:032x}" if sent_at else None, "delivery_status": delivery,
        "error_code": 30003 if delivery == "undelivered" else None, "created_at": at, "sent_at": sent_at,
    })
    return row_id


# -- writing it ---------------------------------------------------------------------------------------------

ORDER = ("lead", "outboundmessage", "leadcase", "callevent", "leadevent")


def _complete(table: Table, rows: list[dict[str, Any]]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Every column of `table`, in order, for every row: the row's value, else the column's scalar default."""
    names = [c.name for c in table.columns]
    defaults = {c.name: c.default.arg if c.default is not None and c.default.is_scalar else None
                for c in table.columns}
    return names, [tuple(row.get(name, defaults[name]) for name in names) for row in rows]


def _copy(engine: Engine, tables: dict[str, Table], chunk: dict[str, list[dict[str, Any]]]) -> None:
    """PostgreSQL: COPY each table's rows in (JSON as text)."""
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            for name in ORDER:
                if name not in chunk:
                    continue
                table = tables[name]
                names, rows = _complete(table, chunk[name])
                json_at = [i for i, c in enumerate(table.columns) if c.type.__class__.__name__ == "JSON"]
                quoted = ", ".join(f'"{n}"' for n in names)
                with cur.copy(f'COPY "{name}" ({quoted}) FROM STDIN') as copy:
                    for row in rows:
                        values = list(row)
                        for i in json_at:
                            values[i] = json.dumps(values[i])
                        copy.write_row(values)
        raw.commit()
    finally:
        raw.close()


def fill(engine: Engine, chunks: Iterator[Chunk]) -> tuple[list[Truth], dict[str, int]]:
    """Write the brokers and every chunk; the truths and the row counts per table."""
    from sqlmodel import SQLModel

    tables = dict(SQLModel.metadata.tables)
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        conn.execute(Broker.__table__.insert(), broker_rows())
    truths: list[Truth] = []
    counts: dict[str, int] = {}
    for chunk in chunks:
        truths += chunk.truths
        for name, rows in chunk.rows.items():
            counts[name] = counts.get(name, 0) + len(rows)
        if postgres:
            _copy(engine, tables, chunk.rows)
            continue
        with engine.begin() as conn:
            for name in ORDER:
                if name in chunk.rows:
                    conn.execute(tables[name].insert(), chunk.rows[name])
    if postgres:
        with engine.begin() as conn:
            for name in ("broker", *ORDER):  # ids were given: move each sequence past them
                top = select(func.max(tables[name].c.id)).scalar_subquery()
                conn.execute(select(func.setval(func.pg_get_serial_sequence(name, "id"), top)))
    return truths, counts
