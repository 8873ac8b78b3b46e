"""Unworked handoffs: a lead handed to a person that nobody works in time is re-alerted, then sent to backup.

A lead waits for a person while it is `handoff` or `ready`, its handoff is not worked (`handoff_worked_at`) and
no person has acted on it since the handoff (`human_at` unset, or before `handoff_at`). The timer counts only
the broker's working time (service.hours; a broker without `hours:` is always open, so it runs on the wall
clock) from `handoff_at`:

- after `handoff_sla_minutes` working minutes: the broker's alert_to phones get `alert_unworked` (level 1);
- after as many again: the backup_alert_to phones get `alert_unworked_backup` (level 2), when there are any.

`Lead.sla_alerts` is the level reached for the current handoff (a new handoff sets it back to 0, in
service.conversation; NULL on rows older than the column reads as 0). Each level is claimed by one atomic
UPDATE ... WHERE sla_alerts = n (and the handoff still the same and unworked), in the transaction that queues
the alert and records the `sla_alert` event: any number of processes may sweep, each level goes out once.
The alerts say how long the caller has really waited (the night included), not the working minutes.

Run by the worker's sweep (service.worker.Worker.run_once), every sweep: the candidates are read with one query,
their deadlines computed in memory (the brokers' hours, SLA and phones are the brokers file's, as loaded), and
only a due lead gets a transaction, of its own (one lead's failure does not hold up the others).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, func, or_, update
from sqlmodel import Session, col, select

from service import events
from service.alerts import pending_ids, queue_alert
from service.db import session_scope
from service.events import EventKind
from service.hours import working_deadline
from service.logs import log
from service.models import Broker, Lead, LeadState, utcnow

if TYPE_CHECKING:
    from service.context import AppContext

logger = logging.getLogger("textback.handoff_sla")

WAITING = (LeadState.handoff, LeadState.ready)
LEVELS = {1: ("alert_unworked", "alert_to"), 2: ("alert_unworked_backup", "backup_alert_to")}
READY_PHRASE = "ready_for_call"  # how a ready lead (no reasons) reads in $reasons


@dataclass(frozen=True)
class Waiting:
    """A lead waiting for a person: the handoff's moment and the level of reminders already sent."""

    lead_id: int
    broker_id: int
    handoff_at: datetime
    level: int


def _unworked() -> list[ColumnElement[bool]]:
    """The conditions of a lead still waiting for a person (also re-checked by the claim)."""
    return [
        col(Lead.state).in_(WAITING),
        col(Lead.handoff_worked_at).is_(None),
        col(Lead.handoff_at).is_not(None),
        or_(col(Lead.human_at).is_(None), col(Lead.human_at) < col(Lead.handoff_at)),
    ]


def waiting(session: Session, ctx: AppContext) -> list[Waiting]:
    """Leads that may have a reminder to come: level 0, or level 1 at a broker with backup phones."""
    with_backup = sorted(b.id for b in ctx.brokers_by_number.values() if b.backup_alert_to and b.id is not None)
    level = func.coalesce(col(Lead.sla_alerts), 0)
    rows = session.exec(
        select(Lead.id, Lead.broker_id, Lead.handoff_at, level)
        .where(*_unworked(), or_(level == 0, (level == 1) & col(Lead.broker_id).in_(with_backup)))
        .order_by(col(Lead.handoff_at))
    ).all()
    return [Waiting(lead_id, broker_id, at, int(n)) for lead_id, broker_id, at, n in rows
            if lead_id is not None and at is not None]


def due_at(broker: Broker, item: Waiting) -> datetime | None:
    """When the next reminder of this lead is due: (level + 1) SLA periods of working time after the handoff."""
    minutes = (broker.handoff_sla_minutes or 15) * (item.level + 1)
    return working_deadline(broker, item.handoff_at, minutes)


def waited(since: datetime, now: datetime) -> str:
    """How long, as an alert says it: "25 min", "3 h 10 min", "2 d 4 h"."""
    minutes = max(int((now - since).total_seconds() // 60), 0)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {mins} min" if hours else f"{mins} min"


def _claim(session: Session, item: Waiting) -> bool:
    """Take level + 1 for this handoff, atomically: False when another process took it, or the lead changed."""
    result = session.exec(
        update(Lead)
        .where(col(Lead.id) == item.lead_id, func.coalesce(col(Lead.sla_alerts), 0) == item.level,
               col(Lead.handoff_at) == item.handoff_at, *_unworked())
        .values(sla_alerts=item.level + 1)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _remind(session: Session, ctx: AppContext, broker: Broker, item: Waiting, now: datetime) -> list[int]:
    """Claim the lead's next level and queue its alert; the ids to send now ([] when another process took it)."""
    level = item.level + 1
    template, numbers_key = LEVELS[level]
    numbers: list[str] = list(getattr(broker, numbers_key) or [])
    if not numbers or not _claim(session, item):
        return []
    lead = session.get(Lead, item.lead_id, populate_existing=True)
    if lead is None:
        return []
    reasons = ", ".join(dict.fromkeys(ctx.templates.phrase(r) for r in lead.handoff_reasons or [READY_PHRASE]))
    msgs = queue_alert(session, ctx, broker=broker, lead=lead, template_id=template, numbers=numbers,
                       values={"caller": lead.phone, "waited": waited(item.handoff_at, now), "reasons": reasons},
                       dedupe_key=f"sla:{lead.id}:{item.handoff_at.timestamp():.0f}:{level}")
    events.record(session, broker=broker, lead=lead, kind=EventKind.sla_alert, at=now,
                  data={"level": level, "to": numbers_key, "sla_minutes": broker.handoff_sla_minutes,
                        "message_ids": [m.id for m in msgs]})
    log(logger, logging.INFO, "unworked handoff re-alerted", lead_id=lead.id, reminder=level, to=numbers_key,
        waited_minutes=int((now - item.handoff_at).total_seconds() // 60))
    return pending_ids(msgs)


def sweep(ctx: AppContext, *, now: datetime | None = None) -> list[int]:
    """Send every reminder that is due now; the ids of the alerts queued to send."""
    now = now or utcnow()
    with Session(ctx.engine) as session:
        items = waiting(session, ctx)
    # Hours, SLA and phones come from the brokers file: the copies loaded at start-up are the file's values.
    brokers = {b.id: b for b in ctx.brokers_by_number.values()}
    ids: list[int] = []
    for item in items:
        broker = brokers.get(item.broker_id)
        if broker is None or item.handoff_at > now - timedelta(minutes=1):
            continue  # a broker no longer in the file; or too recent for any SLA (a minute at least)
        due = due_at(broker, item)
        if due is None or due > now:
            continue
        try:
            with session_scope(ctx.engine) as session:
                ids += _remind(session, ctx, broker, item, now)
        except Exception as exc:  # the lead stays at its level: the next sweep tries again
            log(logger, logging.ERROR, "unworked-handoff reminder failed", lead_id=item.lead_id,
                exc_type=type(exc).__name__)
    return ids
