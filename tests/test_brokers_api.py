"""GET /api/brokers and POST /api/brokers/{number}/busy: who sees which broker, the busy toggle and its refusals.

The clock fixture pins the wall clock to Wednesday 2026-06-10 14:00 PDT (21:00 UTC), inside Dana's hours.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session

from service.broker_status import set_busy
from service.db import session_scope
from service.models import Broker
from service.web.principal import resolve, start_session
from tests.api_helpers import ADMIN, MARCUS_CELL, TEAM_YAML, bearer, cookie_only, signed_in
from tests.helpers import BROKER, BROKER2, BROKER_ALERT

HOURS = '{mon: "09:00-17:30", tue: "09:00-17:30", wed: "09:00-17:30", thu: "09:00-17:30", fri: "09:00-17:30"}'
HOURS_JSON = {"mon": "09:00-17:30", "tue": "09:00-17:30", "wed": "09:00-17:30", "thu": "09:00-17:30",
              "fri": "09:00-17:30", "sat": None, "sun": None, "holidays": []}
BROKERS_WITH_HOURS = TEAM_YAML.replace(
    "    call_screening: true\n", f"    call_screening: true\n    hours: {HOURS}\n    handoff_sla_minutes: 20\n", 1)


@pytest.fixture
def brokers_file(tmp_path: Path) -> Path:
    """Dana with working hours, an SLA and an admin on her team; Marcus with none."""
    path = tmp_path / "brokers.yaml"
    path.write_text(BROKERS_WITH_HOURS)
    return path


def stored_busy(ctx, number: str = BROKER) -> datetime | None:
    with Session(ctx.engine) as session:
        return session.get(Broker, ctx.broker_for(number).id).busy_until


def test_list_brokers_member_sees_own_with_hours(ctx, client) -> None:
    response = client.get("/api/brokers", headers=signed_in(ctx, BROKER_ALERT))
    assert response.status_code == 200
    assert response.json() == {"brokers": [{
        "twilio_number": BROKER, "name": "Dana Whitfield", "brokerage": "Summit Home Loans",
        "timezone": "America/Los_Angeles", "hours": HOURS_JSON, "busy_until": None, "busy_until_local": None,
        "open_now": True, "next_opening": "2026-06-11T16:00:00Z", "handoff_sla_minutes": 20,
        "next_step": "shortly", "callback_at": None,
    }]}


@pytest.mark.parametrize(
    ("phone", "expected"),
    [(BROKER_ALERT, [BROKER]), (MARCUS_CELL, [BROKER2]), (ADMIN, [BROKER, BROKER2])],
)
def test_list_brokers_by_principal(ctx, client, phone: str, expected: list[str]) -> None:
    brokers = client.get("/api/brokers", headers=signed_in(ctx, phone)).json()["brokers"]
    assert [b["twilio_number"] for b in brokers] == expected


def test_list_brokers_without_hours_always_open(ctx, client) -> None:
    [marcus] = client.get("/api/brokers", headers=signed_in(ctx, MARCUS_CELL)).json()["brokers"]
    assert (marcus["hours"], marcus["open_now"], marcus["next_opening"]) == (None, True, None)
    assert marcus["handoff_sla_minutes"] == 15


def test_list_brokers_signed_out_401(client) -> None:
    assert client.get("/api/brokers").status_code == 401


def test_set_busy_until_stored_and_listed(ctx, client) -> None:
    headers = signed_in(ctx, BROKER_ALERT)
    response = client.post(f"/api/brokers/{BROKER}/busy", json={"until": "15:30"}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["busy_until"], body["busy_until_local"]) == ("2026-06-10T22:30:00Z", "15:30")
    assert (body["next_step"], body["callback_at"]) == ("busy", "2026-06-10T22:30:00Z")
    assert stored_busy(ctx) == datetime(2026, 6, 10, 22, 30, tzinfo=UTC)
    [listed] = client.get("/api/brokers", headers=headers).json()["brokers"]
    assert listed["busy_until_local"] == "15:30"


def test_clear_busy_with_null(ctx, client) -> None:
    headers = signed_in(ctx, BROKER_ALERT)
    client.post(f"/api/brokers/{BROKER}/busy", json={"until": "16:00"}, headers=headers)
    response = client.post(f"/api/brokers/{BROKER}/busy", json={"until": None}, headers=headers)
    assert response.status_code == 200
    assert response.json()["busy_until"] is None
    assert stored_busy(ctx) is None


def test_list_brokers_busy_over_not_shown(ctx, client, clock) -> None:
    headers = signed_in(ctx, BROKER_ALERT)
    client.post(f"/api/brokers/{BROKER}/busy", json={"until": "14:30"}, headers=headers)
    clock.move_to("2026-06-10T21:45:00+00:00")  # 14:45 PDT
    [listed] = client.get("/api/brokers", headers=headers).json()["brokers"]
    assert (listed["busy_until"], listed["busy_until_local"]) == (None, None)


@pytest.mark.parametrize(
    ("now", "until", "status", "message"),
    [
        ("2026-06-10T21:00:00+00:00", "13:59", 422, "until: that time has passed"),  # 14:00 PDT now
        ("2026-06-10T21:00:00+00:00", "14:00", 422, "until: that time has passed"),
        ("2026-06-10T15:00:00+00:00", "20:01", 422, "until: more than 12 hours ahead"),  # 08:00 PDT now
        ("2026-06-10T15:00:00+00:00", "20:00", 200, None),  # exactly 12 hours
        ("2026-06-10T21:00:00+00:00", "3:30 PM", 422, "is not a time like"),
        ("2026-06-10T21:00:00+00:00", "24:00", 422, "is not a time like"),
        ("2026-06-10T21:00:00+00:00", "", 422, "is not a time like"),
        ("2026-06-10T21:00:00+00:00", "9:05", 422, "that time has passed"),  # one-digit hours read as 09:05
        ("2026-06-10T21:00:00+00:00", "23:59", 200, None),
    ],
)
def test_set_busy_refused_or_accepted(ctx, client, clock, now: str, until: str, status: int,
                                      message: str | None) -> None:
    clock.move_to(now)
    headers = signed_in(ctx, BROKER_ALERT)
    response = client.post(f"/api/brokers/{BROKER}/busy", json={"until": until}, headers=headers)
    assert response.status_code == status, response.text
    if message:
        body = response.json()
        assert message in body["error"]
        assert body["details"][0]["key"] == "until"
        assert stored_busy(ctx) is None


@pytest.mark.parametrize(
    ("phone", "number"),
    [(BROKER_ALERT, BROKER2), (MARCUS_CELL, BROKER), (BROKER_ALERT, "+19995550100")],
    ids=["dana's team on marcus", "marcus on dana", "unknown number"],
)
def test_set_busy_foreign_broker_404(ctx, client, phone: str, number: str) -> None:
    headers = signed_in(ctx, phone)
    response = client.post(f"/api/brokers/{number}/busy", json={"until": "15:30"}, headers=headers)
    assert response.status_code == 404
    assert stored_busy(ctx) is None
    assert stored_busy(ctx, BROKER2) is None


def test_set_busy_without_csrf_403(ctx, client) -> None:
    headers = cookie_only(signed_in(ctx, BROKER_ALERT))
    response = client.post(f"/api/brokers/{BROKER}/busy", json={"until": "15:30"}, headers=headers)
    assert response.status_code == 403
    assert stored_busy(ctx) is None


def test_set_busy_signed_out_401(ctx, client) -> None:
    assert client.post(f"/api/brokers/{BROKER}/busy", json={"until": "15:30"}).status_code == 401


@pytest.mark.parametrize(
    ("number", "status"), [(BROKER, 200), (BROKER2, 404)], ids=["its broker", "another broker"],
)
def test_set_busy_with_bearer_token(ctx, client, number: str, status: int) -> None:
    """A CRM's token needs no CSRF header, and sees its one broker only."""
    headers = bearer(ctx, ctx.broker_for(BROKER).id)
    response = client.post(f"/api/brokers/{number}/busy", json={"until": "15:30"}, headers=headers)
    assert response.status_code == status


