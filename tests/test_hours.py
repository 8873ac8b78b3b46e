"""Working hours: open or closed, the next opening, working minutes and the moment N working minutes elapse.

Instants are written with their UTC offset, so each row says the wall time and the offset the zone really has
that day (PDT -07:00 / PST -08:00, EDT -04:00 / EST -05:00): a row across a DST change shows the hour it moves.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from service.brokers import BrokerConfig
from service.hours import (
    HoursConfig,
    is_open,
    next_opening,
    working_deadline,
    working_minutes_between,
)
from service.models import Broker

LA, NY = "America/Los_Angeles", "America/New_York"
WEEK = {day: "09:00-17:30" for day in ("mon", "tue", "wed", "thu", "fri")}
OFFICE = {**WEEK, "sat": "10:00-13:00", "holidays": ["2026-12-25"]}
ROUND_THE_CLOCK_SUNDAY = {"sun": "00:00-24:00"}
LATE_FRIDAY = {"fri": "18:00-24:00", "sat": "00:00-02:00"}  # open across midnight, in two ranges


def broker(hours: dict[str, Any] | None = OFFICE, tz: str = LA) -> Broker:
    """A stored broker row as the service reads it: `hours` is the JSON dump of the brokers file's `hours:`."""
    return Broker(twilio_number="+14155550100", name="Dana", brokerage="Summit", nmls_id="1", forward_to="+14155550111",
                  timezone=tz, hours=hours)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


@pytest.mark.parametrize(
    ("hours", "tz", "moment", "expected"),
    [
        (OFFICE, LA, "2026-06-10T10:00-07:00", True),  # a Wednesday morning
        (OFFICE, LA, "2026-06-10T08:59-07:00", False),  # before hours
        (OFFICE, LA, "2026-06-10T09:00-07:00", True),  # the opening minute
        (OFFICE, LA, "2026-06-10T17:29:59-07:00", True),
        (OFFICE, LA, "2026-06-10T17:30-07:00", False),  # closes at 17:30 sharp
        (OFFICE, LA, "2026-06-13T12:00-07:00", True),  # Saturday's short range
        (OFFICE, LA, "2026-06-13T13:30-07:00", False),
        (OFFICE, LA, "2026-06-14T12:00-07:00", False),  # Sunday: not listed, closed
        (OFFICE, LA, "2026-12-25T10:00-08:00", False),  # a holiday Friday
        (OFFICE, LA, "2026-12-24T10:00-08:00", True),
        (OFFICE, LA, "2026-03-06T08:30-08:00", False),  # Friday before DST: 16:30 UTC is 08:30 PST
        (OFFICE, LA, "2026-03-09T09:30-07:00", True),  # Monday after: 16:30 UTC is 09:30 PDT
        (OFFICE, NY, "2026-10-30T09:30-04:00", True),  # Friday before the fall-back: 13:30 UTC is 09:30 EDT
        (OFFICE, NY, "2026-11-02T08:30-05:00", False),  # Monday after: 13:30 UTC is 08:30 EST
        (OFFICE, NY, "2026-11-02T09:00-05:00", True),
        (LATE_FRIDAY, LA, "2026-06-12T23:59:59-07:00", True),  # a range ending 24:00
        (LATE_FRIDAY, LA, "2026-06-13T00:00-07:00", True),  # and the next day's from 00:00
        (LATE_FRIDAY, LA, "2026-06-13T02:00-07:00", False),
        (None, LA, "2026-06-14T03:00-07:00", True),  # no hours: always open
    ],
)
def test_is_open_broker_by_hours(hours: dict[str, Any] | None, tz: str, moment: str, expected: bool) -> None:
    assert is_open(broker(hours, tz), at(moment)) is expected


