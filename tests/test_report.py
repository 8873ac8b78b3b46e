"""The sufficiency report's figures, computed from scripted histories run through the real webhooks and API at
frozen wall-clock times, and checked exactly."""

from __future__ import annotations

import pytest

from service.report import percentile
from tests.api_helpers import TEAM_YAML
from tests.report_history import History

A, B, C, D, E, F, G, H, I = (f"+1415555{n:04d}" for n in range(201, 210))  # noqa: E741 - callers A..I


@pytest.fixture
def brokers_file(tmp_path):
    path = tmp_path / "brokers.yaml"
    path.write_text(TEAM_YAML)
    return path


def _week(history: History) -> None:
    """Dana's week of Monday 2026-06-08 (Los Angeles), one lead per kind of story."""
    h = history
    h.at("2026-06-07T14:00").call(H)  # before the window: not counted, whatever happens in it
    # A: missed, replies, texted back after 10 min, an appointment.
    h.at("2026-06-08T09:00").call(A)
    h.at("2026-06-08T09:01").delivery(A, "delivered")
    h.at("2026-06-08T09:04").reply(A, "We're buying a house in about 2 months")
    h.at("2026-06-08T09:10").text(A)
    h.at("2026-06-08T09:30").outcome(A, "appointment")
    h.at("2026-06-08T09:30").text(H)  # H (missed the day before the window) reached inside it
    # B: the opener bounces (the number cannot take texts), B calls again before anyone reached them, and the
    # broker records reaching them 90 min after the first call.
    h.at("2026-06-08T12:00").call(B)
    h.at("2026-06-08T12:01").delivery(B, "undelivered", 30003)
    h.at("2026-06-08T12:20").call(B)
    h.at("2026-06-08T13:30").outcome(B, "reached")
    # C: asks about a rate (a handoff), calls again and the broker answers (a repeat call, and the contact).
    h.at("2026-06-09T17:30").call(C)
    h.at("2026-06-09T17:31").delivery(C, "delivered")
    h.at("2026-06-09T17:33").reply(C, "What's your rate on a 30 year refinance right now?")
    h.at("2026-06-09T17:40").call(C, answered=True)
    # D: STOP two minutes after the opener.
    h.at("2026-06-10T08:00").call(D)
    h.at("2026-06-10T08:02").reply(D, "STOP")
    # E: never replies; the team records no_response (not a contact).
    h.at("2026-06-11T10:00").call(E)
    h.at("2026-06-13T10:00").outcome(E, "no_response")
    # F: reached (3 min) before replying (20 min); a call after the contact is not a repeat.
    h.at("2026-06-12T11:00").call(F)
    h.at("2026-06-12T11:00").delivery(F, "delivered")
    h.at("2026-06-12T11:03").text(F)
    h.at("2026-06-12T11:20").reply(F, "ok call me after 5")
    h.at("2026-06-12T11:30").call(F)
    # G: a caller the broker answers at once: a call, not a missed-call lead.
    h.at("2026-06-12T14:00").call(G, answered=True)
    # I: missed on the window's last day, reached (an outcome of reached) after the window ended.
    h.at("2026-06-14T14:00").call(I)
    h.at("2026-06-15T08:00").outcome(I, "reached")


def test_report_figures_scripted_week_exact(ctx, client, post, clock) -> None:
    """Every figure of one scripted week, by hand: 11 calls, 7 missed-call leads, and what came of each."""
    history = History(ctx, client, post, clock)
    _week(history)
    report = history.at("2026-06-20T12:00").report(since="2026-06-08", until="2026-06-14", broker="+14155550100")

    assert report["since"] == "2026-06-08T00:00:00-07:00"
    assert report["until"] == "2026-06-15T00:00:00-07:00"
    assert (report["calls"], report["missed_calls"], report["answered_calls"]) == (11, 9, 2)
    assert report["missed_share"] == round(9 / 11, 4)
    assert report["missed_call_leads"] == 7
    assert (report["missed_in_hours"], report["missed_out_of_hours"]) == (0, 0)  # Dana has no hours set
    assert (report["openers_queued"], report["openers_sent"]) == (7, 7)
    assert (report["openers_delivered"], report["openers_failed"]) == (3, 1)
    assert report["replied"] == 4  # A, C, D (STOP is a reply), F
    assert report["reply_rate"] == round(4 / 7, 4)
    assert report["time_to_first_reply_seconds"] == {"p50": 180, "p90": 1200}  # of 120, 180, 240, 1200
    assert report["handoffs"] == 2  # C asked for a rate, F asked for a call
    assert report["handoff_reasons"] == {"human_request": 1, "rate_or_terms": 1}
    assert report["reached_by_human"] == 5  # A text, B outcome, C answered call, F text, I outcome
    assert report["reached_share"] == round(5 / 7, 4)
    assert report["reached_how"] == {"answered_call": 1, "reached": 2, "text": 2}
    assert report["reached_by"] == {"+14155550111": 5}  # Dana, at her cell
    assert report["time_to_human_seconds"] == {"p50": 600, "p90": 64800}  # of 180, 600, 600, 5400, 64800
    assert report["reached_within"] == {"5m": round(1 / 7, 4), "15m": round(3 / 7, 4), "60m": round(3 / 7, 4)}
    assert report["repeat_calls_before_contact"] == 2  # B's second call, C's answered one; not F's
    assert report["called_again_before_contact"] == 2
    assert report["called_again_share"] == round(2 / 7, 4)
    assert report["outcomes"] == {"appointment": 1, "no_response": 1, "reached": 2}
    assert report["appointments"] == 1
    assert report["opted_out"] == 1
    assert (report["no_reply"], report["awaiting_reply"]) == (3, 0)  # B, E, I
    assert [step["count"] for step in report["funnel"]] == [7, 7, 4, 5, 1]
    assert [b["count"] for b in report["time_to_human_buckets"]] == [1, 2, 0, 1, 1, 0, 2]
    assert report["verdict"]["enough"] is None
    assert report["verdict"]["reason"].startswith("Not enough data: 7 missed-call leads")


