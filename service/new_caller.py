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
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, exists, insert, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel, col, select

from service import cases, hours, next_step, optout_lock, outbox
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
from service.sending.gates import QueueCounts, QueueFacts, count_columns, counts_of
from service.store import saved_id

if TYPE_CHECKING:
    from service.context import AppContext

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


def read(session: Session, ctx: AppContext, *, broker: Broker, caller_raw: str | None, call_sid: str, kind: str,
         status: str) -> Facts:
    """Everything the missed call's decision reads, in one statement."""
    broker_id = saved_id(broker)
    columns: list[Any] = [
        exists().where(col(ForgottenSid.digest) == sid_digest(call_sid)).label("forgotten"),
        exists().where(col(CallEvent.call_sid) == call_sid, col(CallEvent.kind) == kind,
                       col(CallEvent.status) == status).label("stored"),
    ]
    try:
        phone: str | None = to_e164(caller_raw or "")
    except InvalidPhone:
        phone = None
    params: dict[str, Any] = {}
    if phone is not None:
        # service.optout_lock's one statement (bound by name), its first column: opted out or not.
        deciding = optout_lock._state_query(ctx.sending_policy.opt_out_scope).subquery()
        params = {"broker_id": broker_id, "phone": phone}
        columns += [
            exists().where(col(Lead.broker_id) == broker_id, col(Lead.phone) == phone).label("lead"),
            select(next(iter(deciding.c))).scalar_subquery().label("opted_out"),
            exists().where(col(DoNotText.phone) == phone, or_(col(DoNotText.broker_id).is_(None),
                                                             col(DoNotText.broker_id) == broker_id)
                           ).label("known_contact"),
            exists().where(col(OutboundMessage.dedupe_key) == opener_key(call_sid)).label("opener_taken"),
            select(Broker.busy_until).where(col(Broker.id) == broker_id).scalar_subquery().label("busy_until"),
            *count_columns(ctx, broker_id=broker_id, lead_id=None, opener=True, now=utcnow()),
        ]
    row = session.execute(select(*columns), params).one()
    found = row._mapping
    if phone is None:
        return Facts(bool(found["forgotten"]), bool(found["stored"]))
    return Facts(bool(found["forgotten"]), bool(found["stored"]), phone, bool(found["lead"]),
                 bool(found["opted_out"]), bool(found["known_contact"]), bool(found["opener_taken"]),
                 found["busy_until"], counts_of(row))


def _insert(session: Session, model: type[SQLModel]) -> Any:
    """INSERT for the session's database (both spell ON CONFLICT ... DO NOTHING and RETURNING alike)."""
    dialect = session.get_bind().dialect.name
    table: Table = model.__table__  # type: ignore[attr-defined]
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def _values(row: SQLModel) -> dict[str, Any]:
    """The row's column values, as its INSERT writes them (no id: the database gives it)."""
    table: Table = type(row).__table__  # type: ignore[attr-defined]
    return {c.key: getattr(row, c.key) for c in table.columns if not c.primary_key}


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
    lead_id = session.execute(
        _insert(session, Lead).values(_values(lead))
        .on_conflict_do_nothing(index_elements=["broker_id", "phone"]).returning(col(Lead.id))
    ).scalar()
    if lead_id is None:
        return None  # created meanwhile by another transaction (nothing written here)
    lead.id = msg.lead_id = missed.lead_id = lead_id
    msg.id = session.execute(
        _insert(session, OutboundMessage).values(_values(msg))
        .on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(col(OutboundMessage.id))
    ).scalar()
    if msg.id is None:
        raise RuntimeError(f"opener for {event.call_sid} stored meanwhile although its lead was new")
    opener = LeadEvent(lead_id=lead_id, broker_id=broker_id, kind=EventKind.opener,
                       data={"message_id": msg.id, "template_id": msg.template_id}, at=utcnow())
    session.execute(insert(LeadEvent).values([_values(missed), _values(opener)]))
    case = cases.step(None, missed, broker)
    if case is not None:
        cases.step(case, opener, broker)
        session.execute(insert(LeadCase).values(_values(case)))
    event.reason = f"{event.reason}; {REASON}" if event.reason else REASON
    event.id = session.execute(
        _insert(session, CallEvent).values(_values(event))
        .on_conflict_do_nothing(index_elements=["call_sid", "kind", "status"]).returning(col(CallEvent.id))
    ).scalar()
    if event.id is None:
        raise RuntimeError(f"call event for {event.call_sid} stored meanwhile although its lead was new")
    outbox.note_stored(queued, broker)
    return [msg.id]

