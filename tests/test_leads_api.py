"""The leads API's read side (GET /api/leads, GET /api/leads/{id}): leads made by real signed webhooks, read
with a session cookie or a CRM's bearer token, scoped to the brokers the caller may see."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, select

from service.models import InboundMessage, Lead, OutboundMessage
from tests.api_helpers import (
    ADMIN,
    MARCUS_CELL,
    MEMBER,
    TEAM_YAML,
    bearer,
    lead_ids,
    missed,
    reply,
    signed_in,
)
from tests.helpers import BROKER, BROKER2, BROKER_ALERT, BROKER_CELL, CALLER, call_params

OTHER = "+14155550177"  # a second caller


@pytest.fixture
def brokers_file(tmp_path: Path) -> Path:
    """The test brokers, Dana's with a team: Ada (admin of the file) and Mo (member)."""
    path = tmp_path / "brokers.yaml"
    path.write_text(TEAM_YAML)
    return path


def broker_id(ctx, number: str) -> int:
    broker = ctx.broker_for(number)
    assert broker is not None
    assert broker.id is not None
    return broker.id


def lead_of(ctx, phone: str = CALLER, number: str = BROKER) -> Lead:
    with Session(ctx.engine) as session:
        return session.exec(select(Lead).where(Lead.phone == phone, Lead.broker_id == broker_id(ctx, number))).one()


@pytest.fixture
def three_leads(client, post, ctx) -> dict[str, int]:
    """CALLER and OTHER missed Dana (CALLER replied), CALLER missed Marcus: lead ids by name."""
    missed(client, post)
    reply(client, post, "refi, in the next month or so")
    missed(client, post, caller=OTHER)
    missed(client, post, to=BROKER2)
    return {"dana_caller": lead_of(ctx).id or 0, "dana_other": lead_of(ctx, OTHER).id or 0,
            "marcus_caller": lead_of(ctx, CALLER, BROKER2).id or 0}


def test_list_leads_newest_first_with_summary_fields(client, ctx, three_leads) -> None:
    response = client.get("/api/leads", headers=signed_in(ctx))
    assert lead_ids(response) == [three_leads["dana_other"], three_leads["dana_caller"]]
    first = response.json()["leads"][1]
    assert first["broker"] == BROKER
    assert first["phone"] == CALLER
    assert (first["loan_type"], first["timeline"], first["state"]) == ("refinance", "1_to_3_months", "asking")
    assert first["missed_call_at"].endswith("Z")
    assert response.json()["next_cursor"] is None


def test_list_leads_last_message_at_is_latest_borrower_text(client, ctx, three_leads) -> None:
    """The latest of the borrower's texts and the texts to them (the team's alerts do not count)."""
    with Session(ctx.engine) as session:
        inbound = session.exec(select(InboundMessage.received_at)).all()
        outbound = session.exec(select(OutboundMessage).where(
            OutboundMessage.lead_id == three_leads["dana_caller"], OutboundMessage.audience == "borrower")).all()
    latest = max([*inbound, *(m.sent_at or m.created_at for m in outbound)])
    [item] = [lead for lead in client.get("/api/leads", headers=signed_in(ctx)).json()["leads"]
              if lead["id"] == three_leads["dana_caller"]]
    assert datetime.fromisoformat(item["last_message_at"].replace("Z", "+00:00")) == latest.astimezone(UTC)


@pytest.mark.parametrize(("who", "sees"), [
    ("admin", {"dana_caller", "dana_other", "marcus_caller"}),
    ("dana", {"dana_caller", "dana_other"}),
    ("member", {"dana_caller", "dana_other"}),
    ("alert_to", {"dana_caller", "dana_other"}),
    ("marcus", {"marcus_caller"}),
    ("token_dana", {"dana_caller", "dana_other"}),
    ("token_marcus", {"marcus_caller"}),
])
def test_list_leads_only_of_brokers_the_principal_sees(client, ctx, three_leads, who, sees) -> None:
    headers = {
        "admin": lambda: signed_in(ctx, ADMIN), "dana": lambda: signed_in(ctx, BROKER_CELL),
        "member": lambda: signed_in(ctx, MEMBER), "alert_to": lambda: signed_in(ctx, BROKER_ALERT),
        "marcus": lambda: signed_in(ctx, MARCUS_CELL), "token_dana": lambda: bearer(ctx, broker_id(ctx, BROKER)),
        "token_marcus": lambda: bearer(ctx, broker_id(ctx, BROKER2)),
    }[who]()
    assert set(lead_ids(client.get("/api/leads", headers=headers))) == {three_leads[name] for name in sees}
    for name, lead_id in three_leads.items():
        status = client.get(f"/api/leads/{lead_id}", headers=headers).status_code
        assert status == (200 if name in sees else 404), name


