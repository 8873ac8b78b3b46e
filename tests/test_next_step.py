"""The honest next step: what a missed caller is told about when a person will call (shortly, after a client,
at the next opening), in the opener, the handoff acknowledgement and the ready text.

Dana (Los Angeles) works Monday to Friday 09:00-17:30 with Friday 2026-06-12 a holiday; Marcus (New York) has
no `hours:` and a booking link. The clock fixture starts on Wednesday 2026-06-10 at 14:00 PDT.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, select

from service.access import Principal
from service.broker_status import set_busy
from service.db import session_scope
from service.models import Broker, OutboundMessage
from service.next_step import Step, callback_values, situation, template_id
from tests.api_helpers import MARCUS_CELL, TEAM_YAML, missed, reply, signed_in
from tests.helpers import BROKER, BROKER2, BROKER_CELL, CALLER

NY_CALLER = "+12125550199"
WEEK = '{mon: "09:00-17:30", tue: "09:00-17:30", wed: "09:00-17:30", thu: "09:00-17:30", fri: "09:00-17:30", ' \
       'holidays: ["2026-06-12"]}'
WEEK_JSON = {d: "09:00-17:30" for d in ("mon", "tue", "wed", "thu", "fri")} | {"holidays": ["2026-06-12"]}
LA, NY = ZoneInfo("America/Los_Angeles"), ZoneInfo("America/New_York")


@pytest.fixture
def brokers_file(tmp_path: Path) -> Path:
    path = tmp_path / "brokers.yaml"
    path.write_text(TEAM_YAML.replace("    call_screening: true\n", f"    call_screening: true\n    hours: {WEEK}\n", 1))
    return path


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def dana(hours: dict[str, object] | None = WEEK_JSON) -> Broker:
    return Broker(twilio_number=BROKER, name="Dana", brokerage="Summit", nmls_id="1", forward_to=BROKER_CELL,
                  timezone="America/Los_Angeles", hours=hours)


# ------------------------------------------------------------------------------------------ the rules, pure

@pytest.mark.parametrize(
    ("hours", "busy_until", "moment", "step", "callback"),
    [
        (WEEK_JSON, None, "2026-06-10T14:00-07:00", Step.shortly, None),  # open and free
        (WEEK_JSON, "2026-06-10T15:30-07:00", "2026-06-10T14:00-07:00", Step.busy, "2026-06-10T15:30-07:00"),
        (WEEK_JSON, "2026-06-10T17:29-07:00", "2026-06-10T14:00-07:00", Step.busy, "2026-06-10T17:29-07:00"),
        (WEEK_JSON, "2026-06-10T18:00-07:00", "2026-06-10T14:00-07:00", Step.closed, "2026-06-11T09:00-07:00"),
        (WEEK_JSON, "2026-06-10T13:00-07:00", "2026-06-10T14:00-07:00", Step.shortly, None),  # busy is over
        (WEEK_JSON, "2026-06-10T08:00-07:00", "2026-06-10T07:00-07:00", Step.closed, "2026-06-10T09:00-07:00"),
        (WEEK_JSON, "2026-06-10T10:00-07:00", "2026-06-10T07:00-07:00", Step.busy, "2026-06-10T10:00-07:00"),
        (WEEK_JSON, None, "2026-06-10T17:14-07:00", Step.shortly, None),  # 16 minutes left
        (WEEK_JSON, None, "2026-06-10T17:20-07:00", Step.closed, "2026-06-11T09:00-07:00"),  # closing soon
        (WEEK_JSON, None, "2026-06-10T19:00-07:00", Step.closed, "2026-06-11T09:00-07:00"),  # evening
        (WEEK_JSON, None, "2026-06-10T07:00-07:00", Step.closed, "2026-06-10T09:00-07:00"),  # early morning
        (WEEK_JSON, None, "2026-06-11T19:00-07:00", Step.closed, "2026-06-15T09:00-07:00"),  # before a holiday
        (WEEK_JSON, None, "2026-06-13T12:00-07:00", Step.closed, "2026-06-15T09:00-07:00"),  # weekend
        ({"fri": "18:00-24:00", "sat": "00:00-02:00"}, None, "2026-06-12T23:50-07:00", Step.shortly, None),
        (None, None, "2026-06-10T03:00-07:00", Step.shortly, None),  # no hours: today's wording
        (None, "2026-06-10T04:30-07:00", "2026-06-10T03:00-07:00", Step.busy, "2026-06-10T04:30-07:00"),
    ],
)
def test_judge_situation_by_hours_and_busy(hours: dict[str, object] | None, busy_until: str | None, moment: str,
                                           step: Step, callback: str | None) -> None:
    found = situation(dana(hours), at(busy_until) if busy_until else None, at(moment))
    assert (found.step, found.callback_at) == (step, at(callback) if callback else None)


@pytest.mark.parametrize(
    ("kind", "step", "booking", "expected"),
    [
        ("opener", Step.shortly, False, "opener"),
        ("opener", Step.shortly, True, "opener_booking"),
        ("opener", Step.busy, True, "opener_busy_booking"),
        ("opener", Step.closed, False, "opener_closed"),
        ("handoff_ack", Step.closed, True, "handoff_ack_closed"),  # the acknowledgement has no booking variant
        ("handoff_ack", Step.shortly, False, "handoff_ack"),
        ("ready", Step.busy, False, "ready_busy"),
        ("ready", Step.closed, True, "ready_closed_booking"),
    ],
)
def test_name_template_for_step(kind, step: Step, booking: bool, expected: str, ctx) -> None:
    chosen = template_id(kind, step, booking=booking)
    assert chosen == expected
    assert ctx.templates.templates[chosen].audience == "borrower"


@pytest.mark.parametrize(
    ("callback", "reader", "now", "time_text", "day", "dia"),
    [
        ("2026-06-11T09:00-07:00", LA, "2026-06-10T18:00-07:00", "9:00 AM", "tomorrow", "mañana"),
        ("2026-06-10T09:00-07:00", LA, "2026-06-10T07:00-07:00", "9:00 AM", "today", "hoy"),
        ("2026-06-10T15:30-07:00", LA, "2026-06-10T14:00-07:00", "3:30 PM", "today", "hoy"),
        ("2026-06-10T12:30-07:00", LA, "2026-06-10T08:00-07:00", "12:30 PM", "today", "hoy"),
        ("2026-06-15T09:00-07:00", LA, "2026-06-12T18:00-07:00", "9:00 AM", "Monday", "el lunes"),
        ("2027-01-04T09:00-08:00", LA, "2026-12-23T18:00-08:00", "9:00 AM", "Monday, Jan 4", "el lunes 4 de ene"),  # past this week
        ("2026-06-11T09:00-07:00", NY, "2026-06-10T19:00-07:00", "12:00 PM EDT", "tomorrow", "mañana"),  # caller in NY
        ("2026-06-11T09:00-07:00", NY, "2026-06-11T00:30-04:00", "12:00 PM EDT", "today", "hoy"),  # their day, not ours
        ("2026-06-11T09:00-07:00", ZoneInfo("America/Phoenix"), "2026-06-10T19:00-07:00", "9:00 AM", "tomorrow", "mañana"),
        ("2026-12-10T09:00-08:00", ZoneInfo("America/Phoenix"), "2026-12-09T19:00-08:00", "10:00 AM MST", "tomorrow", "mañana"),
    ],
)
def test_write_callback_time_and_day(callback: str, reader: ZoneInfo, now: str, time_text: str, day: str,
                                     dia: str) -> None:
    """Phoenix keeps standard time: the same clock as Los Angeles in summer, an hour ahead in winter. The
    Spanish templates read the day in Spanish ($callback_day_es)."""
    values = callback_values(at(callback), broker_tz=LA, reader_tz=reader, now=at(now))
    assert values == {"callback_time": time_text, "callback_day": day, "callback_day_es": dia}


# ------------------------------------------------------------------------------------ through the service

def texts_to(ctx, phone: str) -> list[OutboundMessage]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(OutboundMessage).where(OutboundMessage.to_phone == phone)
                                 .order_by(OutboundMessage.id)).all())


def busy(client, ctx, until: str, number: str = BROKER) -> None:
    phone = BROKER_CELL if number == BROKER else MARCUS_CELL
    response = client.post(f"/api/brokers/{number}/busy", json={"until": until}, headers=signed_in(ctx, phone))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("now", "until", "caller", "broker", "expected", "wording"),
    [
        ("2026-06-10T21:00:00+00:00", None, CALLER, BROKER, "opener", "I'll follow up"),  # Wed 14:00 PDT
        ("2026-06-10T21:00:00+00:00", "15:30", CALLER, BROKER, "opener_busy", "with a client until about 3:30 PM"),
        ("2026-06-10T21:00:00+00:00", "18:00", CALLER, BROKER, "opener_closed", "back tomorrow at 9:00 AM,"),
        ("2026-06-11T00:20:00+00:00", None, CALLER, BROKER, "opener_closed", "back tomorrow at 9:00 AM,"),  # 17:20
        ("2026-06-11T02:00:00+00:00", None, CALLER, BROKER, "opener_closed", "back tomorrow at 9:00 AM,"),  # 19:00
        ("2026-06-10T14:30:00+00:00", None, CALLER, BROKER, "opener_closed", "back today at 9:00 AM,"),  # 07:30
        ("2026-06-12T02:00:00+00:00", None, CALLER, BROKER, "opener_closed", "back Monday at 9:00 AM,"),  # holiday
        ("2026-06-13T19:00:00+00:00", None, CALLER, BROKER, "opener_closed", "back Monday at 9:00 AM,"),  # Sat
        ("2026-06-11T02:00:00+00:00", None, NY_CALLER, BROKER, "opener_closed", "back tomorrow at 12:00 PM EDT,"),
        ("2026-06-11T02:00:00+00:00", None, NY_CALLER, BROKER2, "opener_booking", "Pick a time"),  # no hours
        ("2026-06-11T02:00:00+00:00", "23:30", NY_CALLER, BROKER2, "opener_busy_booking", "until about 11:30 PM"),
    ],
)
def test_send_opener_saying_when_person_calls(client, post, ctx, twilio_api, clock, now: str, until: str | None,
                                              caller: str, broker: str, expected: str, wording: str) -> None:
    clock.move_to(now)
    if until:
        busy(client, ctx, until, broker)
    missed(client, post, caller=caller, to=broker)
    [opener] = texts_to(ctx, caller)
    assert (opener.template_id, opener.status) == (expected, "sent")  # through the output guard, and sent
    assert wording in opener.body
    assert "NMLS #" in opener.body
    assert "Reply STOP to opt out" in opener.body.replace("\n", " ")
    assert twilio_api["messages"].call_count == 1


def test_send_opener_busy_set_by_another_process(client, post, ctx, second_ctx, twilio_api) -> None:
    """Busy set through another process reaches this one's opener: it is read from the database."""
    principal = Principal(kind="session", name="Dana", broker_ids=frozenset({ctx.broker_for(BROKER).id}))
    with session_scope(second_ctx.engine) as session:
        set_busy(session, second_ctx, principal, BROKER, "16:45")
    assert ctx.broker_for(BROKER).busy_until is None  # this process's copy is the start-up one
    missed(client, post)
    [opener] = texts_to(ctx, CALLER)
    assert opener.template_id == "opener_busy"
    assert "until about 4:45 PM" in opener.body


