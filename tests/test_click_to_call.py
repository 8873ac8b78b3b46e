"""Click-to-call: POST /api/leads/{id}/call rings the user through the real Calls API (the SDK, only its HTTP
boundary mocked), then the signed bridge webhooks connect them to the borrower and record what happened."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from service.models import HumanCall, Lead, LeadEvent
from service.settings import DEV_AUTH_TOKEN
from service.twilio import fake
from tests.api_helpers import MEMBER, TEAM_YAML, bearer, cookie_only, missed, reply, signed_in
from tests.helpers import BROKER, BROKER2, BROKER_CELL, CALLER, PUBLIC_URL, TWILIO_SID, call_params

CALLS_URL = f"https://api.twilio.com/2010-04-01/Accounts/{TWILIO_SID}/Calls.json"
USER_LEG = "CA" + "c" * 32


@pytest.fixture
def brokers_file(tmp_path: Path) -> Path:
    path = tmp_path / "brokers.yaml"
    path.write_text(TEAM_YAML)
    return path


@pytest.fixture
def calls_api(twilio_api):
    """Twilio's Calls API: places every call (answers with USER_LEG) unless a test says otherwise."""

    def created(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        return httpx.Response(201, json=fake.call_json(form["To"], form["From"], sid=USER_LEG,
                                                       account_sid=TWILIO_SID))

    return twilio_api.post(CALLS_URL, name="calls").mock(side_effect=created)


@pytest.fixture
def lead_id(client, post, ctx) -> int:
    missed(client, post)
    with Session(ctx.engine) as session:
        return session.exec(select(Lead.id).where(Lead.phone == CALLER, Lead.broker_id == 1)).one()


def call(client, lead_id: int, headers: dict[str, str]) -> httpx.Response:
    return client.post(f"/api/leads/{lead_id}/call", headers=headers)


def leg(**extra: str) -> dict[str, str]:
    """What Twilio posts about the call to the user (from the business number to the user's phone)."""
    return call_params(USER_LEG, caller=BROKER, to=BROKER_CELL, Direction="outbound-api", **extra)


def human_call(ctx) -> HumanCall:
    with Session(ctx.engine) as session:
        return session.exec(select(HumanCall)).one()


def kinds(ctx) -> list[str]:
    with Session(ctx.engine) as session:
        return [e.kind for e in session.exec(select(LeadEvent).order_by(LeadEvent.id))]


def placed(client, ctx, lead_id: int) -> int:
    response = call(client, lead_id, signed_in(ctx))
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_ring_user_first_from_business_number(client, ctx, calls_api, lead_id) -> None:
    response = call(client, lead_id, signed_in(ctx))
    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["call_sid"], body["user_phone"], body["user_name"]) == (
        "ringing-user", USER_LEG, BROKER_CELL, "Dana Whitfield")
    [request] = calls_api.calls
    form = dict(httpx.QueryParams(request.request.content.decode()))
    assert (form["To"], form["From"], form["Method"]) == (BROKER_CELL, BROKER, "POST")
    assert form["Url"] == f"{PUBLIC_URL}/twilio/voice/bridge?call={body['id']}"
    assert form["StatusCallback"] == f"{PUBLIC_URL}/twilio/voice/bridge-call-status?call={body['id']}"
    assert kinds(ctx)[-1] == "call_started"
    assert "bot_stopped" not in kinds(ctx)  # ringing is not reaching anyone yet


def test_bridge_says_who_then_dials_borrower_with_business_caller_id(client, post, ctx, calls_api, lead_id) -> None:
    call_id = placed(client, ctx, lead_id)
    response = post(client, f"/twilio/voice/bridge?call={call_id}", leg(CallStatus="in-progress"))
    assert response.status_code == 200
    root = ET.fromstring(response.text)
    assert root.find("Say").text == "Connecting you to 4 1 5 5 5 5 0 1 9 9."
    dial = root.find("Dial")
    assert dial.get("callerId") == BROKER
    assert dial.get("action") == f"{PUBLIC_URL}/twilio/voice/bridge-status?call={call_id}"
    assert dial.find("Number").text == CALLER
    assert human_call(ctx).status == "bridging"