def test_show_lead_foreign_and_missing_answer_the_same_404(client, ctx, three_leads) -> None:
    headers = signed_in(ctx, MEMBER)
    foreign = client.get(f"/api/leads/{three_leads['marcus_caller']}", headers=headers)
    missing = client.get("/api/leads/999999", headers=headers)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json() == {"error": "lead not found", "status": 404}


@pytest.mark.parametrize(("path", "status", "error"), [
    ("/api/leads/99999999999999999999999", 404, "lead not found"),  # no row can have it: an unknown id
    ("/api/report?until=9999-12-31", 422, "until: '9999-12-31' is out of range (a date from 1970 to 2999)"),
    ("/api/report?since=0001-01-01", 422, "since: '0001-01-01' is out of range (a date from 1970 to 2999)"),
])
def test_refuse_id_or_date_out_of_range_as_bad_input(client, ctx, three_leads, path, status, error) -> None:
    """Past what the database or a date can hold: the request's fault, naming what (never a 500)."""
    response = client.get(path, headers=bearer(ctx, ctx.brokers_by_number[BROKER].id))
    assert (response.status_code, response.json()["error"]) == (status, error)


def test_refuse_delivery_id_past_any_stored_one_as_unknown(client, ctx) -> None:
    response = client.post("/api/webhooks/deliveries/99999999999999999999/retry",
                           headers=bearer(ctx, ctx.brokers_by_number[BROKER].id))
    assert (response.status_code, response.json()["error"]) == (404, "delivery not found")


@pytest.mark.parametrize("path", ["/api/leads", "/api/leads/1"])
@pytest.mark.parametrize("auth", [None, "Bearer not-a-token", "Basic dXNlcjpwYXNz", "cookie"])
def test_refuse_leads_without_a_principal(client, three_leads, path, auth) -> None:
    headers = {} if auth is None else {"Cookie": "textback_session=forged"} if auth == "cookie" else {
        "Authorization": auth}
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert "sign in" in response.json()["error"]


def test_refuse_revoked_token_and_session_of_a_removed_user(client, ctx, three_leads) -> None:
    from service.models import ApiToken, UserSession, utcnow

    token = bearer(ctx, broker_id(ctx, BROKER))
    stranger = signed_in(ctx, "+14155550166")  # a session row for a phone that is no user of the file
    with Session(ctx.engine) as session:
        for row in session.exec(select(ApiToken)).all():
            row.revoked_at = utcnow()
            session.add(row)
        session.commit()
        assert session.exec(select(UserSession)).first() is not None
    assert client.get("/api/leads", headers=token).status_code == 401
    assert client.get("/api/leads", headers=stranger).status_code == 401


def test_list_leads_link_session_sees_its_one_lead(client, ctx, three_leads) -> None:
    """A session opened from an alert link is scoped to that lead."""
    headers = signed_in(ctx, BROKER_ALERT, lead_id=three_leads["dana_caller"])
    assert lead_ids(client.get("/api/leads", headers=headers)) == [three_leads["dana_caller"]]
    assert client.get(f"/api/leads/{three_leads['dana_other']}", headers=headers).status_code == 404
    assert client.get(f"/api/leads/{three_leads['dana_caller']}", headers=headers).status_code == 200


@pytest.mark.parametrize(("query", "expected"), [
    ("state=asking", ["dana_caller"]),
    ("state=opened", ["marcus_caller", "dana_other"]),
    ("state=handoff", ["dana_help"]),
    ("state=closed", []),
    ("state=needs_attention", ["dana_help"]),
    ("q=0177", ["dana_other"]),
    ("q=(415) 555-0177", ["dana_other"]),
    ("q=555", ["dana_help", "marcus_caller", "dana_other", "dana_caller"]),
    ("q=jordan", ["dana_caller"]),
    ("q=JORD", ["dana_caller"]),
    ("q=%25", []),
    ("q=_", []),
    ("state=asking&q=0199", ["dana_caller"]),
    ("state=opened&q=0199", ["marcus_caller"]),
])
def test_list_leads_filtered_by_state_and_query(client, post, ctx, three_leads, query, expected) -> None:
    """`state` is a lead state or needs_attention; `q` matches phone digits or the name, case-insensitive."""
    with Session(ctx.engine) as session:
        lead = session.get(Lead, three_leads["dana_caller"])
        assert lead is not None
        lead.name = "Jordan Lee"
        session.add(lead)
        session.commit()
    helper = "+14155550155"
    missed(client, post, caller=helper)
    reply(client, post, "can I lock my rate today?", caller=helper)
    ids = {**three_leads, "dana_help": lead_of(ctx, helper).id}
    response = client.get(f"/api/leads?{query}", headers=signed_in(ctx, ADMIN))
    assert lead_ids(response) == [ids[name] for name in expected]