@pytest.mark.parametrize(
    ("hours", "tz", "moment", "expected"),
    [
        (OFFICE, LA, "2026-06-10T18:00-07:00", "2026-06-11T09:00-07:00"),  # after hours: tomorrow morning
        (OFFICE, LA, "2026-06-10T07:00-07:00", "2026-06-10T09:00-07:00"),  # before hours: this morning
        (OFFICE, LA, "2026-06-10T10:00-07:00", "2026-06-11T09:00-07:00"),  # open: the opening after this one
        (OFFICE, LA, "2026-06-12T18:00-07:00", "2026-06-13T10:00-07:00"),  # Friday evening: Saturday 10:00
        (OFFICE, LA, "2026-06-13T14:00-07:00", "2026-06-15T09:00-07:00"),  # Saturday afternoon: Monday
        (OFFICE, LA, "2026-12-24T18:00-08:00", "2026-12-26T10:00-08:00"),  # the holiday is skipped
        (OFFICE, LA, "2026-03-07T14:00-08:00", "2026-03-09T09:00-07:00"),  # across spring-forward: 16:00 UTC
        (WEEK, NY, "2026-10-30T18:00-04:00", "2026-11-02T09:00-05:00"),  # across fall-back: 14:00 UTC
        (None, LA, "2026-06-10T18:00-07:00", None),  # always open: no next opening to wait for
    ],
)
def test_find_next_opening_after_moment(hours: dict[str, Any] | None, tz: str, moment: str, expected: str | None) -> None:
    assert next_opening(broker(hours, tz), at(moment)) == (at(expected) if expected else None)


@pytest.mark.parametrize(
    ("hours", "tz", "start", "end", "minutes"),
    [
        (OFFICE, LA, "2026-06-10T10:00-07:00", "2026-06-10T10:15-07:00", 15),
        (OFFICE, LA, "2026-06-10T17:20-07:00", "2026-06-11T09:10-07:00", 20),  # the night does not count
        (OFFICE, LA, "2026-06-12T17:00-07:00", "2026-06-15T09:30-07:00", 30 + 180 + 30),  # a weekend
        (OFFICE, LA, "2026-12-24T17:00-08:00", "2026-12-26T10:30-08:00", 60),  # a holiday
        (OFFICE, LA, "2026-06-10T07:00-07:00", "2026-06-10T08:00-07:00", 0),  # before hours
        (OFFICE, LA, "2026-06-10T11:00-07:00", "2026-06-10T10:00-07:00", 0),  # end before start
        (OFFICE, LA, "2026-03-06T17:00-08:00", "2026-03-09T09:30-07:00", 30 + 180 + 30),  # over spring-forward
        (OFFICE, NY, "2026-10-30T17:00-04:00", "2026-11-02T09:30-05:00", 30 + 180 + 30),  # over fall-back
        (ROUND_THE_CLOCK_SUNDAY, LA, "2026-03-08T00:00-08:00", "2026-03-09T00:00-07:00", 23 * 60),  # 23-hour day
        (ROUND_THE_CLOCK_SUNDAY, NY, "2026-11-01T00:00-04:00", "2026-11-02T00:00-05:00", 25 * 60),  # 25-hour day
        ({"sun": "01:00-04:00"}, LA, "2026-03-08T00:00-08:00", "2026-03-08T12:00-07:00", 120),  # spans the jump
        ({"sun": "02:30-04:00"}, LA, "2026-03-08T00:00-08:00", "2026-03-08T12:00-07:00", 60),  # opens at the jump
        ({"sun": "01:00-03:00"}, NY, "2026-11-01T00:00-04:00", "2026-11-01T12:00-05:00", 180),  # spans the repeat
        (LATE_FRIDAY, LA, "2026-06-12T23:00-07:00", "2026-06-13T01:00-07:00", 120),  # across midnight, to 24:00
        (None, LA, "2026-06-10T22:00-07:00", "2026-06-10T23:00-07:00", 60),  # always open: wall-clock minutes
    ],
)
def test_count_working_minutes_between(hours: dict[str, Any] | None, tz: str, start: str, end: str,
                                       minutes: int) -> None:
    assert working_minutes_between(broker(hours, tz), at(start), at(end)) == minutes


