"""Quiet hours in the recipient's local time: area codes, state windows, DST nights, openers, the file's examples."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from service.sending.policy import (
    QuietHours,
    QuietHoursExample,
    SendingPolicy,
    StateRule,
    Window,
    load_sending_policy,
    wall_time_to_utc,
)
from service.sending.recipient import recipient_zone

POLICIES = Path(__file__).resolve().parent.parent / "policies"
# Loaded at collection so every example in the file becomes its own test case.
_FILE_POLICY = load_sending_policy(POLICIES, check_examples=False)


@pytest.fixture(scope="module")
def policy() -> SendingPolicy:
    """The sending policy from the repository's policies/ directory, examples checked."""
    return load_sending_policy(POLICIES)


def _utc(tz: str, iso: str) -> datetime:
    """The UTC instant of a local wall time (first occurrence when repeated)."""
    local = datetime.fromisoformat(iso)
    return wall_time_to_utc(local.date(), local.time(), ZoneInfo(tz))


# ------------------------------------------------------------------------------------------ area codes


@pytest.mark.parametrize(
    ("phone", "state", "tz", "source"),
    [
        ("+13055550123", "FL", "America/New_York", "area_code"),  # Miami
        ("+14045550123", "GA", "America/New_York", "area_code"),  # Atlanta
        ("+12035550123", "CT", "America/New_York", "area_code"),  # Connecticut
        ("+12145550123", "TX", "America/Chicago", "area_code"),  # Dallas
        ("+19155550123", "TX", "America/Denver", "area_code"),  # El Paso
        ("+12125550123", "NY", "America/New_York", "area_code"),  # New York City
        ("+14155550123", "CA", "America/Los_Angeles", "area_code"),  # San Francisco
        ("+18085550123", "HI", "Pacific/Honolulu", "area_code"),  # Honolulu
        ("+19075550123", "AK", "America/Adak", "area_code"),  # Alaska: two zones, westernmost shown
        ("+12085550123", "ID", "America/Los_Angeles", "area_code"),  # Idaho: Mountain and Pacific
        ("+16025550123", "AZ", "America/Phoenix", "area_code"),  # Phoenix, no DST
        ("+18504321234", "FL", "America/Chicago", "area_code"),  # Pensacola, the Central part of 850
        ("+18502221234", "FL", "America/New_York", "area_code"),  # Tallahassee, the Eastern part of 850
        ("+12025550123", "DC", "America/New_York", "area_code"),  # Washington D.C.
        ("+12065550123", "WA", "America/Los_Angeles", "area_code"),  # Seattle ("Washington State")
        ("+17875550123", "PR", "America/Puerto_Rico", "area_code"),  # territory keeps its code
        ("+16135550123", None, "America/Toronto", "area_code"),  # Ottawa: known zone, no US state
        ("+442079460000", None, "Europe/London", "area_code"),  # abroad: its own zone, federal window only
        ("+18005550123", None, "America/Chicago", "fallback"),  # toll-free
        ("+18885550123", None, "America/Chicago", "fallback"),  # toll-free
        ("+19005550123", None, "America/Chicago", "fallback"),  # premium rate
        ("+15005550123", None, "America/Chicago", "fallback"),  # NANP personal (non-geographic)
        ("+13402221234", None, "America/Chicago", "fallback"),  # USVI: phonenumbers has no zone
        ("not-a-number", None, "America/Chicago", "fallback"),
    ],
)
def test_resolve_recipient_zone_from_area_code(phone: str, state: str | None, tz: str, source: str) -> None:
    zone = recipient_zone(phone, "America/Chicago")
    assert (zone.state, zone.tz.key, zone.source) == (state, tz, source)
    assert zone.tz in zone.zones


@pytest.mark.parametrize(
    ("phone", "zones"),
    [
        ("+19075550123", ["America/Adak", "America/Anchorage"]),
        ("+12085550123", ["America/Los_Angeles", "America/Boise"]),
        ("+13055550123", ["America/New_York"]),
        ("+18005550123", ["America/Denver"]),
    ],
)
def test_resolve_candidate_zones_westernmost_first(phone: str, zones: list[str]) -> None:
    assert [z.key for z in recipient_zone(phone, "America/Denver").zones] == zones


def test_reject_recipient_zone_with_unknown_fallback_tz() -> None:
    with pytest.raises(KeyError):
        recipient_zone("+18005550123", "Mars/Olympus_Mons")


# ------------------------------------------------------------------------------------------ state windows


