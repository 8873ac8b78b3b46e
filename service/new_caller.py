"""A new caller's missed call in six statements: the webhook's hot path.

A missed call from a number the broker has no lead for, that nothing stops (no opt-out, not a known contact,
the gates and the output guard let the opener go), is what the service does most. It is decided from ONE read,
then written with one INSERT per table, idempotency kept by the database's unique constraints:

1. SELECT: the CallSid forgotten (a replay), this delivery stored already (a duplicate), the caller's lead,
   the opt-out in force (service.optout_lock's statement), a known contact, the opener's dedupe key, the
   broker's "with a client until" and the four counts of the gates, each a scalar subquery;
2. INSERT lead ... ON CONFLICT (broker_id, phone) DO NOTHING RETURNING id: the lead, created with its opener
   claimed and its conversation opened. A lead another transaction created meanwhile: nothing is written and
   the ordinary path (service.calls.start_opener) takes over, which then finds it;
3. INSERT outboundmessage ... ON CONFLICT (dedupe_key) DO NOTHING RETURNING id: the opener;
4. INSERT leadevent: the missed call and the opener, one multi-row insert;
5. INSERT leadcase: the missed-call case with its opener (service.cases' rule, applied in memory);
6. INSERT callevent ... ON CONFLICT DO NOTHING RETURNING id, with its final reason.

The rows are the ones the ordinary path writes (the same objects, built by the same functions). Anything less
common (a known lead, an opt-out, a gate or the guard saying no, a replay from the spool, CRM webhooks) is
left to the ordinary path, decided before anything is written. Steps 3 and 6 cannot conflict once step 2
inserted the lead (a delivery of the same call needs the same lead); if one ever does, the transaction is
rolled back whole (an error), so nothing is written or sent twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Integer, Select, String, Table, TextClause, bindparam, exists, or_, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel, col, select

from service import cases, hours, next_step, opener_tally, optout_lock, outbox
from service.conversation import open_conversation
from service.events import EventKind
from service.models import (
    Broker,
    CallEvent,
    DoNotText,
    ForgottenSid,
    Lead,
    LeadCase,
    LeadEvent,
    MessageStatus,
    OutboundMessage,
    Purpose,
    utcnow,
)
from service.outbox import counts_for_lead, prepare_text
from service.phones import InvalidPhone, to_e164
from service.privacy import sid_digest
from service.sending.gates import QueueCounts, QueueFacts, count_columns, count_params, counts_of
from service.store import saved_id

if TYPE_CHECKING:
    from service.context import AppContext
    from service.sending.opt_out_policy import Scope

logger = logging.getLogger("textback.flow")

REASON = "opener queued"


@dataclass(frozen=True)
class Facts:
    """What the one read found (`phone` None: the caller ID is withheld or invalid, and only the first two
    were read)."""

    forgotten: bool  # the CallSid's rows were deleted: a replay, refused
    stored: bool  # this delivery's call event is stored already: a duplicate
    phone: str | None = None
    lead: bool = False  # the caller has a lead with this broker
    opted_out: bool = False  # in the opt-out scope in force
    known_contact: bool = False  # in the DoNotText table (this broker's or all)
    opener_taken: bool = False  # the opener's dedupe key is used already
    busy_until: datetime | None = None
    counts: QueueCounts = field(default_factory=QueueCounts)


def opener_key(call_sid: str) -> str:
    return f"opener:{call_sid}"


@cache
def _read_query(scope: Scope, *, caller: bool, tally: bool = False) -> Select[Any]:
    """The one read as a statement, built once per opt-out scope (with or without the caller's columns) and bound
    by name: its Python construction cost more than the database's answer."""
    columns: list[Any] = [
        exists().where(col(ForgottenSid.digest) == bindparam("digest")).label("forgotten"),
        exists().where(col(CallEvent.call_sid) == bindparam("call_sid"), col(CallEvent.kind) == bindparam("kind"),
                       col(CallEvent.status) == bindparam("status")).label("stored"),
    ]
    if caller:
        # service.optout_lock's one statement (bound by name: broker_id, phone), its first column: opted out or not.
        deciding = optout_lock._state_query(scope).subquery()
        broker_id, phone = bindparam("broker_id", type_=Integer), bindparam("phone", type_=String)
        columns += [
            exists().where(col(Lead.broker_id) == broker_id, col(Lead.phone) == phone).label("lead"),
            select(next(iter(deciding.c))).scalar_subquery().label("opted_out"),
            exists().where(col(DoNotText.phone) == phone, or_(col(DoNotText.broker_id).is_(None),
                                                             col(DoNotText.broker_id) == broker_id)
                           ).label("known_contact"),
            exists().where(col(OutboundMessage.dedupe_key) == bindparam("opener_key")).label("opener_taken"),
            select(Broker.busy_until).where(col(Broker.id) == broker_id).scalar_subquery().label("busy_until"),
            *count_columns(opener=True, lead=False, tally=tally),
        ]
    query: Select[Any] = select(*columns)
    return query


def read(session: Session, ctx: AppContext, *, broker: Broker, caller_raw: str | None, call_sid: str, kind: str,
         status: str) -> Facts:
    """Everything the missed call's decision reads, in one statement."""
    broker_id = saved_id(broker)
    try:
        phone: str | None = to_e164(caller_raw or "")
    except InvalidPhone:
        phone = None
    params: dict[str, Any] = {"digest": sid_digest(call_sid), "call_sid": call_sid, "kind": kind, "status": status}
    if phone is not None:
        params |= {"broker_id": broker_id, "phone": phone, "opener_key": opener_key(call_sid),
                   **count_params(ctx, broker_id=broker_id, lead_id=None, now=utcnow())}
    query = _read_query(ctx.sending_policy.opt_out_scope, caller=phone is not None, tally=opener_tally.in_use(ctx))
    row = session.execute(query, params).one()
    found = row._mapping
    if phone is None:
        return Facts(bool(found["forgotten"]), bool(found["stored"]))
    return Facts(bool(found["forgotten"]), bool(found["stored"]), phone, bool(found["lead"]),
                 bool(found["opted_out"]), bool(found["known_contact"]), bool(found["opener_taken"]),
                 found["busy_until"], counts_of(row))


@cache
def _insert_new(dialect: str, model: type[SQLModel], unique: tuple[str, ...]) -> Any:
    """INSERT ... ON CONFLICT (`unique`) DO NOTHING RETURNING id for the dialect (both spell it alike), built
    once and bound with a row's values (`_values`)."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return make(table).on_conflict_do_nothing(index_elements=list(unique)).returning(table.c.id)


@cache
def _insert_rows(model: type[SQLModel], rows: int) -> TextClause:
    """One INSERT of `rows` rows, bound by `_bound_rows`. Written out (typed binds, so JSON and datetimes are
    stored as the ORM stores them): SQLAlchemy compiles a multi-row `insert().values([...])` afresh each time."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    columns = [c for c in table.columns if not c.primary_key]
    names = ", ".join(f'"{c.name}"' for c in columns)
    rows_sql = ", ".join("(" + ", ".join(f":{c.key}_{n}" for c in columns) + ")" for n in range(rows))
    return text(f'INSERT INTO "{table.name}" ({names}) VALUES {rows_sql}').bindparams(  # noqa: S608 - the model's names
        *(bindparam(f"{c.key}_{n}", type_=c.type) for n in range(rows) for c in columns))


def _bound_rows(rows: list[SQLModel]) -> dict[str, Any]:
    return {f"{key}_{n}": value for n, row in enumerate(rows) for key, value in _values(row).items()}


def _insert_one(session: Session, model: type[SQLModel], row: SQLModel, unique: tuple[str, ...]) -> int | None:
    """The row inserted unless one with the same `unique` columns exists: its new id, else None."""
    query = _insert_new(session.get_bind().dialect.name, model, unique)
    return cast("int | None", session.execute(query, _values(row)).scalar())


def _values(row: SQLModel) -> dict[str, Any]:
    """The row's column values, as its INSERT writes them (no id: the database gives it), read from the
    instance's own dict where they are (the instrumented attributes cost more than the dict)."""
    held = row.__dict__
    return {key: held[key] if key in held else getattr(row, key) for key in _columns(type(row))}


@cache
def _columns(model: type[SQLModel]) -> tuple[str, ...]:
    table: Table = model.__table__  # type: ignore[attr-defined]
    return tuple(c.key for c in table.columns if not c.primary_key)


def open_opener(session: Session, ctx: AppContext, *, broker: Broker, event: CallEvent,
                facts: Facts) -> list[int] | None:
    """The opener for a new caller, in the statements the module names after the read; the ids to send. None
    when this is not that case (nothing written: the ordinary path decides). `event` is stored with its final
    reason."""
    phone = facts.phone
    if (phone is None or facts.lead or facts.opted_out or facts.opener_taken or broker.webhooks
            or phone in ctx.own_numbers or phone in broker.do_not_text):
        return None
    broker_id = saved_id(broker)
    lead = Lead(broker_id=broker_id, phone=phone)
    lead.missed_call_at = utcnow()
    in_hours = None if broker.hours is None else hours.is_open(broker, lead.missed_call_at)
    missed = LeadEvent(lead_id=0, broker_id=broker_id, kind=EventKind.missed_call, actor="borrower",
                       data={"call_sid": event.call_sid, "in_hours": in_hours}, at=utcnow())
    claimed = utcnow()
    lead.opener_at, lead.updated_at = claimed, claimed
    booking = bool(broker.booking_url)
    template_id, values = next_step.choose_knowing(ctx, broker=broker, kind="opener", to=phone,
                                                   purpose=Purpose.opener, busy=facts.busy_until, booking=booking)
    queued = prepare_text(session, ctx, broker=broker, to=phone, template_id=template_id, purpose=Purpose.opener,
                          lead=lead, values=values, dedupe_key=opener_key(event.call_sid),
                          facts=QueueFacts(known_contact=facts.known_contact, counts=facts.counts))
    msg = queued.msg
    if msg.status != MessageStatus.pending:
        return None  # suppressed or blocked: the ordinary path records it, alerts and explains
    if counts_for_lead(msg, lead):
        lead.automated_count += 1
    open_conversation(lead, booking=booking)
    lead_id = _insert_one(session, Lead, lead, ("broker_id", "phone"))
    if lead_id is None:
        return None  # created meanwhile by another transaction (nothing written here)
    lead.id = msg.lead_id = missed.lead_id = lead_id
    msg.id = _insert_one(session, OutboundMessage, msg, ("dedupe_key",))
    if msg.id is None:
        raise RuntimeError(f"opener for {event.call_sid} stored meanwhile although its lead was new")
    opener = LeadEvent(lead_id=lead_id, broker_id=broker_id, kind=EventKind.opener,
                       data={"message_id": msg.id, "template_id": msg.template_id}, at=utcnow())
    session.execute(_insert_rows(LeadEvent, 2), _bound_rows([missed, opener]))
    case = cases.step(None, missed, broker)
    if case is not None:
        cases.step(case, opener, broker)
        session.execute(_insert_rows(LeadCase, 1), _bound_rows([case]))
    event.reason = f"{event.reason}; {REASON}" if event.reason else REASON
    event.id = _insert_one(session, CallEvent, event, ("call_sid", "kind", "status"))
    if event.id is None:
        raise RuntimeError(f"call event for {event.call_sid} stored meanwhile although its lead was new")
    outbox.note_stored(queued, broker)
    return [msg.id]

