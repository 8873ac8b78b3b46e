"""A broker's status for the console and the API: working hours, open now, and "with a client until HH:MM".

The console sets `Broker.busy_until` (UTC) with `set_busy`; it is never in the brokers file, so a restart keeps
it. The brokers a process holds in memory (`ctx.brokers_by_number`) are detached rows loaded at start-up and
several processes may run: whatever reads the busy state (the list below, service.next_step choosing what a
caller is told) reads it from the database.

A time is given as the broker's own wall clock ("15:30", 24-hour), for today: one that has passed is refused
(it does not roll over to tomorrow), and so is one more than BUSY_MAX ahead.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import update
from sqlmodel import Session, col, select

from service.access import Principal
from service.errors import ApiError
from service.hours import schedule_of, wall_time_to_utc
from service.leads_view import iso
from service.logs import log
from service.models import Broker, utcnow
from service.next_step import situation

if TYPE_CHECKING:
    from service.context import AppContext

logger = logging.getLogger("textback.brokers")

BUSY_MAX = timedelta(hours=12)
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def _refuse(message: str) -> ApiError:
    return ApiError(f"until: {message}", status_code=422, details=[{"key": "until", "message": message}])


def busy_until_from_local(value: str, zone: ZoneInfo, now: datetime) -> datetime:
    """"15:30" today in `zone` as a UTC instant; ApiError 422 (naming `until`) when malformed, past or too far."""
    match = _HHMM.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise _refuse(f'{value!r} is not a time like "15:30" (24-hour, the broker\'s time zone), or null to clear')
    wall = time(int(match.group(1)), int(match.group(2)))
    until = wall_time_to_utc(now.astimezone(zone).date(), wall, zone)
    if until <= now:
        raise _refuse(f"that time has passed ({now.astimezone(zone):%H:%M} now in {zone.key})")
    if until - now > BUSY_MAX:
        raise _refuse(f"more than {int(BUSY_MAX.total_seconds() // 3600)} hours ahead")
    return until


def set_busy(session: Session, ctx: AppContext, principal: Principal, broker_number: str, until_local: str | None,
             *, now: datetime | None = None) -> Broker:
    """Set (or, with None, clear) the broker's "with a client until"; 404 unless the principal sees the broker.
    Returns the stored row."""
    now = now or utcnow()
    known = ctx.broker_for(broker_number)
    if known is None or known.id is None or not principal.may_see(known.id):
        raise ApiError("no such broker", status_code=404)
    until = None if until_local is None else busy_until_from_local(until_local, ZoneInfo(known.timezone), now)
    session.exec(update(Broker).where(col(Broker.id) == known.id).values(busy_until=until))
    row = session.get(Broker, known.id, populate_existing=True)
    if row is None:
        raise ApiError("no such broker", status_code=404)
    log(logger, logging.INFO, "busy set" if until else "busy cleared", broker_id=known.id, until=iso(until),
        by=principal.kind)
    return row


def broker_summary(broker: Broker, *, now: datetime | None = None) -> dict[str, Any]:
    """The API's view of one broker (a row read from the database, so its busy state is current)."""
    now = now or utcnow()
    zone = ZoneInfo(broker.timezone)
    schedule = schedule_of(broker)
    busy = broker.busy_until if broker.busy_until is not None and broker.busy_until > now else None
    found = situation(broker, busy, now)
    return {
        "twilio_number": broker.twilio_number,
        "name": broker.name,
        "brokerage": broker.brokerage,
        "timezone": broker.timezone,
        "hours": broker.hours,
        "busy_until": iso(busy),
        "busy_until_local": f"{busy.astimezone(zone):%H:%M}" if busy else None,
        "open_now": schedule.is_open(now),
        "next_opening": iso(schedule.next_opening(now)),
        "handoff_sla_minutes": broker.handoff_sla_minutes,
        # What a caller missed now is told (service.next_step): shortly, busy or closed, and when a person calls.
        "next_step": found.step.value,
        "callback_at": iso(found.callback_at),
    }


def list_brokers(session: Session, principal: Principal, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """The active brokers the principal sees, by name, read afresh."""
    rows = session.exec(
        select(Broker).where(col(Broker.active).is_(True), col(Broker.id).in_(sorted(principal.broker_ids)))
        .order_by(col(Broker.name), col(Broker.id))
    ).all()
    return [broker_summary(b, now=now) for b in rows if b.id is not None and principal.may_see(b.id)]
