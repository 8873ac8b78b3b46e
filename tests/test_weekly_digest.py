"""The weekly digest: Monday from 08:00 broker time, once per broker and week, last week's numbers and the link."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest
from sqlmodel import Session, select

from service import weekly_digest
from service.models import OutboundMessage
from service.worker import Worker
from tests.api_helpers import TEAM_YAML
from tests.helpers import BROKER_ALERT, PUBLIC_URL, sent_texts
from tests.report_history import LA, History


@pytest.fixture
def brokers_file(tmp_path):
    path = tmp_path / "brokers.yaml"
    path.write_text(TEAM_YAML)
    return path


def _digests(ctx) -> list[OutboundMessage]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(OutboundMessage).where(OutboundMessage.template_id == "weekly_digest")))


def _week_with_calls(ctx, client, post, clock) -> None:
    history = History(ctx, client, post, clock)
    history.at("2026-06-08T10:00").call("+14155554001")
    history.at("2026-06-08T10:07").outcome("+14155554001", "reached")
    history.at("2026-06-10T16:00").call("+14155554002")


def test_digest_monday_morning_sends_last_week_once(ctx, client, post, clock, twilio_api) -> None:
    _week_with_calls(ctx, client, post, clock)
    clock.move_to(datetime(2026, 6, 15, 8, 5, tzinfo=LA))
    Worker(ctx).run_once()
    Worker(ctx).run_once()  # a second sweep (or a second process) sends nothing more
    [digest] = _digests(ctx)
    assert digest.to_phone == BROKER_ALERT
    [body] = [t["Body"] for t in sent_texts(twilio_api.routes["messages"]) if "week of" in t["Body"]]
    assert body.startswith("textback week of Jun 8: 2 missed callers, 2 texted, 0 replied, 1 reached (median 7 min)")
    assert "Too few calls to judge" in body
    assert f"{PUBLIC_URL}/console/report?broker=%2B14155550100&since=2026-06-08&until=2026-06-14" in body


@pytest.mark.parametrize("wall", ["2026-06-15T07:59", "2026-06-14T23:00"])
def test_digest_before_monday_eight_not_sent(ctx, client, post, clock, wall: str) -> None:
    _week_with_calls(ctx, client, post, clock)
    assert weekly_digest.sweep(ctx, now=datetime.fromisoformat(wall).replace(tzinfo=LA)) == []
    assert _digests(ctx) == []


def test_digest_week_without_calls_sends_nothing(ctx, client) -> None:
    assert weekly_digest.sweep(ctx, now=datetime(2026, 6, 15, 9, 0, tzinfo=LA)) == []
    assert _digests(ctx) == []


def test_digest_turned_off_by_setting(ctx, client, post, clock) -> None:
    _week_with_calls(ctx, client, post, clock)
    off = replace(ctx, settings=ctx.settings.model_copy(update={"weekly_digest": False}))
    assert weekly_digest.sweep(off, now=datetime(2026, 6, 15, 9, 0, tzinfo=LA)) == []
    assert _digests(ctx) == []