def test_list_leads_pages_follow_next_cursor(client, ctx, three_leads) -> None:
    headers = signed_in(ctx, ADMIN)
    seen: list[int] = []
    url = "/api/leads?limit=1"
    for _ in range(5):
        body = client.get(url, headers=headers).json()
        seen += [lead["id"] for lead in body["leads"]]
        if body["next_cursor"] is None:
            break
        url = f"/api/leads?limit=1&cursor={body['next_cursor']}"
    assert seen == sorted(three_leads.values(), reverse=True)


@pytest.mark.parametrize(("query", "names"), [
    ("state=lost", "state"),
    ("state=NEW", "state"),
    ("cursor=abc", "cursor"),
    ("cursor=bGVhZDp4", "cursor"),  # "lead:x"
    ("limit=0", "limit"),
    ("limit=201", "limit"),
    ("limit=-1", "limit"),
    ("limit=ten", "limit"),
])
def test_refuse_list_leads_with_bad_parameter(client, ctx, three_leads, query, names) -> None:
    response = client.get(f"/api/leads?{query}", headers=signed_in(ctx))
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{names}:")


def test_show_lead_with_conversation_calls_voicemail_events_and_alerts(client, post, ctx, twilio_api) -> None:
    """The lead page's data, from a missed call, a voicemail and a reply that hands off to a person."""
    missed(client, post)
    vm = call_params("CA" + (BROKER[-10:] + CALLER[-10:]).rjust(32, "0"), CallStatus="completed", RecordingSid="RE" + "a" * 32,
                     RecordingUrl="https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE" + "a" * 32,
                     RecordingDuration="23")
    assert post(client, "/twilio/voice/voicemail", vm).status_code == 200
    reply(client, post, "can I lock my rate today?")
    lead = lead_of(ctx)
    body = client.get(f"/api/leads/{lead.id}", headers=signed_in(ctx)).json()
    assert body["broker_info"] == {"id": broker_id(ctx, BROKER), "name": "Dana Whitfield",
                                   "brokerage": "Summit Home Loans", "twilio_number": BROKER,
                                   "timezone": "America/Los_Angeles"}
    assert body["state"] == "handoff"
    assert body["needs_attention"] is True
    messages = body["messages"]
    assert [(m["direction"], m["author"], m["template_id"]) for m in messages] == [
        ("out", "textback", "opener"), ("in", "borrower", None), ("out", "textback", "handoff_ack")]
    assert messages[1]["body"] == "can I lock my rate today?"
    assert messages[0]["status"] == "sent"
    assert messages[0]["delivery_status"] == "queued"
    [call] = body["calls"]
    assert (call["kind"], call["missed"], call["call_sid"]) == ("borrower_call", True, vm["CallSid"])
    assert [e["kind"] for e in call["events"]] == ["dial-status", "voicemail"]
    [voicemail] = body["voicemails"]
    assert voicemail["recording_url"].startswith("https://api.twilio.com/")
    assert voicemail["duration"] == 23
    kinds = [e["kind"] for e in body["events"]]
    assert kinds[:2] == ["missed_call", "opener"]
    assert "handoff" in kinds
    alerts = body["alerts"]
    assert {a["template_id"] for a in alerts} >= {"alert_voicemail"}
    assert all(a["to"] == BROKER_ALERT and a["status"] == "sent" for a in alerts)
    assert body["last_message_at"] == messages[-1]["at"]


def test_list_leads_reads_a_page_in_the_same_statements_whatever_its_size(client, post, ctx) -> None:
    """The page's last-message times come from one aggregate query, not one per lead."""
    from sqlalchemy import event

    headers = signed_in(ctx)
    client.get("/api/leads", headers=headers)  # the session's first use records last_seen_at once

    def statements_for_page() -> int:
        seen: list[str] = []

        def count(conn, cursor, statement, *args) -> None:
            seen.append(statement)

        event.listen(ctx.engine, "before_cursor_execute", count)
        try:
            assert client.get("/api/leads", headers=headers).status_code == 200
        finally:
            event.remove(ctx.engine, "before_cursor_execute", count)
        return len([s for s in seen if s.lstrip().upper().startswith("SELECT")])

    for n in range(2):
        missed(client, post, caller=f"+1415555030{n}")
    small = statements_for_page()
    for n in range(2, 12):
        missed(client, post, caller=f"+141555503{n:02d}")
    assert len(client.get("/api/leads", headers=headers).json()["leads"]) == 12
    assert statements_for_page() == small == 3  # the session, the page of leads, their last messages


def test_serve_openapi_schema_listing_every_leads_route(client) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert {"/api/leads", "/api/leads/{lead_id}", "/api/leads/{lead_id}/messages", "/api/leads/{lead_id}/outcome",
            "/api/leads/{lead_id}/call"} <= set(paths)
    assert set(paths["/api/leads/{lead_id}/messages"]) == {"post"}
