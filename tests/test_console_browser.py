"""The console in a real browser: Debian's Chromium driven by Playwright against the real app under uvicorn, on
a real database, with the real Twilio SDK whose Messages and Calls APIs are mocked at the HTTP boundary."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from sqlmodel import Session, select

from service.models import HumanCall, Lead
from service.twilio import fake
from service.web.principal import SESSION_COOKIE
from tests.api_helpers import signed_in
from tests.browser import (
    CHROMIUM,
    PHONE_VIEWPORT,
    SCREENSHOTS,
    PageWatch,
    check_page,
    free_socket,
    require_chromium,
    serve,
)
from tests.helpers import (
    BROKER,
    BROKER2,
    BROKER_ALERT,
    BROKER_CELL,
    CALLER,
    TWILIO_SID,
    TWILIO_TOKEN,
    call_params,
    sent_texts,
    sms_params,
)

OTHER = "+14155550177"  # a second caller


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, launched once for this module's tests."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def live_socket():
    """The live server's socket, bound before the settings so the public URL is the server's own."""
    sock = free_socket()
    yield sock
    sock.close()


@pytest.fixture
def settings_env(live_socket) -> dict[str, object]:
    """Twilio signs (and alert links point) against the live server's own URL."""
    host, port = live_socket.getsockname()[:2]
    return {"public_url": f"http://{host}:{port}"}


@pytest.fixture
def live(ctx, twilio_api, live_socket) -> Iterator[str]:
    """The app on `ctx` under uvicorn; the test's own httpx requests to it pass the Twilio mock through."""
    from service.app import create_app

    twilio_api.route(host="127.0.0.1").pass_through()
    with serve(create_app(ctx=ctx, run_worker=False), live_socket) as url:
        yield url


@pytest.fixture
def watch() -> PageWatch:
    return PageWatch()


@pytest.fixture
def page(browser, watch) -> Iterator[Any]:
    """A phone-sized page of a fresh browser context (no cookies), its errors collected in `watch`."""
    context = browser.new_context(viewport=PHONE_VIEWPORT)
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    watch.attach(tab)
    yield tab
    context.close()


def test_open_login_page_signed_out_is_labelled_and_checks_the_number(live, page, watch):
    """The sign-in page passes the page checks and refuses a number that cannot be one, before any request."""
    page.goto(f"{live}/console/login")
    check_page(page)
    page.get_by_label("Your mobile number").fill("555")
    page.get_by_role("button", name="Text me a code").click()
    assert "Enter your mobile number" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Your mobile number").evaluate("el => el === document.activeElement")
    assert page.locator("#code-enter").is_hidden()
    assert watch.errors == []


FOCUSED = """() => { const el = document.activeElement, style = getComputedStyle(el), box = el.getBoundingClientRect();
  return {tag: el.tagName.toLowerCase(), id: el.id, text: el.textContent.trim(), top: box.top,
          outline: style.outlineStyle === 'none' ? 0 : parseFloat(style.outlineWidth)}; }"""


def test_keyboard_skip_link_then_visible_focus_on_each_control(live, page):
    """From the keyboard: the first Tab shows the skip link, Enter jumps into the page, and every focused
    control draws a visible focus ring."""
    page.goto(f"{live}/console/login")
    page.keyboard.press("Tab")
    skip = page.evaluate(FOCUSED)
    assert (skip["tag"], skip["text"]) == ("a", "Skip to content")
    assert skip["top"] >= 0  # moved on screen while focused
    page.keyboard.press("Enter")
    assert page.evaluate(FOCUSED)["id"] == "main"
    page.keyboard.press("Tab")
    phone = page.evaluate(FOCUSED)
    assert phone["id"] == "phone"
    assert phone["outline"] >= 2
    page.keyboard.press("Tab")
    button = page.evaluate(FOCUSED)
    assert (button["tag"], button["text"]) == ("button", "Text me a code")
    assert button["outline"] >= 2