@pytest.mark.parametrize(
    ("state", "local_date", "window"),
    [
        (None, date(2026, 6, 10), (time(8), time(21))),
        ("GA", date(2026, 6, 10), (time(8), time(21))),
        ("NY", date(2026, 6, 10), (time(8), time(21))),
        ("FL", date(2026, 6, 10), (time(8), time(20))),
        ("fl", date(2026, 6, 10), (time(8), time(20))),
        ("OK", date(2026, 6, 10), (time(8), time(20))),
        ("MD", date(2026, 6, 10), (time(8), time(20))),
        ("MS", date(2026, 6, 10), (time(8), time(20))),
        ("NJ", date(2026, 6, 10), (time(8), time(20))),
        ("MA", date(2026, 6, 10), (time(8), time(20))),
        ("CT", date(2026, 6, 10), (time(9), time(20))),
        ("TX", date(2026, 6, 10), (time(9), time(21))),  # Wednesday
        ("TX", date(2026, 6, 13), (time(9), time(21))),  # Saturday
        ("TX", date(2026, 6, 14), (time(12), time(21))),  # Sunday
        ("FL", date(2026, 6, 14), (time(8), time(20))),  # Sunday: no FL override
    ],
)
def test_window_for_state_is_most_restrictive(
    policy: SendingPolicy, state: str | None, local_date: date, window: tuple[time, time]
) -> None:
    assert policy.quiet_hours.window_for(state, local_date) == window


@pytest.mark.parametrize(
    ("phone", "tz", "local", "allowed"),
    [
        ("+13055550123", "America/New_York", "2026-06-10T20:30", False),  # FL 8:30 p.m.
        ("+13055550123", "America/New_York", "2026-06-10T19:59", True),
        ("+14045550123", "America/New_York", "2026-06-10T20:30", True),  # GA 8:30 p.m.
        ("+14045550123", "America/New_York", "2026-06-10T21:00", False),
        ("+14045550123", "America/New_York", "2026-06-10T07:59", False),
        ("+12035550123", "America/New_York", "2026-06-10T08:30", False),  # CT 8:30 a.m.
        ("+12035550123", "America/New_York", "2026-06-10T09:00", True),
        ("+12035550123", "America/New_York", "2026-06-10T20:00", False),
        ("+12145550123", "America/Chicago", "2026-06-14T11:00", False),  # TX Sunday 11 a.m.
        ("+12145550123", "America/Chicago", "2026-06-14T12:00", True),
        ("+12145550123", "America/Chicago", "2026-06-13T11:00", True),  # TX Saturday 11 a.m.
        ("+12145550123", "America/Chicago", "2026-06-13T08:30", False),
        ("+12125550123", "America/New_York", "2026-06-10T20:30", True),  # NYC
        ("+14155550123", "America/Los_Angeles", "2026-06-10T07:59", False),  # SF
        ("+14155550123", "America/Los_Angeles", "2026-06-10T08:00", True),
        ("+18085550123", "Pacific/Honolulu", "2026-06-10T20:59", True),  # Honolulu
        ("+18085550123", "Pacific/Honolulu", "2026-06-10T21:00", False),
        ("+19075550123", "America/Anchorage", "2026-06-10T08:30", False),  # 7:30 in Adak: wait
        ("+19075550123", "America/Anchorage", "2026-06-10T09:00", True),
        ("+19075550123", "America/Anchorage", "2026-06-10T20:59", True),  # 19:59 in Adak
        ("+12085550123", "America/Boise", "2026-06-10T08:30", False),  # 7:30 Pacific
        ("+12085550123", "America/Boise", "2026-06-10T20:30", True),  # 19:30 Pacific
        ("+18005550123", "America/Denver", "2026-06-10T07:30", False),  # toll-free: broker's zone
        ("+18005550123", "America/Denver", "2026-06-10T08:00", True),
        ("+442079460000", "Europe/London", "2026-06-10T07:00", False),
    ],
)
def test_allow_send_by_recipient_local_time(
    policy: SendingPolicy, phone: str, tz: str, local: str, allowed: bool
) -> None:
    now = _utc(tz, local)
    assert (policy.next_allowed_send(phone, now, "America/Denver", is_opener=False) == now) is allowed
    assert (policy.quiet_hours_reason(phone, now, "America/Denver") is None) is allowed


@pytest.mark.parametrize(
    ("phone", "tz", "local", "reason"),
    [
        ("+13055550123", "America/New_York", "2026-06-10T20:30", "quiet hours in FL until 08:00 local (America/New_York)"),
        ("+12145550123", "America/Chicago", "2026-06-14T11:00", "quiet hours in TX until 12:00 local (America/Chicago)"),
        ("+12035550123", "America/New_York", "2026-06-10T07:00", "quiet hours in CT until 09:00 local (America/New_York)"),
        ("+18005550123", "America/Denver", "2026-06-10T23:00", "quiet hours in America/Denver until 08:00 local (broker's timezone)"),
        ("+14045550123", "America/New_York", "2026-06-10T12:00", None),
    ],
)  # fmt: skip
def test_explain_quiet_hours_reason(
    policy: SendingPolicy, phone: str, tz: str, local: str, reason: str | None
) -> None:
    assert policy.quiet_hours_reason(phone, _utc(tz, local), "America/Denver") == reason


