"""Unworked handoffs: re-alerted after handoff_sla_minutes of working time, then sent to the backup phones.

Dana (Los Angeles) works Monday to Friday 09:00-17:30, Friday 2026-06-12 a holiday, with a 15-minute SLA and a
backup phone; Marcus has no hours (always open) and no backup. The clock fixture starts on Wednesday
2026-06-10 at 14:00 PDT; `sweep(now=...)` is given the moments to look at.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import Session, col, select

from service import handoff_sla
from service.access import Principal
from service.db import session_scope
from service.models import Lead, LeadEvent, OutboundMessage
from service.takeover import human_acted, locked_lead
from tests.api_helpers import MARCUS_CELL, TEAM_YAML, missed, reply
from tests.helpers import BROKER, BROKER2, BROKER_ALERT, BROKER_CELL, CALLER, sent_templates

BACKUP = "+14155550130"
NY_CALLER = "+12125550199"
HOURS = '{mon: "09:00-17:30", tue: "09:00-17:30", wed: "09:00-17:30", thu: "09:00-17:30", fri: "09:00-17:30", ' \
        'holidays: ["2026-06-12"]}'
REMINDERS = ("alert_unworked", "alert_unworked_backup")


@pytest.fixture
def brokers_file(tmp_path: Path) -> Path:
    path = tmp_path / "brokers.yaml"
    path.write_text(TEAM_YAML.replace(
        "    call_screening: true\n",
        f'    call_screening: true\n    hours: {HOURS}\n    handoff_sla_minutes: 15\n    backup_alert_to: ["{BACKUP}"]\n',
        1))
    return path


def hand_off(client, post, ctx, caller: str = CALLER, to: str = BROKER) -> Lead:
    """A missed call, then a reply only a person can answer: the lead is handed off."""
    missed(client, post, caller=caller, to=to)
    reply(client, post, "can I lock my rate today?", caller=caller, to=to)
    lead = the_lead(ctx, caller)
    assert lead.state == "handoff"
    return lead


def the_lead(ctx, caller: str = CALLER) -> Lead:
    with Session(ctx.engine) as session:
        return session.exec(select(Lead).where(Lead.phone == caller)).one()


def reminders(ctx) -> list[OutboundMessage]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(OutboundMessage).where(col(OutboundMessage.template_id).in_(REMINDERS))
                                 .order_by(col(OutboundMessage.id))).all())


def sla_events(ctx) -> list[dict[str, object]]:
    with Session(ctx.engine) as session:
        return [e.data for e in session.exec(select(LeadEvent).where(LeadEvent.kind == "sla_alert")
                                             .order_by(col(LeadEvent.id)))]


def act(ctx, caller: str = CALLER) -> None:
    """Dana texts the borrower from the console (a human action works the handoff)."""
    principal = Principal(kind="session", name="Dana Whitfield", broker_ids=frozenset({ctx.broker_for(BROKER).id}),
                          phone=BROKER_CELL)
    with session_scope(ctx.engine) as session:
        lead = locked_lead(session, the_lead(ctx, caller).id)
        human_acted(session, ctx, broker=ctx.broker_for(BROKER), lead=lead, principal=principal, how="text")


def test_realert_then_alert_backup_inside_hours(client, post, ctx) -> None:
    start = hand_off(client, post, ctx).handoff_at
    assert handoff_sla.sweep(ctx, now=start + timedelta(minutes=14, seconds=59)) == []
    ids = handoff_sla.sweep(ctx, now=start + timedelta(minutes=15))
    [first] = reminders(ctx)
    assert ids == [first.id]
    assert (first.template_id, first.to_phone) == ("alert_unworked", BROKER_ALERT)
    assert f"{CALLER} has waited 15 min for a call (asked about a rate lock)" in first.body
    assert the_lead(ctx).sla_alerts == 1
    assert handoff_sla.sweep(ctx, now=start + timedelta(minutes=29)) == []  # once per level
    handoff_sla.sweep(ctx, now=start + timedelta(minutes=30))
    again, backup = reminders(ctx)
    assert again.id == first.id
    assert (backup.template_id, backup.to_phone) == ("alert_unworked_backup", BACKUP)
    assert "backup for Dana Whitfield's team" in backup.body
    assert "has waited 30 min" in backup.body
    assert the_lead(ctx).sla_alerts == 2
    assert handoff_sla.sweep(ctx, now=start + timedelta(hours=5)) == []  # nothing after the backup
    assert [(e["level"], e["to"]) for e in sla_events(ctx)] == [(1, "alert_to"), (2, "backup_alert_to")]


@pytest.mark.parametrize(
    ("handoff", "not_yet", "due", "waited", "in_hours"),
    [
        # Wednesday 17:25 PDT: five minutes tonight, ten tomorrow from 09:00.
        ("2026-06-11T00:25:00+00:00", "2026-06-11T16:09:59+00:00", "2026-06-11T16:10:01+00:00", "15 h 45 min", True),
        # Thursday 17:25 PDT before the Friday holiday and the weekend: Monday 09:10.
        ("2026-06-12T00:25:00+00:00", "2026-06-15T16:09:59+00:00", "2026-06-15T16:10:01+00:00", "3 d 15 h", True),
        # Saturday noon: the timer starts on Monday at 09:00, however late on Saturday the handoff lands.
        ("2026-06-13T19:00:00+00:00", "2026-06-15T16:14:59+00:00", "2026-06-15T16:15:01+00:00", "1 d 21 h", False),
    ],
    ids=["overnight", "holiday and weekend", "from the weekend"],
)
def test_pause_sla_timer_outside_hours(client, post, ctx, clock, handoff: str, not_yet: str, due: str,
                                       waited: str, in_hours: bool) -> None:
    clock.move_to(handoff)
    lead = hand_off(client, post, ctx)
    # The clock ticks: on a loaded machine the handoff lands seconds after `handoff`. Inside hours the
    # timer starts then, so the times follow it; outside hours it starts at the next opening whatever the delay.
    assert lead.handoff_at is not None
    late = lead.handoff_at - datetime.fromisoformat(handoff)
    assert timedelta(0) <= late < timedelta(minutes=1)
    if not in_hours:
        late = timedelta(0)
    assert handoff_sla.sweep(ctx, now=datetime.fromisoformat(not_yet) + late) == []
    assert len(handoff_sla.sweep(ctx, now=datetime.fromisoformat(due) + late)) == 1
    [first] = reminders(ctx)
    assert f"has waited {waited} for a call" in first.body


def test_skip_reminder_when_handoff_worked_in_time(client, post, ctx) -> None:
    start = hand_off(client, post, ctx).handoff_at
    act(ctx)
    assert handoff_sla.sweep(ctx, now=start + timedelta(hours=2)) == []
    assert reminders(ctx) == []
    assert the_lead(ctx).sla_alerts == 0


def test_realert_new_handoff_after_person_acted(client, post, ctx, clock) -> None:
    """A person acted, then the borrower raised something new: that new handoff is unworked again."""
    hand_off(client, post, ctx)
    act(ctx)
    clock.move_to(datetime.fromisoformat("2026-06-10T21:10:00+00:00"))
    reply(client, post, "also our closing date is Friday")
    lead = the_lead(ctx)
    assert lead.handoff_worked_at is None
    assert lead.human_at < lead.handoff_at
    assert handoff_sla.sweep(ctx, now=lead.handoff_at + timedelta(minutes=14)) == []
    assert len(handoff_sla.sweep(ctx, now=lead.handoff_at + timedelta(minutes=15))) == 1
    assert "about a closing" in reminders(ctx)[0].body


def test_stop_at_realert_without_backup(client, post, ctx) -> None:
    start = hand_off(client, post, ctx, caller=NY_CALLER, to=BROKER2).handoff_at
    assert handoff_sla.sweep(ctx, now=start + timedelta(minutes=10)) == []
    handoff_sla.sweep(ctx, now=start + timedelta(minutes=15))  # Marcus has no hours: the wall clock
    assert handoff_sla.sweep(ctx, now=start + timedelta(minutes=30)) == []
    assert handoff_sla.sweep(ctx, now=start + timedelta(days=1)) == []
    [only] = reminders(ctx)
    assert (only.template_id, only.to_phone) == ("alert_unworked", MARCUS_CELL)
    assert the_lead(ctx, NY_CALLER).sla_alerts == 1


def test_realert_old_row_with_null_level(client, post, ctx) -> None:
    lead = hand_off(client, post, ctx)
    with session_scope(ctx.engine) as session:
        session.exec(update(Lead).where(col(Lead.id) == lead.id).values(sla_alerts=None))
    assert len(handoff_sla.sweep(ctx, now=lead.handoff_at + timedelta(minutes=15))) == 1
    assert the_lead(ctx).sla_alerts == 1


def test_realert_ready_lead_with_its_own_words(client, post, ctx) -> None:
    missed(client, post)
    for text in ("Purchase", "probably in 2 months", "no"):
        reply(client, post, text)
    lead = the_lead(ctx)
    assert lead.state == "ready"
    handoff_sla.sweep(ctx, now=lead.handoff_at + timedelta(minutes=15))
    [first] = reminders(ctx)
    assert "(answered every question, ready for a call)" in first.body


def test_send_one_reminder_when_two_processes_sweep_at_once(client, post, ctx, second_ctx) -> None:
    start = hand_off(client, post, ctx).handoff_at
    barrier = threading.Barrier(2)
    results: list[list[int]] = []

    def sweep(context) -> None:
        barrier.wait()
        results.append(handoff_sla.sweep(context, now=start + timedelta(minutes=15)))

    threads = [threading.Thread(target=sweep, args=(c,)) for c in (ctx, second_ctx)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(len(r) for r in results) == [0, 1]
    assert len(reminders(ctx)) == 1
    assert len(sla_events(ctx)) == 1


def test_send_reminder_from_worker_sweep(client, post, ctx, twilio_api, clock) -> None:
    start = hand_off(client, post, ctx).handoff_at
    clock.move_to(start + timedelta(minutes=16))
    client.app.state.worker.run_once()
    assert sent_templates(ctx, twilio_api["messages"], BROKER_ALERT)[-1] == "alert_unworked"