def test_open_login_page_without_javascript_says_sign_in_needs_it(live, browser):
    context = browser.new_context(viewport=PHONE_VIEWPORT, java_script_enabled=False)
    try:
        tab = context.new_page()
        tab.goto(f"{live}/console/login")
        assert "Signing in needs JavaScript" in tab.locator("main").inner_text()
    finally:
        context.close()


# -- signed in ----------------------------------------------------------------------------------------------

def post_signed(live: str, path: str, form: dict[str, str]) -> None:
    """A webhook to the live server, signed as Twilio signs it (against the server's own public URL)."""
    response = httpx.post(live + path, data=form,
                          headers=fake.signature_headers(token=TWILIO_TOKEN, public_url=live, path=path, form=form))
    assert response.status_code == 200, response.text


def missed_call(live: str, caller: str = CALLER, to: str = BROKER, sid: str | None = None) -> None:
    """A call rings the broker out: /twilio/voice, then the dial action with no-answer."""
    sid = sid or "CA" + (to[-10:] + caller[-10:]).rjust(32, "0")
    post_signed(live, "/twilio/voice", call_params(sid, caller=caller, to=to))
    post_signed(live, "/twilio/voice/dial-status", call_params(sid, caller=caller, to=to, DialCallStatus="no-answer"))


def with_session(page, ctx, live: str, phone: str = BROKER_CELL) -> None:
    """The browser holds a session of `phone` (as after signing in with the texted code)."""
    token = signed_in(ctx, phone)["Cookie"].split("=", 1)[1]
    page.context.add_cookies([{"name": SESSION_COOKIE, "value": token, "url": live}])


def lead_id_of(ctx, phone: str = CALLER, number: str = BROKER) -> int:
    broker = ctx.broker_for(number)
    with Session(ctx.engine) as session:
        lead = session.exec(select(Lead).where(Lead.phone == phone, Lead.broker_id == broker.id)).one()
    return lead.id


def test_watch_inbox_missed_call_appears_without_reload_and_is_announced(live, page, ctx, watch):
    with_session(page, ctx, live)
    page.goto(f"{live}/console")
    check_page(page)
    assert "No leads yet" in page.locator("main").inner_text()
    page.evaluate("window.__sameDocument = true")
    missed_call(live)
    row = page.locator("li.lead", has_text="(415) 555-0199")
    row.wait_for(timeout=10_000)
    assert page.evaluate("window.__sameDocument === true")  # no reload: the script swapped the rows in
    expect(page.locator("#announce")).to_contain_text("(415) 555-0199")
    check_page(page)
    assert watch.errors == []


def test_open_lead_of_another_broker_shows_the_404_page(live, page, ctx, watch):
    """Dana's cell is a member of Dana's broker only: Marcus's lead is not found, like no lead at all."""
    missed_call(live, to=BROKER2)
    with_session(page, ctx, live, BROKER_CELL)
    response = page.goto(f"{live}/console/leads/{lead_id_of(ctx, number=BROKER2)}")
    assert response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Lead not found")
    check_page(page)
    assert "(212)" not in page.content()


