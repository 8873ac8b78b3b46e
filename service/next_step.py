"""What a borrower is told about when a person will call: the honest next step, and the template that says it.

Three situations, judged at the moment the text will be read (when quiet hours hold it, at the moment they
let it go), from the broker's working hours (service.hours) and the console's "with a client until HH:MM"
(`Broker.busy_until`, read from the database: the brokers held in memory keep their start-up value):

- shortly: open and free (or no `hours:` and not busy): today's wording ("I'll follow up", "will call you
  shortly"). Also when the hours never open again within a year: nothing honest to promise.
- busy: with a client until a time inside working hours: "with a client until about 3:30 PM".
- closed: outside working hours, on a holiday, within CLOSING_SOON of closing time, or busy past closing
  time: the start of the next opening range, "tomorrow at 9:00 AM", "Monday at 9:00 AM".

The times are computed here, never free text: $callback_time ("3:30 PM") and $callback_day ("today",
"tomorrow", a weekday within the week, else "Monday, Jan 4"), with $callback_day_es for the Spanish templates
("hoy", "mañana", "el lunes", "el lunes 4 de ene"). They are written in the broker's time zone;
when the caller's area code puts them in a zone with another UTC offset at that moment, in the caller's zone
with its abbreviation ("12:00 PM EDT"), the day counted in that zone too.

Template ids: opener, handoff_ack and ready, with `_busy` / `_closed` for those situations, then `_booking`
for a broker with a booking link (opener and ready only): `opener_closed_booking`, `handoff_ack_busy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from service.hours import Schedule, schedule_of
from service.models import Broker, utcnow
from service.sending.gates import quiet_hours_until

if TYPE_CHECKING:
    from service.context import AppContext

# Open but closing within this long is not "shortly": the caller hears of the next opening instead.
CLOSING_SOON = timedelta(minutes=15)
Kind = Literal["opener", "handoff_ack", "ready"]


class Step(StrEnum):
    shortly = "shortly"
    busy = "busy"
    closed = "closed"


@dataclass(frozen=True)
class NextStep:
    """The situation, and when a person will call back (UTC; None for `shortly`)."""

    step: Step
    callback_at: datetime | None = None


def _open_for_a_while(schedule: Schedule, at: datetime) -> bool:
    minutes = CLOSING_SOON.total_seconds() / 60
    return schedule.working_minutes_between(at, at + CLOSING_SOON) >= minutes


def situation(broker: Broker, busy_until: datetime | None, at: datetime) -> NextStep:
    """Where the broker stands at `at`: free now, busy until a working moment, or back at the next opening.

    Busy ends inside working hours (any time before closing): the call comes then. Free, the broker must be
    open for CLOSING_SOON more to promise "shortly"."""
    schedule = schedule_of(broker)
    if busy_until is not None and busy_until > at:
        if schedule.is_open(busy_until):
            return NextStep(Step.busy, busy_until)
        callback = schedule.next_opening(busy_until)
    elif _open_for_a_while(schedule, at):
        return NextStep(Step.shortly)
    else:
        callback = schedule.next_opening(at)
    return NextStep(Step.shortly) if callback is None else NextStep(Step.closed, callback)


def template_id(kind: Kind, step: Step, *, booking: bool) -> str:
    """opener / handoff_ack / ready, with the situation's suffix, then `_booking` (opener and ready only)."""
    base = kind if step is Step.shortly else f"{kind}_{step.value}"
    return f"{base}_booking" if booking and kind != "handoff_ack" else base


def _clock(moment: datetime) -> str:
    return f"{moment:%I:%M %p}".removeprefix("0")


def callback_values(callback_at: datetime, *, broker_tz: ZoneInfo, reader_tz: ZoneInfo,
                    now: datetime) -> dict[str, str]:
    """$callback_time and $callback_day for a call back at `callback_at`, as read at `now`."""
    zone, suffix = broker_tz, ""
    if callback_at.astimezone(reader_tz).utcoffset() != callback_at.astimezone(broker_tz).utcoffset():
        zone = reader_tz
        suffix = f" {callback_at.astimezone(reader_tz):%Z}"
    local = callback_at.astimezone(zone)
    days = (local.date() - now.astimezone(zone).date()).days
    if days <= 0:
        day = "today"
    elif days == 1:
        day = "tomorrow"
    elif days < 7:
        day = f"{local:%A}"
    else:
        day = f"{local:%A, %b} {local.day}"
    return {"callback_time": _clock(local) + suffix, "callback_day": day, "callback_day_es": _dia(days, local)}


_DIAS = ("lunes", "martes", "miércoles", "jueves", "viernes", "sabado", "domingo")  # GSM-7: no á
_MESES = ("ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sep", "oct", "nov", "dic")


def _dia(days: int, local: datetime) -> str:
    """$callback_day_es, what the Spanish templates say: "hoy", "mañana", "el lunes", "el lunes 4 de ene"."""
    if days <= 0:
        return "hoy"
    if days == 1:
        return "mañana"
    weekday = _DIAS[local.weekday()]
    return f"el {weekday}" if days < 7 else f"el {weekday} {local.day} de {_MESES[local.month - 1]}"


def busy_until(session: Session, broker: Broker) -> datetime | None:
    """The broker's "with a client until", as stored right now (one read; the in-memory copy is stale)."""
    return session.exec(select(Broker.busy_until).where(col(Broker.id) == broker.id)).first()


def choose(session: Session, ctx: AppContext, *, broker: Broker, kind: Kind, to: str, purpose: str,
           booking: bool = False, now: datetime | None = None) -> tuple[str, dict[str, str]]:
    """The template id for this text and the callback values it needs (none for today's wording)."""
    return choose_knowing(ctx, broker=broker, kind=kind, to=to, purpose=purpose, busy=busy_until(session, broker),
                          booking=booking, now=now)


def choose_knowing(ctx: AppContext, *, broker: Broker, kind: Kind, to: str, purpose: str, busy: datetime | None,
                   booking: bool = False, now: datetime | None = None) -> tuple[str, dict[str, str]]:
    """`choose` with the broker's "with a client until" read already (`busy`, as stored right now)."""
    now = now or utcnow()
    if broker.hours is None and (busy is None or busy <= now):
        return template_id(kind, Step.shortly, booking=booking), {}
    read_at = quiet_hours_until(ctx, broker=broker, to=to, purpose=purpose, now=now)
    found = situation(broker, busy, read_at)
    chosen = template_id(kind, found.step, booking=booking)
    if found.callback_at is None:
        return chosen, {}
    from service.sending.recipient import recipient_zone  # lazy: phonenumbers: ~0.1 s to import

    reader = recipient_zone(to, broker.timezone).tz
    return chosen, callback_values(found.callback_at, broker_tz=ZoneInfo(broker.timezone), reader_tz=reader,
                                   now=read_at)