@pytest.mark.parametrize(
    ("now", "until", "expected", "wording"),
    [
        ("2026-06-10T21:00:00+00:00", None, "handoff_ack", "as soon as possible"),
        ("2026-06-10T21:00:00+00:00", "15:30", "handoff_ack_busy", "with a client until about 3:30 PM"),
        ("2026-06-11T02:00:00+00:00", None, "handoff_ack_closed", "personally tomorrow at 9:00 AM"),  # 19:00
    ],
)
def test_acknowledge_handoff_saying_when_person_calls(client, post, ctx, twilio_api, clock, now: str,
                                                      until: str | None, expected: str, wording: str) -> None:
    clock.move_to(now)
    if until:
        busy(client, ctx, until)
    missed(client, post)
    reply(client, post, "can I lock my rate today?")
    ack = texts_to(ctx, CALLER)[-1]
    assert (ack.template_id, ack.status) == (expected, "sent")
    assert wording in ack.body.replace("\n", " ")


def test_acknowledge_handoff_held_for_quiet_hours_as_read_next_morning(client, post, ctx, twilio_api, clock) -> None:
    """At 22:30 the acknowledgement waits for 08:00: read then, the call comes "today", not "tomorrow"."""
    clock.move_to("2026-06-11T05:20:00+00:00")  # Wednesday 22:20 PDT
    missed(client, post)
    clock.move_to("2026-06-11T05:30:00+00:00")
    reply(client, post, "can I lock my rate today?")
    opener, ack = texts_to(ctx, CALLER)
    assert "back tomorrow at 9:00 AM" in opener.body  # the opener answers the call at once
    assert (ack.template_id, ack.status) == ("handoff_ack_closed", "pending")
    assert ack.next_attempt_at == at("2026-06-11T15:00:00+00:00")  # Thursday 08:00 PDT
    assert "personally today at 9:00 AM" in ack.body.replace("\n", " ")


@pytest.mark.parametrize(
    ("now", "until", "expected", "wording"),
    [
        ("2026-06-10T21:00:00+00:00", None, "ready", "shortly"),
        ("2026-06-10T21:00:00+00:00", "15:30", "ready_busy", "with a client until about 3:30 PM"),
        ("2026-06-11T02:00:00+00:00", None, "ready_closed", "call you tomorrow at 9:00 AM"),
    ],
)
def test_send_ready_saying_when_person_calls(client, post, ctx, twilio_api, clock, now: str, until: str | None,
                                             expected: str, wording: str) -> None:
    clock.move_to(now)
    if until:
        busy(client, ctx, until)
    missed(client, post)
    for text in ("Purchase", "probably in 2 months", "no"):
        reply(client, post, text)
    ready = texts_to(ctx, CALLER)[-1]
    assert (ready.template_id, ready.status) == (expected, "sent")
    assert wording in ready.body.replace("\n", " ")