def test_record_bridged_call_as_human_contact_once(client, post, ctx, calls_api, lead_id) -> None:
    call_id = placed(client, ctx, lead_id)
    post(client, f"/twilio/voice/bridge?call={call_id}", leg(CallStatus="in-progress"))
    ended = leg(CallStatus="in-progress", DialCallStatus="completed", DialCallDuration="95",
                DialCallSid="CA" + "d" * 32)
    for _ in range(2):  # Twilio retries the callback
        response = post(client, f"/twilio/voice/bridge-status?call={call_id}", ended)
        assert ET.fromstring(response.text).find("Hangup") is not None
    row = human_call(ctx)
    assert (row.status, row.bridged, row.duration) == ("completed", True, 95)
    assert kinds(ctx).count("human_contact") == 1
    assert kinds(ctx).count("bot_stopped") == 1
    with Session(ctx.engine) as session:
        lead = session.get(Lead, lead_id)
        [contact] = session.exec(select(LeadEvent).where(LeadEvent.kind == "human_contact")).all()
    assert lead.human_by == BROKER_CELL
    assert (contact.actor, contact.data["how"], contact.data["duration"]) == (BROKER_CELL, "call", 95)
    # the user's leg completing afterwards changes nothing
    post(client, f"/twilio/voice/bridge-call-status?call={call_id}", leg(CallStatus="completed", CallDuration="99"))
    assert human_call(ctx).status == "completed"
    detail = client.get(f"/api/leads/{lead_id}", headers=signed_in(ctx)).json()
    assert [c["kind"] for c in detail["calls"]] == ["borrower_call", "click_to_call"]


@pytest.mark.parametrize("status", ["no-answer", "busy", "failed", "canceled"])
def test_record_borrower_not_reached_without_takeover(client, post, ctx, calls_api, lead_id, status) -> None:
    call_id = placed(client, ctx, lead_id)
    post(client, f"/twilio/voice/bridge?call={call_id}", leg(CallStatus="in-progress"))
    response = post(client, f"/twilio/voice/bridge-status?call={call_id}", leg(DialCallStatus=status))
    assert ET.fromstring(response.text).find("Say").text == "The borrower did not answer. Goodbye."
    row = human_call(ctx)
    assert (row.status, row.bridged, row.error) == (status, False, f"the borrower did not answer ({status})")
    assert "human_contact" not in kinds(ctx)


@pytest.mark.parametrize(("status", "recorded", "error"), [
    ("no-answer", "no-answer", "your phone did not answer (no-answer)"),
    ("busy", "busy", "your phone did not answer (busy)"),
    ("completed", "ended", "the call ended before the borrower was connected"),
])
def test_record_user_leg_ending_before_bridge(client, post, ctx, calls_api, lead_id, status, recorded,
                                               error) -> None:
    call_id = placed(client, ctx, lead_id)
    response = post(client, f"/twilio/voice/bridge-call-status?call={call_id}", leg(CallStatus=status))
    assert response.status_code == 200
    row = human_call(ctx)
    assert (row.status, row.error, row.bridged) == (recorded, error, False)
    # a bridge asked for after that is not connected
    late = post(client, f"/twilio/voice/bridge?call={call_id}", leg(CallStatus="in-progress"))
    assert ET.fromstring(late.text).find("Dial") is None


@pytest.mark.parametrize("case", ["unknown_call", "other_call_sid"])
def test_refuse_to_bridge_a_call_textback_did_not_place(client, post, ctx, calls_api, lead_id, case) -> None:
    call_id = placed(client, ctx, lead_id)
    target, form = {"unknown_call": (call_id + 100, leg()),
                    "other_call_sid": (call_id, call_params("CA" + "e" * 32, caller=BROKER, to=BROKER_CELL))}[case]
    response = post(client, f"/twilio/voice/bridge?call={target}", form)
    root = ET.fromstring(response.text)
    assert root.find("Dial") is None
    assert root.find("Hangup") is not None


@pytest.mark.parametrize(("path", "form", "status"), [
    ("/twilio/voice/bridge", leg(), 422),  # no ?call=
    ("/twilio/voice/bridge?call=abc", leg(), 422),
    ("/twilio/voice/bridge-status?call=1", leg(DialCallStatus="weird"), 422),
    ("/twilio/voice/bridge-status?call=1", leg(), 422),  # no DialCallStatus
    ("/twilio/voice/bridge-call-status?call=1", leg(CallStatus="weird"), 422),
    ("/twilio/voice/bridge?call=1", {**leg(), "CallSid": "XX1"}, 422),
])
def test_refuse_malformed_bridge_webhook(client, post, twilio_api, path, form, status) -> None:
    assert post(client, path, form).status_code == status


