"""A broker's working hours: the brokers-file schema and the working-time arithmetic on it.

```yaml
hours:
  mon: "09:00-17:30"
  tue: "09:00-17:30"
  sat: "10:00-13:00"      # a day that is not listed is closed
  holidays: ["2026-12-25", "2027-01-01"]
```

Times are in the broker's own time zone (`timezone:`). A range must open before it closes (no overnight ranges);
"24:00" closes at midnight, so "00:00-24:00" on every day is open around the clock. At least one day must open.

The functions below (`is_open`, `next_opening`, `working_minutes_between`, `working_deadline`) are pure: they
take the broker (a Broker row, whose `hours` is the JSON dump of HoursConfig, or a BrokerConfig) and aware
datetimes, and answer in real elapsed time, so they stay right on the days the clocks change: a range on a
spring-forward day is an hour shorter when it spans the jump, and a range that starts at a skipped wall time
opens at the jump (the first moment the clock reads that time or later; a repeated time is its first
occurrence). A holiday is closed all day.

A broker without `hours:` is always open: the unworked-handoff timer (service.handoff_sla) then runs on the wall
clock, and the opener makes no promise beyond today's "I'll follow up" (service.next_step).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
# How far ahead an opening is looked for: a year of holidays and then some. Past it, "never opens".
SEARCH_DAYS = 400


def parse_range(value: str) -> tuple[time, time]:
    """"09:00-17:30" -> (09:00, 17:30); "24:00" closes at midnight. ValueError names the expected form."""
    match = _RANGE.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        msg = f"{value!r} is not an opening range like \"09:00-17:30\""
        raise ValueError(msg)
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h2 == 24 and m2:
        msg = f"{value!r}: a day ends at 24:00"
        raise ValueError(msg)
    start = time(h1, m1)
    end = time.max if h2 == 24 else time(h2, m2)
    if end <= start:
        msg = f"{value!r}: opens after it closes (ranges cannot run past midnight)"
        raise ValueError(msg)
    return start, end


class HoursConfig(BaseModel):
    """Opening range per weekday (absent = closed) and holiday dates (closed all day)."""

    model_config = ConfigDict(extra="forbid")

    mon: str | None = None
    tue: str | None = None
    wed: str | None = None
    thu: str | None = None
    fri: str | None = None
    sat: str | None = None
    sun: str | None = None
    holidays: list[date] = Field(default_factory=list)

    @field_validator(*DAYS)
    @classmethod
    def _check_range(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parse_range(value)
        return value.strip()

    @model_validator(mode="after")
    def _opens_some_day(self) -> HoursConfig:
        if not any(getattr(self, day) for day in DAYS):
            msg = "no day opens: give at least one range like mon: \"09:00-17:30\" (or leave hours: out)"
            raise ValueError(msg)
        return self

    def ranges(self) -> dict[int, tuple[time, time]]:
        """Weekday number (Monday 0) -> opening range, for the days that open."""
        out: dict[int, tuple[time, time]] = {}
        for number, day in enumerate(DAYS):
            value = getattr(self, day)
            if value:
                out[number] = parse_range(value)
        return out


def wall_time_to_utc(local_date: date, wall: time, tz: ZoneInfo) -> datetime:
    """The first UTC instant at which the wall clock in `tz` reads `wall` (or later) on `local_date`.

    Normal times map one-to-one. A time repeated by a fall-back change maps to its first occurrence. A time
    skipped by a spring-forward change maps to the instant of the jump (02:30 on 2026-03-08 in New York is
    03:00 EDT, 07:00 UTC): the first moment the clock shows that time or later.
    """
    naive = datetime.combine(local_date, wall)
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first
    second = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = sorted((first, second))  # the jump lies between the two readings of the skipped time

    def reached(instant: datetime) -> bool:
        return instant.astimezone(tz).replace(tzinfo=None) >= naive

    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if reached(mid):
            hi = mid
        else:
            lo = mid
    return lo if reached(lo) else hi


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        msg = f"{name} must be timezone-aware"
        raise ValueError(msg)
    return value.astimezone(UTC)


@dataclass(frozen=True)
class Schedule:
    """Working hours resolved for arithmetic: the zone, the range of each weekday, the holidays. No ranges at
    all means always open (a broker without `hours:`)."""

    zone: ZoneInfo
    ranges: Mapping[int, tuple[time, time]]
    holidays: frozenset[date]

    @property
    def always_open(self) -> bool:
        return not self.ranges

    def _day_range(self, day: date) -> tuple[datetime, datetime] | None:
        """The UTC opening range of one local date, or None when closed that day."""
        hours = self.ranges.get(day.weekday())
        if hours is None or day in self.holidays:
            return None
        start, end = hours
        opens = wall_time_to_utc(day, start, self.zone)
        closes = (wall_time_to_utc(day + timedelta(days=1), time(0), self.zone) if end == time.max
                  else wall_time_to_utc(day, end, self.zone))
        return (opens, closes) if closes > opens else None

    def openings(self, since: datetime) -> Iterator[tuple[datetime, datetime]]:
        """The UTC opening ranges that end after `since`, in order, for SEARCH_DAYS local days."""
        first = since.astimezone(self.zone).date()
        for offset in range(SEARCH_DAYS + 1):
            found = self._day_range(first + timedelta(days=offset))
            if found is not None and found[1] > since:
                yield found

    def is_open(self, at: datetime) -> bool:
        at = _aware(at, "at")
        if self.always_open:
            return True
        opens, closes = next(self.openings(at), (None, None))
        return opens is not None and closes is not None and opens <= at < closes

    def next_opening(self, at: datetime) -> datetime | None:
        """When the next opening range begins, strictly after `at` (so, when open, the next one after this);
        None when always open, or when nothing opens within SEARCH_DAYS."""
        at = _aware(at, "at")
        if self.always_open:
            return None
        return next((opens for opens, _ in self.openings(at) if opens > at), None)

    def working_minutes_between(self, start: datetime, end: datetime) -> float:
        """Minutes of opening time between `start` and `end` (0 when `end` is not after `start`)."""
        start, end = _aware(start, "start"), _aware(end, "end")
        if end <= start:
            return 0.0
        if self.always_open:
            return (end - start).total_seconds() / 60
        total = timedelta()
        for opens, closes in self.openings(start):
            if opens >= end:
                break
            total += min(closes, end) - max(opens, start)
        return total.total_seconds() / 60

    def working_deadline(self, start: datetime, minutes: float) -> datetime | None:
        """The moment `minutes` of opening time after `start` have elapsed (`start` itself for 0 minutes); None
        when the schedule does not open long enough within SEARCH_DAYS."""
        start = _aware(start, "start")
        left = timedelta(minutes=max(minutes, 0))
        if self.always_open or not left:
            return start + left
        for opens, closes in self.openings(start):
            begin = max(opens, start)
            if begin + left <= closes:
                return begin + left
            left -= closes - begin
        return None


@lru_cache(maxsize=256)
def _schedule(zone: str, hours_json: str) -> Schedule:
    raw = json.loads(hours_json)
    if raw is None:
        return Schedule(ZoneInfo(zone), {}, frozenset())
    config = HoursConfig.model_validate(raw)
    return Schedule(ZoneInfo(zone), config.ranges(), frozenset(config.holidays))


def schedule_of(broker: Any) -> Schedule:
    """The schedule of a Broker row (`hours` as stored JSON) or a BrokerConfig (`hours` as HoursConfig)."""
    hours = broker.hours
    if isinstance(hours, HoursConfig):
        hours = hours.model_dump(mode="json")
    return _schedule(broker.timezone, json.dumps(hours, sort_keys=True, default=str))


def is_open(broker: Any, at: datetime) -> bool:
    """Whether `at` falls inside the broker's working hours (always, without `hours:`)."""
    return schedule_of(broker).is_open(at)


def next_opening(broker: Any, at: datetime) -> datetime | None:
    """When the broker's next opening range begins after `at` (UTC); None without `hours:`."""
    return schedule_of(broker).next_opening(at)


def working_minutes_between(broker: Any, start: datetime, end: datetime) -> float:
    """Working minutes between two moments (the wall-clock minutes without `hours:`)."""
    return schedule_of(broker).working_minutes_between(start, end)


def working_deadline(broker: Any, start: datetime, minutes: float) -> datetime | None:
    """The moment `minutes` working minutes after `start` elapse (UTC); None if the hours never get there."""
    return schedule_of(broker).working_deadline(start, minutes)
