"""The console's pages over HTTP (no browser): headers, redirects, refusals as pages, and the wording helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

import httpx
import pytest
from sqlmodel import Session, select

from service.models import Broker, Lead
from service.settings import DEV_AUTH_TOKEN
from service.takeover import OUTCOMES
from service.templates import load_templates
from service.twilio import fake
from service.web import console_view as view
from service.web.pages import safe_next
from service.web.principal import CSRF_HEADER
from tests.api_helpers import missed, reply, signed_in
from tests.helpers import BROKER, BROKER2, BROKER_CELL, CALLER, POLICIES, TWILIO_SID, call_params, sent_texts

NOW = datetime(2026, 6, 10, 21, 0, tzinfo=UTC)  # a Wednesday
OTHER = "+14155550177"  # a second caller


@pytest.mark.parametrize(("asked", "expected"), [
    (None, "/console"),
    ("", "/console"),
    ("/console", "/console"),
    ("/console/leads/7", "/console/leads/7"),
    ("/console?show=attention&q=dana", "/console?show=attention&q=dana"),
    ("https://evil.example/console", "/console"),
    ("//evil.example/console", "/console"),
    ("/console\\..\\x", "/console"),
    ("/api/leads", "/console"),
    ("/schema", "/console"),
])
def test_safe_next_leaves_the_console_never(asked, expected):
    assert safe_next(asked) == expected


@pytest.mark.parametrize(("moment", "tz", "expected"), [
    ("2026-06-10T20:55:00Z", "America/Los_Angeles", "Wed 1:55 PM"),
    ("2026-06-10T20:55:00Z", "America/New_York", "Wed 4:55 PM"),
    ("2026-06-10T04:05:00Z", "America/Los_Angeles", "Tue 9:05 PM"),
    ("2026-06-10T12:00:00Z", "America/New_York", "Wed 8:00 AM"),
    ("2026-06-10T16:00:00Z", "America/New_York", "Wed 12:00 PM"),
    ("2026-06-10T04:30:00Z", "America/New_York", "Wed 12:30 AM"),
    ("2026-06-01T17:05:00Z", "America/Chicago", "Jun 1, 12:05 PM"),
    ("2026-06-10T20:55:00Z", "Not/AZone", "Wed 8:55 PM"),
    (None, "America/New_York", ""),
])
def test_local_time_in_broker_zone_reads_like_a_phone(moment, tz, expected):
    assert view.local_time(moment, tz, now=NOW) == expected


@pytest.mark.parametrize(("moment", "expected"), [
    ("2026-06-10T20:59:30Z", "just now"),
    ("2026-06-10T20:56:00Z", "4 min ago"),
    ("2026-06-10T18:30:00Z", "2 h ago"),
    ("2026-06-07T21:00:00Z", "3 d ago"),
    ("2026-06-10T21:05:00Z", "just now"),
    (None, ""),
])
def test_ago_since_moment_rounds_down(moment, expected):
    assert view.ago(moment, now=NOW) == expected


@pytest.mark.parametrize(("number", "expected"), [
    ("+14155550123", "(415) 555-0123"),
    ("+442071838750", "+442071838750"),
    (None, ""),
])
def test_phone_us_number_reads_as_dialled(number, expected):
    assert view.phone(number) == expected


def test_open_login_page_sends_no_cache_and_a_strict_policy(client):
    response = client.get("/console/login")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert 'action="/api/auth/code"' in response.text


def test_open_login_page_next_elsewhere_goes_back_to_the_inbox(client):
    response = client.get("/console/login", params={"next": "https://evil.example/"})
    assert 'data-next="/console"' in response.text


def test_get_static_script_and_stylesheet_are_served(client):
    script = client.get("/console/static/console.js")
    style = client.get("/console/static/console.css")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")


# -- signed in: the inbox, a lead, the live fragments, the busy toggle ---------------------------------------

def cookie(headers: dict[str, str]) -> dict[str, str]:
    return {"Cookie": headers["Cookie"]}


def csrf_of(headers: dict[str, str]) -> str:
    return headers[CSRF_HEADER]


def lead_id_of(ctx, phone: str = CALLER, number: str = BROKER) -> int:
    broker = ctx.broker_for(number)
    with Session(ctx.engine) as session:
        lead = session.exec(select(Lead).where(Lead.phone == phone, Lead.broker_id == broker.id)).one()
    assert lead.id is not None
    return lead.id


@pytest.mark.parametrize("path", ["/console", "/console/leads/1", "/console?show=needs_attention&q=55"])
def test_open_page_signed_out_redirects_to_sign_in_and_back(client, path):
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/console/login?next={quote(path, safe='/')}"


@pytest.mark.parametrize("path", ["/console/live", "/console/leads/1/live"])
def test_get_live_fragment_signed_out_answers_401(client, path):
    assert client.get(path, follow_redirects=False).status_code == 401


def test_open_inbox_handoff_stands_out_with_reasons_in_words(client, post, ctx):
    missed(client, post)
    reply(client, post, "can I lock my rate today?")
    missed(client, post, caller=OTHER)
    response = client.get("/console", headers=cookie(signed_in(ctx)))
    assert response.status_code == 200, response.text
    rows = response.text.split('<li class="lead')[1:]
    assert len(rows) == 2
    assert '(415) 555-0177' in rows[0]  # newest first
    assert "attention" not in rows[0].split(">")[0]
    assert rows[1].startswith(" attention")
    assert "Needs you:</strong> asked about a rate lock" in rows[1]
    assert f'href="/console/leads/{lead_id_of(ctx)}"' in rows[1]


def test_open_inbox_show_needs_attention_lists_only_those(client, post, ctx):
    missed(client, post)
    reply(client, post, "can I lock my rate today?")
    missed(client, post, caller=OTHER)
    response = client.get("/console", params={"show": "needs_attention"}, headers=cookie(signed_in(ctx)))
    assert response.text.count('<li class="lead') == 1
    assert '<option value="needs_attention" selected>' in response.text


def test_open_inbox_search_by_digits_finds_the_caller(client, post, ctx):
    missed(client, post)
    missed(client, post, caller=OTHER)
    response = client.get("/console", params={"q": "0177"}, headers=cookie(signed_in(ctx)))
    assert response.text.count('<li class="lead') == 1
    assert "(415) 555-0177" in response.text


def test_open_lead_shows_conversation_in_broker_time(client, post, ctx):
    missed(client, post)
    reply(client, post, "refi, in the next month or so")
    response = client.get(f"/console/leads/{lead_id_of(ctx)}", headers=cookie(signed_in(ctx)))
    assert response.status_code == 200, response.text
    html = response.text
    assert "refi, in the next month or so" in html
    assert '<span class="author">textback</span>' in html  # the opener
    assert "Wed 2:00 PM" in html  # 21:00 UTC is 2 PM in Dana's Los Angeles
    assert "<dt>Loan</dt><dd>Refinance</dd>" in html
    assert "Missed call" in html  # the timeline


def test_open_lead_of_another_broker_is_the_404_page(client, post, ctx):
    missed(client, post, to=BROKER2)
    response = client.get(f"/console/leads/{lead_id_of(ctx, number=BROKER2)}", headers=cookie(signed_in(ctx)))
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>Lead not found</h1>" in response.text
    missing = client.get("/console/leads/999999", headers=cookie(signed_in(ctx)))
    assert missing.status_code == 404
    assert missing.text == response.text


def test_get_live_fragment_unchanged_answers_304(client, post, ctx):
    missed(client, post)
    headers = cookie(signed_in(ctx))
    first = client.get("/console/live", headers=headers)
    assert first.status_code == 200
    assert 'data-part="leads"' in first.text
    again = client.get("/console/live", headers={**headers, "If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    missed(client, post, caller=OTHER)
    changed = client.get("/console/live", headers={**headers, "If-None-Match": first.headers["etag"]})
    assert changed.status_code == 200
    assert "(415) 555-0177" in changed.text


def test_post_busy_sets_then_clears_with_a_client(client, ctx):
    headers = signed_in(ctx)
    form = {"csrf_token": csrf_of(headers), "until": "16:30", "back": "/console?show=needs_attention"}
    response = client.post(f"/console/brokers/{BROKER}/busy", data=form, headers=cookie(headers),
                           follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console?show=needs_attention&done=busy"
    page = client.get(response.headers["location"], headers=cookie(headers)).text
    assert "with a client until 4:30 PM" in page
    assert "Saved: callers are told you are with a client" in page
    cleared = client.post(f"/console/brokers/{BROKER}/busy", data={**form, "until": ""}, headers=cookie(headers),
                          follow_redirects=False)
    assert cleared.headers["location"].endswith("done=free")
    assert "with a client until" not in client.get("/console", headers=cookie(headers)).text


def test_post_busy_time_passed_shows_the_reason_on_the_inbox(client, ctx):
    headers = signed_in(ctx)
    response = client.post(f"/console/brokers/{BROKER}/busy", headers=cookie(headers),
                           data={"csrf_token": csrf_of(headers), "until": "09:00", "back": "/console"})
    assert response.status_code == 422
    assert "That time has passed" in response.text
    assert 'role="alert"' in response.text


@pytest.mark.parametrize("token", [None, "wrong"])
def test_post_busy_without_the_csrf_token_is_refused(client, ctx, token):
    headers = signed_in(ctx)
    form = {"until": "16:30"} | ({"csrf_token": token} if token else {})
    response = client.post(f"/console/brokers/{BROKER}/busy", data=form, headers=cookie(headers))
    assert response.status_code == 403
    assert "<h1>Please try again</h1>" in response.text
    with Session(ctx.engine) as session:
        assert session.get(Broker, ctx.broker_for(BROKER).id).busy_until is None


def test_post_busy_for_a_broker_not_yours_is_the_404_page(client, ctx):
    headers = signed_in(ctx)
    response = client.post(f"/console/brokers/{BROKER2}/busy", headers=cookie(headers),
                           data={"csrf_token": csrf_of(headers), "until": "16:30"})
    assert response.status_code == 404


def test_post_logout_revokes_the_session_and_clears_cookies(client, ctx):
    headers = signed_in(ctx)
    response = client.post("/console/logout", data={"csrf_token": csrf_of(headers)}, headers=cookie(headers),
                           follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?signed_out=1"
    cleared = [c for c in response.headers.get_list("set-cookie") if "Max-Age=0" in c]
    assert len(cleared) == 2
    again = client.get("/console", headers=cookie(headers), follow_redirects=False)
    assert again.status_code == 303
    assert again.headers["location"].startswith("/console/login")


def test_post_logout_without_the_csrf_token_keeps_the_session(client, ctx):
    headers = signed_in(ctx)
    response = client.post("/console/logout", data={}, headers=cookie(headers), follow_redirects=False)
    assert response.status_code == 403
    assert client.get("/console", headers=cookie(headers), follow_redirects=False).status_code == 200


# -- the reply box ------------------------------------------------------------------------------------------

FLAGGED = "Rates from 5.9% this week, want to lock one in?"  # policies/sending/human.yaml: must_match


def post_reply(client, ctx, lead_id: int, body: str, headers: dict[str, str] | None = None, **extra: str):
    headers = headers or signed_in(ctx)
    return client.post(f"/console/leads/{lead_id}/reply", data={"csrf_token": csrf_of(headers), "body": body, **extra},
                       headers=cookie(headers), follow_redirects=False)


def test_post_reply_sends_from_the_business_number_and_says_so(client, post, ctx, twilio_api):
    missed(client, post)
    lead_id = lead_id_of(ctx)
    headers = signed_in(ctx)
    response = post_reply(client, ctx, lead_id, "Hi, this is Dana. Is now a good time to talk?", headers)
    assert response.status_code == 303
    assert response.headers["location"] == f"/console/leads/{lead_id}?done=sent"
    [text] = [t for t in sent_texts(twilio_api["messages"]) if t["Body"].startswith("Hi, this is Dana. Is now")]
    assert (text["From"], text["To"]) == (BROKER, CALLER)
    page = client.get(response.headers["location"], headers=cookie(headers)).text
    assert "Sent from the business number" in page
    assert '<span class="author">You</span>' in page


def test_post_reply_flagged_by_the_guard_shows_findings_then_sends_anyway(client, post, ctx, twilio_api):
    missed(client, post)
    lead_id = lead_id_of(ctx)
    headers = signed_in(ctx)
    refused = post_reply(client, ctx, lead_id, FLAGGED, headers)
    assert refused.status_code == 422
    assert 'id="guard-warning"' in refused.text
    assert "5.9%" in refused.text.split('id="guard-warning"')[1].split("</div>")[0]
    assert f">{FLAGGED}</textarea>" in refused.text  # what they typed is kept
    assert 'name="confirm" value="true"' in refused.text
    assert not [t for t in sent_texts(twilio_api["messages"]) if t["Body"] == FLAGGED]
    sent = post_reply(client, ctx, lead_id, FLAGGED, headers, confirm="true")
    assert sent.status_code == 303
    assert [t["To"] for t in sent_texts(twilio_api["messages"]) if t["Body"] == FLAGGED] == [CALLER]
    assert "sent past a warning" in client.get(f"/console/leads/{lead_id}", headers=cookie(headers)).text


def test_post_reply_opted_out_says_call_instead(client, post, ctx, twilio_api):
    missed(client, post)
    reply(client, post, "STOP")
    lead_id = lead_id_of(ctx)
    response = post_reply(client, ctx, lead_id, "Hi, this is Dana.")
    assert response.status_code == 409
    assert "opted out" in response.text.split('id="error"')[1].split("</p>")[0]
    assert "<textarea id=\"body\" name=\"body\" rows=\"3\" maxlength=\"1600\" required" in response.text
    assert not [t for t in sent_texts(twilio_api["messages"]) if t["Body"] == "Hi, this is Dana."]


def test_post_reply_empty_says_what_to_fix(client, post, ctx):
    missed(client, post)
    response = post_reply(client, ctx, lead_id_of(ctx), "   ")
    assert response.status_code == 422
    assert "Empty; write the text to send." in response.text


def test_post_reply_to_a_lead_not_yours_is_the_404_page(client, post, ctx, twilio_api):
    missed(client, post, to=BROKER2)
    response = post_reply(client, ctx, lead_id_of(ctx, number=BROKER2), "Hi")
    assert response.status_code == 404
    assert "<h1>Lead not found</h1>" in response.text
    assert not [t for t in sent_texts(twilio_api["messages"]) if t["Body"] == "Hi"]


def test_post_reply_without_the_csrf_token_sends_nothing(client, post, ctx, twilio_api):
    missed(client, post)
    headers = signed_in(ctx)
    response = client.post(f"/console/leads/{lead_id_of(ctx)}/reply", data={"body": "Hi"}, headers=cookie(headers))
    assert response.status_code == 403
    assert not [t for t in sent_texts(twilio_api["messages"]) if t["Body"] == "Hi"]


# -- outcomes -----------------------------------------------------------------------------------------------

def test_outcome_buttons_are_the_api_outcomes_in_order():
    assert tuple(view.OUTCOMES) == OUTCOMES


def test_post_outcome_saves_it_with_the_note_in_the_timeline(client, post, ctx):
    missed(client, post)
    lead_id = lead_id_of(ctx)
    headers = signed_in(ctx)
    response = client.post(f"/console/leads/{lead_id}/outcome", headers=cookie(headers), follow_redirects=False,
                           data={"csrf_token": csrf_of(headers), "outcome": "appointment", "note": "Thu 10am"})
    assert response.status_code == 303
    assert response.headers["location"] == f"/console/leads/{lead_id}?done=outcome"
    html = client.get(response.headers["location"], headers=cookie(headers)).text
    assert "Outcome saved." in html
    assert "Outcome: Appointment (by Dana Whitfield) — “Thu 10am”" in html
    assert 'value="appointment" class="current"' in html


def test_post_outcome_unknown_re_shows_the_lead_with_the_note_kept(client, post, ctx):
    missed(client, post)
    headers = signed_in(ctx)
    response = client.post(f"/console/leads/{lead_id_of(ctx)}/outcome", headers=cookie(headers),
                           data={"csrf_token": csrf_of(headers), "outcome": "married", "note": "keep me"})
    assert response.status_code == 422
    assert "is not an outcome" in response.text
    assert ">keep me</textarea>" in response.text


def test_post_outcome_without_the_csrf_token_saves_nothing(client, post, ctx):
    missed(client, post)
    headers = signed_in(ctx)
    response = client.post(f"/console/leads/{lead_id_of(ctx)}/outcome", headers=cookie(headers),
                           data={"outcome": "lost"})
    assert response.status_code == 403
    with Session(ctx.engine) as session:
        assert session.get(Lead, lead_id_of(ctx)).outcome is None


@pytest.mark.parametrize(("event", "expected"), [
    ({"kind": "missed_call"}, "Missed call"),
    ({"kind": "handoff", "data": {"reasons": ["rate_lock", "closing"]}}, "Needs a person: asked about a rate lock, about a closing"),
    ({"kind": "field_captured", "data": {"field": "loan_type", "value": "refinance"}}, "Captured loan type: Refinance"),
    ({"kind": "human_text", "actor": "+14155550111", "actor_name": "Dana"}, "Texted by Dana"),
    ({"kind": "human_contact", "data": {"how": "text"}}, "In touch with the borrower: by text"),
    ({"kind": "human_contact", "data": {"how": "not_a_fit"}}, "In touch with the borrower: not a fit"),
    ({"kind": "outcome", "actor": "+1", "actor_name": "Dana", "data": {"outcome": "lost", "note": None}}, "Outcome: Lost (by Dana)"),
    ({"kind": "sla_alert", "data": {"to": ["+14155550112"]}}, "Reminder sent to (415) 555-0112"),
    ({"kind": "something_new"}, "Something new"),
])
def test_event_words_read_as_a_timeline(templates, event, expected):
    assert view.event_words(event, templates.phrase) == expected


@pytest.fixture(scope="module")
def templates():
    """The reviewed templates and phrases (policies/templates), without a service around them."""
    return load_templates(POLICIES)


# -- click-to-call ------------------------------------------------------------------------------------------

CALLS_URL = f"https://api.twilio.com/2010-04-01/Accounts/{TWILIO_SID}/Calls.json"


@pytest.fixture
def calls_api(twilio_api):
    """Twilio's Calls API, placing every call it is asked for."""

    def created(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        return httpx.Response(201, json=fake.call_json(form["To"], form["From"], account_sid=TWILIO_SID))

    return twilio_api.post(CALLS_URL, name="calls").mock(side_effect=created)


def test_post_call_rings_your_phone_from_the_business_number(client, post, ctx, calls_api):
    missed(client, post)
    lead_id = lead_id_of(ctx)
    headers = signed_in(ctx)
    response = client.post(f"/console/leads/{lead_id}/call", data={"csrf_token": csrf_of(headers)},
                           headers=cookie(headers), follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == f"/console/leads/{lead_id}?done=calling"
    [request] = calls_api.calls
    form = dict(httpx.QueryParams(request.request.content.decode()))
    assert (form["To"], form["From"]) == (BROKER_CELL, BROKER)
    html = client.get(response.headers["location"], headers=cookie(headers)).text
    assert "Twilio is calling your phone now" in html
    assert "Twilio is ringing Dana Whitfield&#39;s phone" in html


def test_post_call_twilio_refuses_shows_why_on_the_lead(client, post, ctx, twilio_api):
    twilio_api.post(CALLS_URL).respond(400, json={"code": 21215, "message": "Geo permission", "status": 400})
    missed(client, post)
    headers = signed_in(ctx)
    response = client.post(f"/console/leads/{lead_id_of(ctx)}/call", data={"csrf_token": csrf_of(headers)},
                           headers=cookie(headers))
    assert response.status_code == 502
    assert "Twilio did not place the call" in response.text.split('id="error"')[1].split("</p>")[0]


def test_post_call_without_the_csrf_token_places_none(client, post, ctx, calls_api):
    missed(client, post)
    headers = signed_in(ctx)
    response = client.post(f"/console/leads/{lead_id_of(ctx)}/call", data={}, headers=cookie(headers))
    assert response.status_code == 403
    assert not calls_api.called


def test_open_login_page_signed_in_goes_on_but_a_link_session_may_sign_in(client, post, ctx):
    missed(client, post)
    full = client.get("/console/login", params={"next": "/console"}, headers=cookie(signed_in(ctx)),
                      follow_redirects=False)
    assert full.status_code == 303
    assert full.headers["location"] == "/console"
    one_lead = cookie(signed_in(ctx, lead_id=lead_id_of(ctx)))
    page = client.get("/console/login", headers=one_lead, follow_redirects=False)
    assert page.status_code == 200
    assert 'id="code-request"' in page.text
    inbox = client.get("/console", headers=one_lead).text
    assert "this browser sees that lead only" in inbox
    assert inbox.count('<li class="lead') == 1


@pytest.mark.parametrize("settings_env", [{"twilio_account_sid": None, "twilio_auth_token": None}])
def test_post_reply_and_call_in_dry_run_say_nothing_left_the_machine(client, post, ctx, capsys):
    """Dry-run (a fresh machine, no Twilio credentials): the text is printed, no call is placed, and the page
    says so instead of "sent"."""
    form = call_params("CA" + "5" * 32, DialCallStatus="no-answer")
    assert post(client, "/twilio/voice/dial-status", form, token=DEV_AUTH_TOKEN).status_code == 200
    lead_id = lead_id_of(ctx)
    headers = signed_in(ctx)
    sent = post_reply(client, ctx, lead_id, "Hi, this is Dana.", headers)
    assert sent.headers["location"] == f"/console/leads/{lead_id}?done=dry_run"
    called = client.post(f"/console/leads/{lead_id}/call", data={"csrf_token": csrf_of(headers)},
                         headers=cookie(headers), follow_redirects=False)
    assert called.headers["location"] == f"/console/leads/{lead_id}?done=not_placed"
    printed = capsys.readouterr().out
    assert f"[dry-run] text to {CALLER} from {BROKER} (human): Hi, this is Dana." in printed
    assert f"[dry-run] call to {BROKER_CELL} from {BROKER}" in printed
    html = client.get(called.headers["location"], headers=cookie(headers)).text
    assert "No call was placed" in html
    assert "dry-run (not sent)" in html


@pytest.mark.parametrize(("path", "heading"), [
    ("/console/leads/abc", "Lead not found"),
    ("/console/leads/99999999999999999999", "Lead not found"),
    ("/console/nope", "Page not found"),
    ("/console/inbox/old", "Page not found"),
])
def test_open_unknown_console_address_is_a_404_page(client, ctx, path, heading):
    response = client.get(path, headers=cookie(signed_in(ctx)))
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert f"<h1>{heading}</h1>" in response.text
