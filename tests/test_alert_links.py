"""The link in every alert about a lead (/l/<token>): one per recipient, single use, expiring, signing that phone in
for that lead only; and a team member's text to a textback number answered with it, never silence."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from service.lead_links import console_login_url, link_for, new_link_token
from service.models import Lead, LeadLink, OutboundMessage, utcnow
from service.settings import DEV_AUTH_TOKEN
from service.web.principal import SESSION_COOKIE
from tests.auth_helpers import MEMBER, TEAM_YAML, https_client, sign_in
from tests.helpers import (
    BROKER,
    BROKER2,
    BROKER_ALERT,
    BROKER_CELL,
    CALLER,
    PUBLIC_URL,
    call_params,
    sent_templates,
    sent_texts,
    sms_params,
    status_params,
)

DIAL = "/twilio/voice/dial-status"
OTHER_CALLER = "+14155550198"
ALERTS_NUMBER = "+14155550150"
OPERATOR = "+14155550190"
LINK = re.compile(re.escape(PUBLIC_URL) + r"/l/[0-9A-Za-z]{22}\b")
WINDOW = 300.0


@pytest.fixture
def brokers_file(tmp_path: Path) -> Path:
    """Dana's alerts go to her alert number and to Mo, a member of her team."""
    path = tmp_path / "brokers.yaml"
    path.write_text(TEAM_YAML.replace(f'alert_to: ["{BROKER_ALERT}"]', f'alert_to: ["{BROKER_ALERT}", "{MEMBER}"]'))
    return path


@pytest.fixture
def web(ctx, twilio_api) -> Iterator[object]:
    with https_client(ctx) as client:
        yield client


def handoff(web, post, caller: str = CALLER, *, token: str | None = None) -> None:
    """A missed call, then a reply that needs a person: the team gets alert_handoff."""
    extra = {"token": token} if token else {}
    sid = "CA" + caller[-10:].rjust(32, "0")
    assert post(web, DIAL, call_params(sid, caller=caller, DialCallStatus="no-answer"), **extra).status_code == 200
    assert post(web, "/twilio/sms", sms_params("can I lock my rate today?", sender=caller), **extra).status_code == 200


def links_to(twilio_api, phone: str) -> list[str]:
    """The links in the texts sent to `phone`, in order."""
    return [m for t in sent_texts(twilio_api["messages"]) if t["To"] == phone for m in LINK.findall(t["Body"])]


def open_link(web, link: str) -> httpx.Response:
    return web.get(link.removeprefix(PUBLIC_URL), follow_redirects=False)


def lead_id(ctx, phone: str = CALLER) -> int:
    with Session(ctx.engine) as session:
        found = session.exec(select(Lead).where(Lead.phone == phone)).one()
        assert found.id is not None
        return found.id


def test_alert_link_one_per_recipient_hash_only(web, post, twilio_api, ctx) -> None:
    handoff(web, post)
    assert sent_templates(ctx, twilio_api["messages"], BROKER_ALERT) == ["alert_handoff"]
    [mine], [mos] = links_to(twilio_api, BROKER_ALERT), links_to(twilio_api, MEMBER)
    assert mine != mos
    with Session(ctx.engine) as session:
        links = session.exec(select(LeadLink).order_by(LeadLink.id)).all()
        stored = " ".join(m.body for m in session.exec(select(OutboundMessage)))
    assert [(x.phone, x.lead_id) for x in links] == [(BROKER_ALERT, lead_id(ctx)), (MEMBER, lead_id(ctx))]
    assert links[0].expires_at - links[0].created_at == timedelta(hours=24)
    for link in (mine, mos):
        token = link.rsplit("/", 1)[1]
        assert token not in stored, "the sent alert forgets its token"
        assert all(token not in x.token_hash for x in links)
    assert f"{PUBLIC_URL}/l/[sent]" in stored


def test_open_link_signs_in_for_that_lead_only(web, post, twilio_api, ctx) -> None:
    handoff(web, post, OTHER_CALLER)
    handoff(web, post)
    [*_, link] = links_to(twilio_api, BROKER_ALERT)
    response = open_link(web, link)
    assert response.status_code == 303
    assert response.headers["location"] == f"/console/leads/{lead_id(ctx)}"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert SESSION_COOKIE in web.cookies
    me = web.get("/api/auth/me").json()
    assert (me["user"]["phone"], me["lead_id"]) == (BROKER_ALERT, lead_id(ctx))
    assert web.get(f"/api/leads/{lead_id(ctx)}").status_code == 200
    assert web.get(f"/api/leads/{lead_id(ctx, OTHER_CALLER)}").status_code == 404, "a foreign lead"
    assert [x["id"] for x in web.get("/api/leads").json()["leads"]] == [lead_id(ctx)]