def test_reject_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _FILE_POLICY.next_allowed_send("+13055550123", datetime(2026, 6, 10, 12), "UTC", is_opener=False)  # noqa: DTZ001


# ------------------------------------------------------------------------------------------ DST nights


@pytest.mark.parametrize(
    ("phone", "tz", "now_utc", "opens_utc", "opens_local"),
    [
        # Spring forward, Sunday 2026-03-08: 8:00 is already daylight time (UTC-4/-5/-7).
        ("+12125550123", "America/New_York", "2026-03-08T06:30", "2026-03-08T12:00", "2026-03-08T08:00"),
        ("+12125550123", "America/New_York", "2026-03-08T02:00", "2026-03-08T12:00", "2026-03-08T08:00"),
        ("+13125550123", "America/Chicago", "2026-03-08T07:30", "2026-03-08T13:00", "2026-03-08T08:00"),
        ("+14155550123", "America/Los_Angeles", "2026-03-08T09:30", "2026-03-08T15:00", "2026-03-08T08:00"),
        # ...the same night for stricter states: CT opens at 9, TX on a Sunday at noon.
        ("+12035550123", "America/New_York", "2026-03-08T06:30", "2026-03-08T13:00", "2026-03-08T09:00"),
        ("+12145550123", "America/Chicago", "2026-03-08T07:30", "2026-03-08T17:00", "2026-03-08T12:00"),
        # Fall back, Sunday 2026-11-01: 1:xx happens twice, 8:00 is standard time (UTC-5/-6/-8).
        ("+12125550123", "America/New_York", "2026-11-01T05:30", "2026-11-01T13:00", "2026-11-01T08:00"),
        ("+12125550123", "America/New_York", "2026-11-01T06:30", "2026-11-01T13:00", "2026-11-01T08:00"),
        ("+13125550123", "America/Chicago", "2026-11-01T07:30", "2026-11-01T14:00", "2026-11-01T08:00"),
        ("+14155550123", "America/Los_Angeles", "2026-11-01T09:30", "2026-11-01T16:00", "2026-11-01T08:00"),
        ("+12145550123", "America/Chicago", "2026-11-01T07:30", "2026-11-01T18:00", "2026-11-01T12:00"),
        # The evening before each change: the window opens the next morning in the new offset.
        ("+12125550123", "America/New_York", "2026-03-08T02:30", "2026-03-08T12:00", "2026-03-08T08:00"),
        ("+12125550123", "America/New_York", "2026-11-01T02:30", "2026-11-01T13:00", "2026-11-01T08:00"),
        # After 9 p.m. on the change day: the next morning, on the new offset.
        ("+12125550123", "America/New_York", "2026-03-09T01:30", "2026-03-09T12:00", "2026-03-09T08:00"),
        ("+12125550123", "America/New_York", "2026-11-02T02:30", "2026-11-02T13:00", "2026-11-02T08:00"),
        # Arizona keeps MST all year; Denver moves.
        ("+16025550123", "America/Phoenix", "2026-07-01T12:00", "2026-07-01T15:00", "2026-07-01T08:00"),
        ("+16025550123", "America/Phoenix", "2026-01-15T12:00", "2026-01-15T15:00", "2026-01-15T08:00"),
        ("+13035550123", "America/Denver", "2026-07-01T12:00", "2026-07-01T14:00", "2026-07-01T08:00"),
        ("+13035550123", "America/Denver", "2026-01-15T12:00", "2026-01-15T15:00", "2026-01-15T08:00"),
    ],
)
def test_next_allowed_send_across_dst_lands_on_window_start(
    policy: SendingPolicy, phone: str, tz: str, now_utc: str, opens_utc: str, opens_local: str
) -> None:
    now = datetime.fromisoformat(now_utc).replace(tzinfo=UTC)
    opens = policy.next_allowed_send(phone, now, "UTC", is_opener=False)
    assert opens == datetime.fromisoformat(opens_utc).replace(tzinfo=UTC)
    assert opens.tzinfo == UTC
    assert opens.astimezone(ZoneInfo(tz)).replace(tzinfo=None) == datetime.fromisoformat(opens_local)


