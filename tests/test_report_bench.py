"""The report benchmark's data (benchmarks/report_data.py) at a tiny size: the report finds exactly the cases,
calls and outcomes the generator wrote, in every window the benchmark times, with the same two statements."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event
from sqlmodel import Session, col, select

from benchmarks.report_data import BROKERS, Chunk, fill, generate
from service.cases import hour_of_week
from service.db import create_schema, make_engine
from service.models import Broker
from service.report import build_report, percentile
from service.sufficiency import SufficiencyRule

END = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LEADS = 300
# (days back from END, brokers: None for all five, else the 1-based broker ids): the benchmark's windows.
WINDOWS = [(30, None), (90, None), (30, (1,)), (90, (1,)), (7, (3, 5))]


@pytest.fixture
def generated(database_url):
    """A fresh database holding LEADS generated leads: (engine, chunks as written, truths)."""
    engine = make_engine(database_url)
    create_schema(engine)
    chunks: list[Chunk] = list(generate(LEADS, end=END))
    truths, counts = fill(engine, iter(chunks))
    assert counts["leadcase"] == LEADS == len(truths)
    yield engine, chunks, truths
    engine.dispose()


def _brokers(engine, ids):
    with Session(engine, expire_on_commit=False) as session:
        rows = session.exec(select(Broker).order_by(col(Broker.id))).all()
    return [b for b in rows if ids is None or b.id in ids]


def _report(engine, brokers, since):
    with Session(engine) as session:
        return build_report(session, brokers=brokers, since=since, until=END, rule=SufficiencyRule(), now=END)


@pytest.mark.parametrize(("days", "ids"), WINDOWS, ids=["30d-all", "90d-all", "30d-busiest", "90d-busiest", "7d-two"])
def test_report_generated_leads_figures_match_generator(generated, days, ids) -> None:
    engine, chunks, truths = generated
    brokers = _brokers(engine, ids)
    since = END - timedelta(days=days)
    chosen = {b.id for b in brokers}
    cases = [t for t in truths if t.broker in chosen and since <= t.missed_at < END]
    calls = [r for c in chunks for r in c.rows["callevent"] if r["broker_id"] in chosen
             and since <= r["created_at"] < END]
    report = _report(engine, brokers, since)

    assert cases, "the window must hold some generated cases"
    assert report["missed_call_leads"] == len(cases)
    assert report["calls"] == sum(r["kind"] == "voice" for r in calls)
    assert report["missed_calls"] == sum(bool(r["missed"]) for r in calls)
    assert report["answered_calls"] == sum(r["kind"] == "dial-status" and r["missed"] is False for r in calls)
    assert report["openers_queued"] == sum(t.opener is not None for t in cases)
    assert report["openers_sent"] == sum(t.opener == "sent" for t in cases)
    assert report["openers_delivered"] == sum(t.delivery == "delivered" for t in cases)
    assert report["openers_failed"] == sum(t.opener == "failed" or t.delivery in ("failed", "undelivered")
                                           for t in cases)
    replies = sorted(t.reply_seconds for t in cases if t.reply_seconds is not None)
    assert report["replied"] == len(replies)
    assert report["time_to_first_reply_seconds"] == {"p50": percentile(replies, 50), "p90": percentile(replies, 90)}
    assert report["replied"] + report["no_reply"] + report["awaiting_reply"] == report["openers_sent"]
    assert report["handoffs"] == sum(t.handoff_reasons is not None for t in cases)
    assert report["handoff_reasons"] == dict(sorted(Counter(r for t in cases for r in t.handoff_reasons or []).items()))
    reached = sorted(t.human_seconds for t in cases if t.human_seconds is not None)
    assert report["reached_by_human"] == len(reached)
    assert report["time_to_human_seconds"] == {"p50": percentile(reached, 50), "p90": percentile(reached, 90)}
    assert report["reached_within"]["15m"] == round(sum(s <= 900 for s in reached) / len(cases), 4)
    assert [b["count"] for b in report["time_to_human_buckets"]] == [
        sum(s <= 300 for s in reached), sum(300 < s <= 900 for s in reached), sum(900 < s <= 3600 for s in reached),
        sum(3600 < s <= 4 * 3600 for s in reached), sum(4 * 3600 < s <= 86400 for s in reached),
        sum(s > 86400 for s in reached), len(cases) - len(reached)]
    assert report["repeat_calls_before_contact"] == sum(t.calls - 1 for t in cases)
    assert report["called_again_before_contact"] == sum(t.calls > 1 for t in cases)
    assert report["outcomes"] == dict(sorted(Counter(t.outcome for t in cases if t.outcome).items()))
    assert report["opted_out"] == sum(t.opted_out for t in cases)
    with_hours = sum(BROKERS[t.broker - 1][4] is not None for t in cases)
    assert report["missed_in_hours"] + report["missed_out_of_hours"] == with_hours
    by_hour = Counter(hour_of_week(t.missed_at, BROKERS[t.broker - 1][2]) for t in cases)
    assert {h["day"] + str(h["hour"]): h["missed_calls"] for h in report["by_hour"] if h["missed_calls"]} == {
        ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[h // 24] + str(h % 24): n for h, n in by_hour.items()}


def test_report_statements_same_two_any_window(generated) -> None:
    """Two queries whatever the window and however many cases it holds (SQLite's BEGIN aside)."""
    engine, _chunks, _truths = generated
    sent: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:
        if not statement.startswith("BEGIN"):
            sent.append(statement)

    counts = []
    for days, ids in WINDOWS:
        brokers = _brokers(engine, ids)
        event.listen(engine, "before_cursor_execute", seen)
        try:
            _report(engine, brokers, END - timedelta(days=days))
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        counts.append(len(sent))
        sent.clear()
    assert counts == [2] * len(WINDOWS)