@pytest.mark.parametrize(("body", "error"), [
    ({}, "until: Field required"),
    ({"until": "15:30", "why": "meeting"}, "why: Extra inputs are not permitted"),
    ({"until": 1530}, "until: Input should be a valid string"),
])
def test_set_busy_bad_body_400(ctx, client, body: dict[str, object], error: str) -> None:
    headers = signed_in(ctx, BROKER_ALERT)
    response = client.post(f"/api/brokers/{BROKER}/busy", json=body, headers=headers)
    assert (response.status_code, response.json()["error"]) == (400, error)
    assert stored_busy(ctx) is None


@pytest.mark.parametrize(("content", "content_type", "error"), [
    (b"", "application/json", "a JSON body is required"),
    (b"{bad", "application/json", "the body is not valid JSON (send Content-Type: application/json)"),
    (b"until=15:30", "application/x-www-form-urlencoded",
     "the body is not valid JSON (send Content-Type: application/json)"),
    (b"[1]", "application/json", "the body must be a JSON object"),
    (b'{"until":', "application/json", "the body is not valid JSON (send Content-Type: application/json)"),
    (b'{"until": "\xff"}', "application/json", "the body is not valid JSON (send Content-Type: application/json)"),
    (b'{"until": "\\ud800"}', "application/json", "the body is not valid JSON (send Content-Type: application/json)"),
])
def test_set_busy_refuses_body_that_is_no_json_object_saying_so(ctx, client, content, content_type, error) -> None:
    headers = {**signed_in(ctx, BROKER_ALERT), "Content-Type": content_type}
    response = client.post(f"/api/brokers/{BROKER}/busy", content=content, headers=headers)
    assert (response.status_code, response.json()["error"]) == (400, error)
    assert stored_busy(ctx) is None


def test_list_brokers_reads_busy_set_by_another_process(ctx, second_ctx, client) -> None:
    """Busy set through another process's context reaches this one: the list reads the database."""
    principal = resolve(second_ctx, authorization=None, cookie=_session_cookie(second_ctx, BROKER_ALERT))
    with session_scope(second_ctx.engine) as session:
        set_busy(session, second_ctx, principal, BROKER, "16:15")
    assert ctx.broker_for(BROKER).busy_until is None  # this process's copy is the start-up one
    [listed] = client.get("/api/brokers", headers=signed_in(ctx, BROKER_ALERT)).json()["brokers"]
    assert listed["busy_until_local"] == "16:15"


def _session_cookie(ctx, phone: str) -> str:
    with session_scope(ctx.engine) as session:
        token, _ = start_session(session, phone=phone)
    return token