def test_report_by_hour_broker_zone_counts_each_case_once(ctx, client, post, clock) -> None:
    history = History(ctx, client, post, clock)
    _week(history)
    report = history.at("2026-06-20T12:00").report(since="2026-06-08", until="2026-06-14", broker="+14155550100")
    busy = {(h["day"], h["hour"]): h for h in report["by_hour"] if h["missed_calls"]}
    assert len(report["by_hour"]) == 168
    assert set(busy) == {("mon", 9), ("mon", 12), ("tue", 17), ("wed", 8), ("thu", 10), ("fri", 11), ("sun", 14)}
    assert busy["mon", 12] == {"day": "mon", "hour": 12, "missed_calls": 1, "reached_within_60m": 0,
                               "time_to_human_p50": 5400}
    assert busy["tue", 17]["time_to_human_p50"] == 600
    assert busy["thu", 10]["time_to_human_p50"] is None


def test_report_repeat_call_before_contact_counted_after_not(ctx, client, post, clock) -> None:
    history = History(ctx, client, post, clock)
    history.at("2026-06-08T09:00").call(A)
    history.at("2026-06-08T09:05").call(A)
    history.at("2026-06-08T09:06").call(A, answered=True)
    history.at("2026-06-08T09:30").call(A)  # after the answered call: a person had reached them
    report = history.at("2026-06-08T10:00").report(since="2026-06-08", until="2026-06-08")
    assert report["missed_call_leads"] == 1
    assert (report["repeat_calls_before_contact"], report["called_again_before_contact"]) == (2, 1)
    assert report["reached_by_human"] == 1
    assert report["time_to_human_seconds"] == {"p50": 360, "p90": 360}


def test_report_leaves_leads_too_recent_to_judge_out_of_reached_within(ctx, client, post, clock) -> None:
    """A lead missed minutes ago has not failed "reached within 60 min" yet: each share counts a lead once it is
    that old, or once a person reached it; the young ones are counted apart, never as not reached."""
    history = History(ctx, client, post, clock)
    history.at("2026-06-08T09:00").call(A)
    history.at("2026-06-08T09:03").text(A)  # reached in 3 min
    history.at("2026-06-08T09:50").call(B)  # 10 min old at 10:00
    history.at("2026-06-08T09:58").call(C)  # 2 min old
    report = history.at("2026-06-08T10:00").report(since="2026-06-08", until="2026-06-08")
    assert report["missed_call_leads"] == 3
    assert report["reached_within_judged"] == {"5m": 2, "15m": 1, "60m": 1}  # A always; B once 5 min old
    assert report["reached_within"] == {"5m": 0.5, "15m": 1.0, "60m": 1.0}
    assert report["too_recent_to_judge"] == 2  # B and C, against the rule's 60 minutes
    assert report["verdict"]["windows"] == []  # nobody has gone unreached for 60 minutes
    later = history.at("2026-06-08T11:30").report(since="2026-06-08", until="2026-06-08")
    assert later["reached_within"] == {"5m": round(1 / 3, 4), "15m": round(1 / 3, 4), "60m": round(1 / 3, 4)}
    assert later["too_recent_to_judge"] == 0


def test_report_reads_dates_in_each_brokers_own_zone_across_zones(ctx, client, post, clock) -> None:
    """An admin's report over brokers in Los Angeles and New York: "2026-12-04" is each broker's own day, so a
    call at 17:00 in Los Angeles and one at 23:30 in New York (both 5 December in UTC) are in it, and the next
    day's 00:30 in New York is not."""
    from zoneinfo import ZoneInfo

    from tests.api_helpers import ADMIN, signed_in
    from tests.helpers import BROKER2

    dana = History(ctx, client, post, clock)
    marcus = History(ctx, client, post, clock, broker=BROKER2, zone=ZoneInfo("America/New_York"))
    dana.at("2026-12-04T17:00").call(A)
    marcus.at("2026-12-04T23:30").call(B)
    marcus.at("2026-12-05T00:30").call(C)
    clock.move_to("2026-12-06T12:00:00+00:00")
    response = client.get("/api/report", params={"since": "2026-12-04", "until": "2026-12-04"},
                          headers=signed_in(ctx, ADMIN))
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["missed_call_leads"], report["calls"]) == (2, 2)