@pytest.mark.parametrize(
    ("local_date", "wall", "tz", "expected_utc"),
    [
        (date(2026, 6, 10), time(8), "America/New_York", "2026-06-10T12:00"),
        (date(2026, 3, 8), time(2, 30), "America/New_York", "2026-03-08T07:00"),  # skipped: the jump
        (date(2026, 3, 8), time(2), "America/New_York", "2026-03-08T07:00"),  # skipped: the jump
        (date(2026, 3, 8), time(3), "America/New_York", "2026-03-08T07:00"),
        (date(2026, 3, 8), time(2, 30), "America/Los_Angeles", "2026-03-08T10:00"),
        (date(2026, 11, 1), time(1, 30), "America/New_York", "2026-11-01T05:30"),  # repeated: first one
        (date(2026, 11, 1), time(1, 30), "America/Chicago", "2026-11-01T06:30"),
        (date(2026, 11, 1), time(2), "America/New_York", "2026-11-01T07:00"),
    ],
)
def test_convert_wall_time_to_utc_around_dst(
    local_date: date, wall: time, tz: str, expected_utc: str
) -> None:
    expected = datetime.fromisoformat(expected_utc).replace(tzinfo=UTC)
    assert wall_time_to_utc(local_date, wall, ZoneInfo(tz)) == expected


@pytest.mark.parametrize(
    ("start", "now_utc", "opens_utc"),
    [
        (time(2, 30), "2026-03-08T06:00", "2026-03-08T07:00"),  # opens at a time that does not exist
        (time(2, 30), "2026-03-08T07:10", "2026-03-08T07:10"),  # already past it: open now
        (time(1, 30), "2026-11-01T05:00", "2026-11-01T05:30"),  # opens at a time that happens twice
        (time(1, 30), "2026-11-01T06:10", "2026-11-01T06:10"),  # inside the repeated hour: open
    ],
)
def test_next_open_when_window_starts_in_dst_transition(start: time, now_utc: str, opens_utc: str) -> None:
    quiet = QuietHours(federal=Window(start=start, end=time(21)), states={}, opener_is_reply=True)
    where = recipient_zone("+12125550123", "UTC")
    now = datetime.fromisoformat(now_utc).replace(tzinfo=UTC)
    assert quiet.next_open(where, now) == datetime.fromisoformat(opens_utc).replace(tzinfo=UTC)


def test_next_open_skips_closed_day() -> None:
    sunday_closed = StateRule(
        citation="test", window=Window(start=time(9), end=time(20)), days={"sunday": "closed"}
    )
    quiet = QuietHours(
        federal=Window(start=time(8), end=time(21)), states={"MS": sunday_closed}, opener_is_reply=True
    )
    assert quiet.window_for("MS", date(2026, 6, 14)) is None
    where = recipient_zone("+16015550123", "UTC")  # Jackson, MS
    saturday_night = _utc("America/Chicago", "2026-06-13T20:30")
    assert quiet.next_open(where, saturday_night) == _utc("America/Chicago", "2026-06-15T09:00")


def test_explain_quiet_hours_reason_names_day_when_not_tomorrow() -> None:
    sunday_closed = StateRule(
        citation="test", window=Window(start=time(9), end=time(20)), days={"sunday": "closed"}
    )
    quiet = QuietHours(
        federal=Window(start=time(8), end=time(21)), states={"MS": sunday_closed}, opener_is_reply=True
    )
    policy = dataclasses.replace(_FILE_POLICY, quiet_hours=quiet)
    reason = policy.quiet_hours_reason("+16015550123", _utc("America/Chicago", "2026-06-13T20:30"), "UTC")
    assert reason == "quiet hours in MS until 09:00 local on Mon 2026-06-15 (America/Chicago)"


# ------------------------------------------------------------------------------------------ openers


@pytest.mark.parametrize(
    ("opener_is_reply", "is_opener", "sends_now"),
    [
        (True, True, True),  # the reply to the caller's own call goes at once, even at 2 a.m.
        (True, False, False),  # a later automated text waits
        (False, True, False),  # configured to hold openers too
        (False, False, False),
    ],
)
def test_send_opener_at_night_per_opener_is_reply(
    opener_is_reply: bool, is_opener: bool, sends_now: bool
) -> None:
    quiet = dataclasses.replace(_FILE_POLICY.quiet_hours, opener_is_reply=opener_is_reply)
    policy = dataclasses.replace(_FILE_POLICY, quiet_hours=quiet)
    two_am = _utc("America/New_York", "2026-06-10T02:00")
    result = policy.next_allowed_send("+13055550123", two_am, "UTC", is_opener=is_opener)
    expected = two_am if sends_now else _utc("America/New_York", "2026-06-10T08:00")
    assert result == expected


def test_opener_is_reply_defaults_true_in_file() -> None:
    assert _FILE_POLICY.quiet_hours.opener_is_reply is True


# ------------------------------------------------------------------------------------------ the file's examples


@pytest.mark.parametrize(
    "example", _FILE_POLICY.examples, ids=[f"quiet-hours::{e.label}" for e in _FILE_POLICY.examples]
)
def test_run_quiet_hours_example_as_declared(example: QuietHoursExample) -> None:
    assert _FILE_POLICY.check_example(example) is None


def test_report_no_example_findings_for_repository_policy() -> None:
    assert _FILE_POLICY.example_findings() == []