@pytest.mark.parametrize(
    ("hours", "tz", "start", "minutes", "expected"),
    [
        (OFFICE, LA, "2026-06-10T10:00-07:00", 15, "2026-06-10T10:15-07:00"),  # inside hours
        (OFFICE, LA, "2026-06-10T17:20-07:00", 15, "2026-06-11T09:05-07:00"),  # the timer pauses overnight
        (OFFICE, LA, "2026-06-10T07:00-07:00", 15, "2026-06-10T09:15-07:00"),  # starts at the opening
        (OFFICE, LA, "2026-06-12T17:20-07:00", 15, "2026-06-13T10:05-07:00"),  # Friday evening -> Saturday
        (OFFICE, LA, "2026-06-13T12:55-07:00", 15, "2026-06-15T09:10-07:00"),  # Saturday -> Monday
        (OFFICE, LA, "2026-12-24T17:25-08:00", 15, "2026-12-26T10:10-08:00"),  # over the holiday
        (OFFICE, LA, "2026-03-07T12:55-08:00", 15, "2026-03-09T09:10-07:00"),  # over spring-forward
        (OFFICE, NY, "2026-10-31T12:50-04:00", 30, "2026-11-02T09:20-05:00"),  # over fall-back
        (ROUND_THE_CLOCK_SUNDAY, LA, "2026-03-08T01:30-08:00", 60, "2026-03-08T03:30-07:00"),  # the lost hour
        (ROUND_THE_CLOCK_SUNDAY, NY, "2026-11-01T00:30-04:00", 60, "2026-11-01T01:30-04:00"),  # first 01:30
        (ROUND_THE_CLOCK_SUNDAY, NY, "2026-11-01T00:30-04:00", 120, "2026-11-01T01:30-05:00"),  # second 01:30
        (LATE_FRIDAY, LA, "2026-06-12T23:50-07:00", 20, "2026-06-13T00:10-07:00"),  # across a 24:00 end
        (OFFICE, LA, "2026-06-10T10:00-07:00", 0, "2026-06-10T10:00-07:00"),
        (None, LA, "2026-06-10T22:00-07:00", 15, "2026-06-10T22:15-07:00"),  # always open: the wall clock
    ],
)
def test_find_working_deadline_after_minutes(hours: dict[str, Any] | None, tz: str, start: str, minutes: int,
                                             expected: str) -> None:
    """The moment N working minutes elapse; counting back from it gives N again."""
    b = broker(hours, tz)
    deadline = working_deadline(b, at(start), minutes)
    assert deadline == at(expected)
    assert working_minutes_between(b, at(start), deadline) == minutes


def test_find_working_deadline_never_reached_none() -> None:
    """A schedule that has closed for good (holidays every day it would open) gives no deadline."""
    every_monday = [f"2026-{m:02d}-{d:02d}" for m in range(1, 13) for d in range(1, 32)
                    if _is_monday(2026, m, d)] + [f"2027-{m:02d}-{d:02d}" for m in range(1, 13) for d in range(1, 32)
                                                   if _is_monday(2027, m, d)]
    b = broker({"mon": "09:00-17:00", "holidays": every_monday})
    assert working_deadline(b, at("2026-01-01T10:00-08:00"), 15) is None
    assert next_opening(b, at("2026-01-01T10:00-08:00")) is None
    assert is_open(b, at("2026-01-05T10:00-08:00")) is False


def _is_monday(year: int, month: int, day: int) -> bool:
    try:
        return datetime(year, month, day).weekday() == 0  # noqa: DTZ001 - a calendar date, no instant
    except ValueError:
        return False


def test_read_hours_of_broker_config_like_stored_row() -> None:
    """The brokers file's model and the stored row (its JSON dump) answer alike."""
    config = BrokerConfig.model_validate({
        "twilio_number": "+14155550100", "name": "Dana", "brokerage": "Summit", "nmls_id": "1",
        "forward_to": "+14155550111", "timezone": NY, "hours": OFFICE,
    })
    row = broker(config.model_dump(mode="json")["hours"], NY)
    moment = at("2026-11-02T08:30-05:00")
    assert next_opening(config, moment) == next_opening(row, moment) == at("2026-11-02T09:00-05:00")


def test_refuse_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        is_open(broker(), datetime(2026, 6, 10, 10))  # noqa: DTZ001 - the mistake under test


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ({"mon": "17:00-09:00"}, "opens after it closes"),
        ({"mon": "09:00-24:30"}, "24:30"),
        ({"mon": "9:00-17:00"}, "not an opening range"),
        ({"monday": "09:00-17:00"}, "monday"),
        ({"holidays": ["2026-12-25"]}, "no day opens"),
        ({"mon": "09:00-17:00", "holidays": ["Christmas"]}, "holidays"),
    ],
)
def test_refuse_hours_config_invalid(hours: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        HoursConfig.model_validate(hours)