def test_report_no_calls_all_zero_and_null(ctx, client, post, clock) -> None:
    report = History(ctx, client, post, clock).at("2026-06-08T10:00").report()
    assert (report["calls"], report["missed_calls"], report["missed_call_leads"]) == (0, 0, 0)
    for key in ("missed_share", "reply_rate", "reached_share", "called_again_share"):
        assert report[key] is None, key
    assert report["time_to_human_seconds"] == {"p50": None, "p90": None}
    assert report["reached_within"] == {"5m": None, "15m": None, "60m": None}
    assert report["verdict"]["enough"] is None
    assert report["verdict"]["windows"] == []


def test_report_dst_hour_of_week_is_wall_clock(ctx, client, post, clock) -> None:
    """Calls at 01:30 on the morning the clocks go back (twice) and 03:30 the morning they go forward."""
    history = History(ctx, client, post, clock)
    clock.move_to("2026-11-01T08:30:00+00:00")  # 01:30 PDT
    history.call(A)
    clock.move_to("2026-11-01T09:30:00+00:00")  # 01:30 PST: the same wall hour, an hour later
    history.call(B)
    clock.move_to("2026-03-08T10:30:00+00:00")  # 03:30 PDT (02:00-03:00 never happened)
    history.call(C)
    clock.move_to("2026-11-10T12:00:00+00:00")
    report = history.report(since="2026-03-01", until="2026-11-02")
    busy = {(h["day"], h["hour"]): h["missed_calls"] for h in report["by_hour"] if h["missed_calls"]}
    assert busy == {("sun", 1): 2, ("sun", 3): 1}


@pytest.mark.parametrize(("values", "p", "expected"), [
    ([], 50, None),
    ([7], 50, 7),
    ([7], 90, 7),
    ([1, 2], 50, 1),
    ([1, 2], 90, 2),
    ([1, 2, 3, 4], 50, 2),
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90, 9),
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 90, 10),
])
def test_percentile_nearest_rank(values: list[int], p: int, expected: int | None) -> None:
    assert percentile(values, p) == expected


def test_rebuild_cases_from_history_same_report(ctx, client, post, clock) -> None:
    """A database from before cases (and migrations) existed: create_schema makes them from the lead events,
    figure for figure."""
    from sqlalchemy import text

    from service.db import create_schema

    history = History(ctx, client, post, clock)
    _week(history)
    history.at("2026-06-20T12:00")
    before = history.report(since="2026-06-08", until="2026-06-14")
    with ctx.engine.begin() as conn:
        conn.execute(text("DROP TABLE leadcase"))
        conn.execute(text("DROP TABLE alembic_version"))
    create_schema(ctx.engine)
    after = history.report(since="2026-06-08", until="2026-06-14")
    before.pop("generated_at"), after.pop("generated_at")
    assert after == before
    assert after["missed_call_leads"] == 7


def test_report_missed_in_and_out_of_working_hours(ctx, client, post, clock, tmp_path) -> None:
    """Dana works 09:00-17:00 on weekdays: a call at 10:00 is missed in hours, at 18:30 and on Saturday out."""
    weekdays = dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "09:00-17:00")
    ctx.broker_for("+14155550100").hours = weekdays  # as a brokers file with `hours:` loads it
    history = History(ctx, client, post, clock)
    history.at("2026-06-08T10:00").call(A)
    history.at("2026-06-08T18:30").call(B)
    history.at("2026-06-13T11:00").call(C)
    report = history.at("2026-06-15T10:00").report(since="2026-06-08", until="2026-06-14")
    assert (report["missed_in_hours"], report["missed_out_of_hours"]) == (1, 2)


def test_forget_number_keeps_counts_cut_loose(ctx, client, post, clock) -> None:
    """After `privacy forget`, the report still counts the case, but nothing ties it to the number: the same
    caller calling again is a new missed-call lead, not a repeat call."""
    from sqlmodel import Session, select

    from service.models import LeadCase
    from service.privacy import forget_number

    history = History(ctx, client, post, clock)
    history.at("2026-06-08T10:00").call(A)
    counts = forget_number(ctx.engine, A)
    assert counts["cases_anonymized"] == 1
    with Session(ctx.engine) as session:
        [case] = session.exec(select(LeadCase)).all()
    assert (case.lead_id, case.call_sid) == (None, None)
    history.at("2026-06-08T11:00").call(A)
    report = history.report(since="2026-06-08", until="2026-06-08")
    assert (report["missed_call_leads"], report["repeat_calls_before_contact"]) == (2, 0)