def test_refuse_bridge_webhook_with_query_changed_after_signing(client, twilio_api) -> None:
    from service.twilio.signature import sign
    from tests.helpers import TWILIO_TOKEN

    form = leg()
    signature = sign(token=TWILIO_TOKEN, url=f"{PUBLIC_URL}/twilio/voice/bridge?call=1", params=form)
    response = client.post("/twilio/voice/bridge?call=2", data=form, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403


def test_call_opted_out_borrower(client, post, ctx, calls_api, lead_id) -> None:
    """STOP opts out of texts; a person may still call back a borrower who called them."""
    reply(client, post, "STOP")
    assert call(client, lead_id, signed_in(ctx)).status_code == 202


def test_refuse_click_to_call_for_bearer_token(client, ctx, calls_api, lead_id) -> None:
    response = call(client, lead_id, bearer(ctx, 1))
    assert response.status_code == 422
    assert "bearer token has no phone" in response.json()["error"]
    assert not calls_api.called
    assert "call_started" not in kinds(ctx)


@pytest.mark.parametrize(("who", "status"), [("none", 401), ("cookie_without_csrf", 403), ("member_foreign", 404),
                                             ("token_foreign", 404), ("missing", 404)])
def test_refuse_click_to_call_without_access(client, post, ctx, calls_api, lead_id, who, status) -> None:
    missed(client, post, to=BROKER2)
    with Session(ctx.engine) as session:
        marcus_lead = session.exec(select(Lead.id).where(Lead.broker_id == 2)).one()
    target, headers = {"none": (lead_id, {}), "cookie_without_csrf": (lead_id, cookie_only(signed_in(ctx))),
                       "member_foreign": (marcus_lead, signed_in(ctx, MEMBER)),
                       "token_foreign": (marcus_lead, bearer(ctx, 1)), "missing": (999999, signed_in(ctx))}[who]
    assert call(client, target, headers).status_code == status
    assert not calls_api.called


def test_record_call_twilio_refused_and_answer_502(client, ctx, twilio_api, lead_id) -> None:
    twilio_api.post(CALLS_URL).respond(400, json={"code": 21215, "message": "Geo permission", "status": 400})
    response = call(client, lead_id, signed_in(ctx))
    assert response.status_code == 502
    assert response.json()["details"]["call"]["status"] == "failed"
    row = human_call(ctx)
    assert row.status == "failed"
    assert "21215" in row.error


@pytest.mark.parametrize("settings_env", [{"twilio_account_sid": None, "twilio_auth_token": None}])
def test_print_click_to_call_in_dry_run_and_place_nothing(client, post, ctx, twilio_api, capsys) -> None:
    response = post(client, "/twilio/voice/dial-status",
                    call_params(caller=CALLER, DialCallStatus="no-answer"), token=DEV_AUTH_TOKEN)
    assert response.status_code == 200
    with Session(ctx.engine) as session:
        lead_id = session.exec(select(Lead.id)).one()
    response = call(client, lead_id, signed_in(ctx))
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["call_sid"]) == ("not-placed", None)
    printed = capsys.readouterr().out
    assert f"[dry-run] call to {BROKER_CELL} from {BROKER}, then bridged to {CALLER}" in printed
    assert not any(c.request.url.path.endswith("/Calls.json") for c in twilio_api.calls)


@pytest.mark.parametrize(("path", "form", "said"), [
    ("/twilio/voice/bridge?call=1", leg(), "Sorry, this call can no longer be connected"),
    ("/twilio/voice/bridge-status?call=1", leg(DialCallStatus="completed"), None),
    ("/twilio/voice/bridge-call-status?call=1", leg(CallStatus="completed"), None),
])
def test_answer_bridge_webhooks_from_memory_when_database_is_down(ctx, path, form, said) -> None:
    """Spooled for the replay like every webhook: the user hears why nothing happens (the borrower's number is
    in the database), and how the call ended is recorded once the database is back."""
    from urllib.parse import parse_qsl, urlsplit

    from service.twilio.webhooks import offline_answer

    parts = urlsplit(path)
    root = ET.fromstring(offline_answer(ctx, parts.path, {**form, **dict(parse_qsl(parts.query))}))
    assert root.find("Dial") is None
    assert (root.find("Say").text if root.find("Say") is not None else None) == (
        None if said is None else "Sorry, this call can no longer be connected. Please try again from the console.")