def expired_page(response: httpx.Response) -> None:
    assert response.status_code == 410
    assert "/console/login" in response.text
    assert "set-cookie" not in response.headers


def test_open_link_twice_410(web, post, twilio_api) -> None:
    handoff(web, post)
    [link] = links_to(twilio_api, BROKER_ALERT)
    assert open_link(web, link).status_code == 303
    web.cookies.clear()
    expired_page(open_link(web, link))


def test_open_link_after_expiry_410(web, post, twilio_api, clock) -> None:
    handoff(web, post)
    [link] = links_to(twilio_api, BROKER_ALERT)
    clock.move_to(utcnow() + timedelta(hours=24, seconds=1))
    expired_page(open_link(web, link))


@pytest.mark.parametrize("token", ["made-up", "0" * 22, "a" * 23, "%2e%2e"])
def test_open_link_unknown_token_410(web, token) -> None:
    expired_page(web.get(f"/l/{token}", follow_redirects=False))


def test_open_link_phone_no_longer_user_410(web, post, twilio_api, ctx) -> None:
    """The brokers file changed since the alert: the phone is no user of the lead's broker any more."""
    handoff(web, post)
    [link] = links_to(twilio_api, MEMBER)
    ctx.brokers_by_number[BROKER].team = []
    ctx.brokers_by_number[BROKER].alert_to = [BROKER_ALERT]
    expired_page(open_link(web, link))


def test_open_link_signed_in_browser_keeps_its_session(web, post, twilio_api, ctx) -> None:
    sign_in(web, twilio_api, BROKER_ALERT)
    handoff(web, post)
    [link] = links_to(twilio_api, BROKER_ALERT)
    before = web.cookies.get(SESSION_COOKIE)
    response = open_link(web, link)
    assert response.status_code == 303
    assert "set-cookie" not in response.headers
    assert web.cookies.get(SESSION_COOKIE) == before
    assert web.get("/api/auth/me").json()["lead_id"] is None, "still sees every lead of the broker"


@pytest.mark.parametrize(("phone", "gets_link"), [
    (BROKER_ALERT, True),  # an alert number of the lead's broker
    (MEMBER, True),  # in its team
    ("+14155550120", True),  # an admin of the file
    ("+12125550111", False),  # Marcus: a user, of another broker
    (OPERATOR, False),  # nobody's phone in the brokers file
])
def test_link_for_recipient_user_of_lead_broker(ctx, phone, gets_link) -> None:
    with Session(ctx.engine) as session:
        lead = Lead(broker_id=ctx.brokers_by_number[BROKER].id, phone=CALLER)
        session.add(lead)
        session.flush()
        link = link_for(session, ctx, lead=lead, phone=phone)
        assert link_for(session, ctx, lead=None, phone=phone) == console_login_url(ctx.settings)
    assert bool(LINK.fullmatch(link)) is gets_link
    assert gets_link or link == f"{PUBLIC_URL}/console/login"


