"""Report dicts as service.report.build_report returns them (the contract of issue 12), for the renderers' tests:
a month with enough missed calls for a verdict, and a period with no calls at all (every share and time null).
"""

from __future__ import annotations

from typing import Any

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# (day, hour) -> (missed calls, of them reached by a person within 60 min, median minutes to a person)
BUSY_HOURS: dict[tuple[str, int], tuple[int, int, int]] = {
    ("mon", 9): (3, 3, 4), ("mon", 12): (6, 2, 38), ("mon", 17): (2, 2, 9),
    ("tue", 10): (3, 3, 6), ("tue", 12): (4, 2, 52), ("tue", 15): (2, 2, 8),
    ("wed", 11): (3, 3, 5), ("wed", 14): (2, 2, 12), ("wed", 19): (2, 1, 70),
    ("thu", 9): (2, 2, 3), ("thu", 12): (3, 2, 21), ("thu", 16): (2, 2, 9),
    ("fri", 10): (3, 3, 7), ("fri", 13): (2, 2, 14), ("fri", 18): (2, 1, 95),
    ("sat", 10): (3, 1, 130), ("sun", 20): (2, 1, 240),
}


def by_hour(busy: dict[tuple[str, int], tuple[int, int, int]]) -> list[dict[str, Any]]:
    rows = []
    for day in DAYS:
        for hour in range(24):
            missed, reached, p50 = busy.get((day, hour), (0, 0, 0))
            rows.append({"day": day, "hour": hour, "missed_calls": missed, "reached_within_60m": reached,
                         "time_to_human_p50": p50 * 60 if missed else None})
    return rows


def sample_report() -> dict[str, Any]:
    """November 2026 for one broker: 46 missed calls from 40 leads, 32 reached within the hour: enough."""
    return {
        "since": "2026-11-01T00:00:00-04:00",
        "until": "2026-12-01T00:00:00-05:00",
        "generated_at": "2026-12-02T09:14:05-05:00",
        "brokers": [{"number": "+15551230000", "name": "Dana Broker", "timezone": "America/New_York"}],
        "calls": 120, "answered_calls": 74, "missed_calls": 46, "missed_share": 0.3833,
        "missed_call_leads": 40, "missed_in_hours": 31, "missed_out_of_hours": 9,
        "openers_queued": 38, "openers_sent": 38, "openers_delivered": 37, "openers_failed": 1,
        "replied": 22, "reply_rate": 0.5789, "time_to_first_reply_seconds": {"p50": 190, "p90": 1500},
        "handoffs": 20, "handoff_reasons": {"rate_lock": 8, "asked_for_person": 9, "complaint": 3},
        "reached_by_human": 34, "reached_share": 0.85, "time_to_human_seconds": {"p50": 540, "p90": 2520},
        "reached_within": {"5m": 0.35, "15m": 0.65, "60m": 0.8},
        "repeat_calls_before_contact": 6, "called_again_before_contact": 4, "called_again_share": 0.1,
        "outcomes": {"reached": 12, "appointment": 5, "application": 2, "not_a_fit": 3},
        "appointments": 5, "opted_out": 1, "no_reply": 14, "awaiting_reply": 2,
        "funnel": [
            {"step": "missed", "label": "Missed-call leads", "count": 40},
            {"step": "texted", "label": "Texted", "count": 38},
            {"step": "replied", "label": "Replied", "count": 22},
            {"step": "reached", "label": "Reached by a person", "count": 34},
            {"step": "appointment", "label": "Appointment", "count": 5},
        ],
        "time_to_human_buckets": [
            {"label": "within 5 min", "count": 14}, {"label": "5-15 min", "count": 12},
            {"label": "15-60 min", "count": 6}, {"label": "1-4 h", "count": 1}, {"label": "4-24 h", "count": 1},
            {"label": "over 24 h", "count": 0}, {"label": "not reached", "count": 6},
        ],
        "by_hour": by_hour(BUSY_HOURS),
        "verdict": {
            "enough": True,
            "reason": "Enough: 32 of 40 missed-call leads (80%) were reached by a person within 60 minutes, "
                      "and 4 of 40 (10%) called again before anyone reached them.",
            "windows": [
                {"day": "mon", "hour": 12, "label": "Mon 12:00-13:00", "missed_calls": 6, "not_reached": 4},
                {"day": "tue", "hour": 12, "label": "Tue 12:00-13:00", "missed_calls": 4, "not_reached": 2},
                {"day": "sat", "hour": 10, "label": "Sat 10:00-11:00", "missed_calls": 3, "not_reached": 2},
            ],
            "rule": {"min_missed_call_leads": 20, "reached_within_minutes": 60, "min_reached_share": 0.8,
                     "max_called_again_share": 0.15},
            "policy_version": "abc123",
        },
    }


def not_enough_report() -> dict[str, Any]:
    """The sample month with fewer leads reached in time: the verdict says no."""
    report = sample_report()
    report["reached_within"] = {"5m": 0.2, "15m": 0.4, "60m": 0.55}
    report["verdict"] = {
        **report["verdict"], "enough": False,
        "reason": "Not enough: 22 of 40 missed-call leads (55%) were reached by a person within 60 minutes; "
                  "the rule asks for 80%.",
    }
    return report


def empty_report() -> dict[str, Any]:
    """A period with no calls: every count zero, every share and time null, no verdict."""
    return {
        "since": "2026-11-01T00:00:00-04:00",
        "until": "2026-12-01T00:00:00-05:00",
        "generated_at": "2026-12-02T09:14:05-05:00",
        "brokers": [],
        "calls": 0, "answered_calls": 0, "missed_calls": 0, "missed_share": None,
        "missed_call_leads": 0, "missed_in_hours": 0, "missed_out_of_hours": 0,
        "openers_queued": 0, "openers_sent": 0, "openers_delivered": 0, "openers_failed": 0,
        "replied": 0, "reply_rate": None, "time_to_first_reply_seconds": {"p50": None, "p90": None},
        "handoffs": 0, "handoff_reasons": {},
        "reached_by_human": 0, "reached_share": None, "time_to_human_seconds": {"p50": None, "p90": None},
        "reached_within": {"5m": None, "15m": None, "60m": None},
        "repeat_calls_before_contact": 0, "called_again_before_contact": 0, "called_again_share": None,
        "outcomes": {}, "appointments": 0, "opted_out": 0, "no_reply": 0, "awaiting_reply": 0,
        "funnel": [
            {"step": "missed", "label": "Missed-call leads", "count": 0},
            {"step": "texted", "label": "Texted", "count": 0},
            {"step": "replied", "label": "Replied", "count": 0},
            {"step": "reached", "label": "Reached by a person", "count": 0},
            {"step": "appointment", "label": "Appointment", "count": 0},
        ],
        "time_to_human_buckets": [
            {"label": label, "count": 0}
            for label in ("within 5 min", "5-15 min", "15-60 min", "1-4 h", "4-24 h", "over 24 h", "not reached")
        ],
        "by_hour": by_hour({}),
        "verdict": {
            "enough": None,
            "reason": "Not enough data: 0 missed-call leads in this period; the rule needs at least 20.",
            "windows": [],
            "rule": {"min_missed_call_leads": 20, "reached_within_minutes": 60, "min_reached_share": 0.8,
                     "max_called_again_share": 0.15},
            "policy_version": "abc123",
        },
    }