def texted_code(twilio_api, phone: str, timeout: float = 10.0) -> str:
    """The 6-digit code of the latest sign-in text the Messages API was asked to send to `phone`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        texts = [t for t in sent_texts(twilio_api["messages"]) if t["To"] == phone]
        match = re.search(r"\b(\d{6})\b", texts[-1]["Body"]) if texts else None
        if match:
            return match.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no sign-in code texted to {phone}")


def sign_in_with_code(page, twilio_api, live: str, phone: str, typed: str) -> None:
    """Open the inbox signed out, sign in with the code texted to `phone` (typed as `typed`), land on the inbox."""
    page.goto(f"{live}/console")
    assert page.url == f"{live}/console/login?next=/console"
    check_page(page)
    page.get_by_label("Your mobile number").fill(typed)
    page.get_by_role("button", name="Text me a code").click()
    code_box = page.get_by_label("The 6-digit code we texted you")
    expect(code_box).to_be_focused()
    code_box.fill(texted_code(twilio_api, phone))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live}/console")
    expect(page.get_by_role("heading", level=1)).to_have_text("Inbox")


def test_sign_in_with_texted_code_then_sign_out(live, page, twilio_api, watch):
    """Signing in as a phone typed the national way; signing out revokes the session (the inbox asks again)."""
    sign_in_with_code(page, twilio_api, live, BROKER_CELL, "(415) 555-0111")
    [text] = [t for t in sent_texts(twilio_api["messages"]) if t["To"] == BROKER_CELL]
    assert text["From"] == BROKER  # from Dana's own Twilio number
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{live}/console/login?signed_out=1")
    expect(page.get_by_role("status").first).to_have_text("You are signed out.")
    page.goto(f"{live}/console")
    assert page.url.startswith(f"{live}/console/login")
    assert watch.errors == []


def test_sign_in_wrong_code_says_so_and_stays(live, page, twilio_api, watch):
    page.goto(f"{live}/console/login")
    page.get_by_label("Your mobile number").fill(BROKER_CELL)
    page.get_by_role("button", name="Text me a code").click()
    code = texted_code(twilio_api, BROKER_CELL)
    page.get_by_label("The 6-digit code we texted you").fill(f"{(int(code) + 1) % 1_000_000:06d}")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    assert page.url == f"{live}/console/login"
    assert [e for e in watch.errors if "401" not in e] == []


def wait_for_text(twilio_api, timeout: float = 10.0, **fields: str) -> dict[str, str]:
    """The first text the Messages API was asked to send whose form has all of `fields` (waits for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [t for t in sent_texts(twilio_api["messages"]) if all(t.get(k) == v for k, v in fields.items())]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no text with {fields}")


CALLS_URL = f"https://api.twilio.com/2010-04-01/Accounts/{TWILIO_SID}/Calls.json"
USER_LEG = "CA" + "c" * 32  # Twilio's call to the user's phone


@pytest.fixture
def calls_api(twilio_api):
    """Twilio's Calls API, placing every click-to-call it is asked for."""

    def created(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        return httpx.Response(201, json=fake.call_json(form["To"], form["From"], sid=USER_LEG,
                                                       account_sid=TWILIO_SID))

    return twilio_api.post(CALLS_URL, name="calls").mock(side_effect=created)


RECORDING_URL = f"https://api.twilio.com/2010-04-01/Accounts/{TWILIO_SID}/Recordings/RE{'a' * 32}"


def voicemail_params(seconds: str, caller: str = CALLER, to: str = BROKER) -> dict[str, str]:
    """Twilio's recording callback after the caller left a voicemail on the missed call."""
    sid = "CA" + (to[-10:] + caller[-10:]).rjust(32, "0")
    return call_params(sid, caller=caller, to=to, CallStatus="completed", RecordingSid="RE" + "a" * 32,
                       RecordingUrl=RECORDING_URL, RecordingDuration=seconds)


def answered(live: str, ctx, *, duration: str) -> None:
    """What Twilio posts when the user answers a click-to-call and the bridged call to the borrower ends."""
    with Session(ctx.engine) as session:
        [call_id] = session.exec(select(HumanCall.id)).all()

    def leg(**extra: str) -> dict[str, str]:
        return call_params(USER_LEG, caller=BROKER, to=BROKER_CELL, Direction="outbound-api", **extra)

    post_signed(live, f"/twilio/voice/bridge?call={call_id}", leg(CallStatus="in-progress"))
    post_signed(live, f"/twilio/voice/bridge-status?call={call_id}",
                leg(CallStatus="in-progress", DialCallStatus="completed", DialCallDuration=duration,
                    DialCallSid="CA" + "d" * 32))


def test_work_a_lead_from_sign_in_to_outcome(live, page, twilio_api, calls_api, ctx, watch):
    """The broker's whole path on a phone-sized screen: sign in with the texted code, see a missed call arrive
    live and turn into a handoff, open it, reply from the business number, click to call (and see the call
    connect), mark an outcome; another broker's
    lead is not found. The README's screenshots are taken on the way."""
    sign_in_with_code(page, twilio_api, live, BROKER_CELL, BROKER_CELL)
    page.evaluate("window.__sameDocument = true")

    missed_call(live)
    row = page.locator("li.lead", has_text="(415) 555-0199")
    row.wait_for()
    wait_for_text(twilio_api, To=CALLER, From=BROKER)  # the opener went out
    post_signed(live, "/twilio/voice/voicemail", voicemail_params(seconds="23"))
    post_signed(live, "/twilio/sms", sms_params("refi, in the next month or so"))
    post_signed(live, "/twilio/sms", sms_params("can I lock my rate today?"))
    expect(row).to_contain_text("Needs you: asked about a rate lock")
    expect(page.locator("#announce")).to_contain_text("needs you")
    missed_call(live, caller=OTHER)
    page.locator("li.lead", has_text="(415) 555-0177").wait_for()
    assert page.evaluate("window.__sameDocument === true")  # all of it without a reload
    check_page(page)
    page.screenshot(path=str(SCREENSHOTS / "inbox.png"))

    row.get_by_role("link").click()
    page.wait_for_url(f"{live}/console/leads/{lead_id_of(ctx)}")
    check_page(page)
    expect(page.locator(".notice.attention-text")).to_contain_text("asked about a rate lock")
    conversation = page.locator('[data-part="conversation"]')
    expect(conversation).to_contain_text("can I lock my rate today?")
    expect(conversation.locator("audio[controls]")).to_have_attribute("src", f"{RECORDING_URL}.mp3")
    expect(conversation.locator(".voicemails")).to_contain_text("0:23")

    words = "Hi, this is Dana. I can call you in 10 minutes about the rate lock."
    page.get_by_label("Your text to (415) 555-0199").fill(words)
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("#flash")).to_contain_text("Sent from the business number")
    expect(conversation.locator(".bubble.out.human", has_text=words)).to_contain_text("You")
    wait_for_text(twilio_api, Body=words, From=BROKER, To=CALLER)

    page.get_by_role("button", name="Call (415) 555-0199").click()
    expect(page.locator("#flash")).to_contain_text("Twilio is calling your phone now")
    calls = page.locator('[data-part="conversation"] .calls')
    expect(calls).to_contain_text("Twilio is ringing Dana Whitfield's phone")
    [placed] = calls_api.calls
    form = dict(httpx.QueryParams(placed.request.content.decode()))
    assert (form["To"], form["From"]) == (BROKER_CELL, BROKER)  # the user's phone, from the business number
    answered(live, ctx, duration="95")  # Dana picks up, Twilio bridges the borrower, they talk
    expect(calls).to_contain_text("Dana Whitfield talked with the borrower (1:35)")  # without a reload

    page.get_by_label("Note (optional)").fill("Booked Thursday 10 AM")
    page.get_by_role("group", name="Mark this lead as").get_by_role("button", name="Appointment").click()
    expect(page.locator("#flash")).to_contain_text("Outcome saved")
    expect(page.locator('[data-part="timeline"]')).to_contain_text("Outcome: Appointment")
    expect(page.locator('[data-part="timeline"]')).to_contain_text("Booked Thursday 10 AM")
    check_page(page)
    page.screenshot(path=str(SCREENSHOTS / "lead.png"), full_page=True)

    missed_call(live, to=BROKER2)  # Marcus's lead: Dana's cell is no member of his team
    response = page.goto(f"{live}/console/leads/{lead_id_of(ctx, CALLER, BROKER2)}")
    assert response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Lead not found")
    assert [e for e in watch.errors if "status of 404" not in e] == []


def test_open_alert_link_shows_that_lead_only(live, page, twilio_api, ctx, watch):
    """The link in the handoff alert texted to the team opens the lead, signed in, on a fresh phone browser."""
    missed_call(live)
    wait_for_text(twilio_api, To=CALLER, From=BROKER)
    missed_call(live, caller=OTHER)
    post_signed(live, "/twilio/sms", sms_params("can I lock my rate today?"))
    alert = wait_for_text(twilio_api, To=BROKER_ALERT)
    link = re.search(r"(http://127\.0\.0\.1:\d+/l/\S+)", alert["Body"])
    assert link, alert["Body"]
    page.goto(link.group(1))
    assert page.url == f"{live}/console/leads/{lead_id_of(ctx)}"
    expect(page.get_by_role("heading", level=1)).to_have_text("(415) 555-0199")
    expect(page.locator("main")).to_contain_text("this browser sees that lead only")
    check_page(page)
    page.get_by_role("link", name="← Inbox").click()
    expect(page.locator("li.lead")).to_have_count(1)
    page.get_by_role("link", name="Sign in with a code").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    assert watch.errors == []


# -- the report ---------------------------------------------------------------------------------------------

REPORT_WEEK = [  # (day of June 2026, hour in Los Angeles, minutes until a person reached them, or None)
    *((8 + i % 5, 9 + i % 8, 4 + 3 * i) for i in range(14)),
    *((9, 18, None) for _ in range(4)),  # Tuesday evening: nobody calls back
    *((13, 10, 240) for _ in range(3)),  # Saturday morning: reached, hours later
    (12, 12, None), (10, 8, 30), (11, 16, 90),
]


def _report_history(live: str, ctx, clock) -> None:
    """24 missed-call leads in the week of Monday 2026-06-08, through the live server's webhooks and API."""
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    user = signed_in(ctx, BROKER_CELL)
    for i, (day, hour, reach) in enumerate(REPORT_WEEK):
        caller = f"+1415555{5000 + i:04d}"
        at = datetime(2026, 6, day, hour, i % 50, tzinfo=ZoneInfo("America/Los_Angeles"))
        clock.move_to(at)
        missed_call(live, caller=caller, sid=f"CA{5000 + i:032d}")
        if reach is not None:
            clock.move_to(at + timedelta(minutes=reach))
            response = httpx.post(f"{live}/api/leads/{lead_id_of(ctx, caller)}/outcome", json={"outcome": "reached"},
                                  headers=signed_in(ctx, BROKER_CELL) if reach > 600 else user)
            assert response.status_code == 200, response.text


def test_read_report_verdict_charts_and_download(live, browser, ctx, clock, watch):
    """The report page of a scripted week: the verdict in words, the hours to cover, three charts drawn with
    their own styles under the page's CSP (no console error), a one-file download; the README's screenshot."""
    _report_history(live, ctx, clock)
    clock.move_to("2026-06-16T16:00:00+00:00")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    watch.attach(tab)
    try:
        with_session(tab, ctx, live)
        tab.goto(f"{live}/console")
        tab.get_by_role("link", name="Report").click()
        tab.get_by_label("First day").fill("2026-06-08")
        tab.get_by_label("Last day").fill("2026-06-14")
        tab.get_by_role("button", name="Show").click()
        tab.wait_for_url(re.compile(r"/console/report\?since=2026-06-08&until=2026-06-14"))
        check_page(tab)
        expect(tab.locator("#verdict")).to_contain_text("Not enough: 15 of 24 missed-call leads (62%) reached")
        expect(tab.locator("main")).to_contain_text("Tue 18:00")
        svgs = tab.locator("main svg")
        expect(svgs).to_have_count(3)
        # The charts' own <style> applies (a CSP that blocked it would draw them black): a white background.
        fill = tab.evaluate("() => getComputedStyle(document.querySelector('main svg .background')).fill")
        assert fill in ("rgb(255, 255, 255)", "#ffffff", "white"), fill
        tab.screenshot(path=str(SCREENSHOTS / "report.png"), full_page=True)
        with tab.expect_download() as download_info:
            tab.get_by_role("link", name="Download as one HTML file").click()
        download = download_info.value
        assert download.suggested_filename == "textback-report-2026-06-08-to-2026-06-15.html"
        saved = download.path().read_text()
        assert "<svg" in saved
        assert "Not enough: 15 of 24" in saved
        assert watch.errors == []
    finally:
        context.close()


def test_open_report_bad_date_names_it(live, page, ctx, watch):
    with_session(page, ctx, live)
    response = page.goto(f"{live}/console/report?since=last-week")
    assert response.status == 422
    expect(page.locator("#report-error")).to_contain_text("since:")
    check_page(page)