def test_link_token_has_128_bits_at_least() -> None:
    tokens = {new_link_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(re.fullmatch(r"[0-9A-Za-z]{22}", t) for t in tokens)  # 62**22 > 2**130


@pytest.mark.parametrize("settings_env", [{"twilio_account_sid": None, "twilio_auth_token": None}])
def test_alert_link_printed_whole_in_dry_run(web, post, ctx, capsys, settings_env) -> None:
    handoff(web, post, token=DEV_AUTH_TOKEN)
    [line] = [x for x in capsys.readouterr().out.splitlines() if f"text to {BROKER_ALERT}" in x]
    [link] = LINK.findall(line)
    assert CALLER not in line, "the rest of the alert is redacted as before"
    assert open_link(web, link).status_code == 303


def test_alert_sent_again_gets_fresh_link(web, post, twilio_api, ctx) -> None:
    ctx.settings.alerts_from = ALERTS_NUMBER
    handoff(web, post)
    with Session(ctx.engine) as session:
        first = session.exec(select(OutboundMessage).where(OutboundMessage.to_phone == BROKER_ALERT)).one()
    post(web, "/twilio/sms/status", status_params(first.twilio_sid, "failed", to=BROKER_ALERT, error_code=30034))
    web.app.state.worker.run_once()
    old, new = links_to(twilio_api, BROKER_ALERT)
    handoffs = [t for t in sent_texts(twilio_api["messages"]) if t["To"] == BROKER_ALERT and LINK.search(t["Body"])]
    assert [t["From"] for t in handoffs] == [BROKER, ALERTS_NUMBER]
    assert old != new
    assert open_link(web, new).status_code == 303


@pytest.mark.parametrize("settings_env", [{"forward_window_seconds": WINDOW}])
def test_follow_up_alert_keeps_each_recipients_link(web, post, twilio_api, ctx, clock, settings_env) -> None:
    handoff(web, post)
    clock.move_to(utcnow() + timedelta(seconds=WINDOW + 1))
    for n in range(3):
        post(web, "/twilio/sms", sms_params(f"hello? text number {n}"))
    clock.move_to(utcnow() + timedelta(seconds=WINDOW + 2))
    web.app.state.worker.run_once()
    for phone in (BROKER_ALERT, MEMBER):
        assert sent_templates(ctx, twilio_api["messages"], phone)[-1] == "alert_forward_more"
        *_, follow_up = links_to(twilio_api, phone)
        assert open_link(web, follow_up).status_code == 303
        web.cookies.clear()


# -- the team texting a textback number -----------------------------------------------------------------------

def team_text(web, post, text: str, sender: str = BROKER_ALERT, to: str = BROKER, sid: str | None = None) -> None:
    assert post(web, "/twilio/sms", sms_params(text, sid=sid, sender=sender, to=to)).status_code == 200


def test_team_reply_to_alert_gets_link_to_lead(web, post, twilio_api, ctx, clock) -> None:
    handoff(web, post, OTHER_CALLER)
    handoff(web, post)
    team_text(web, post, "ok calling her now")
    assert sent_templates(ctx, twilio_api["messages"], BROKER_ALERT)[-1] == "alert_reply_hint"
    [*_, hint] = [t for t in sent_texts(twilio_api["messages"]) if t["To"] == BROKER_ALERT]
    assert hint["From"] == BROKER
    [link] = LINK.findall(hint["Body"])
    response = open_link(web, link)
    assert response.headers["location"] == f"/console/leads/{lead_id(ctx)}", "the lead alerted last"
    with Session(ctx.engine) as session:
        leads = session.exec(select(Lead)).all()
    assert sorted(x.phone for x in leads) == [OTHER_CALLER, CALLER], "no lead for the team's own text"


def test_team_reply_answered_once_per_window(web, post, twilio_api, ctx, clock) -> None:
    """Two texts in a row (or a phone's auto-reply) get one answer; after the window, one more."""
    handoff(web, post)
    team_text(web, post, "ok")
    team_text(web, post, "calling now")
    hints = [t for t in sent_templates(ctx, twilio_api["messages"], BROKER_ALERT) if t == "alert_reply_hint"]
    assert len(hints) == 1
    clock.move_to(utcnow() + timedelta(minutes=61))
    team_text(web, post, "done")
    assert sent_templates(ctx, twilio_api["messages"], BROKER_ALERT).count("alert_reply_hint") == 2


def test_team_reply_retried_webhook_answered_once(web, post, twilio_api, ctx) -> None:
    handoff(web, post)
    for _ in range(2):
        team_text(web, post, "ok", sid="SM" + "5" * 32)
    assert sent_templates(ctx, twilio_api["messages"], BROKER_ALERT).count("alert_reply_hint") == 1


def test_team_text_without_alert_gets_console_link(web, post, twilio_api, ctx) -> None:
    team_text(web, post, "testing", sender=BROKER_CELL)
    [hint] = sent_texts(twilio_api["messages"])
    assert hint["To"] == BROKER_CELL
    assert sent_templates(ctx, twilio_api["messages"], BROKER_CELL) == ["alert_reply_hint_console"]
    assert f"{PUBLIC_URL}/console/login" in hint["Body"]


def test_text_from_textback_number_never_answered(web, post, twilio_api) -> None:
    """Two textback numbers must not answer each other."""
    team_text(web, post, "textback: texts to this number are not sent to callers.", sender=BROKER2)
    assert sent_texts(twilio_api["messages"]) == []
