"""The console in a real browser: Debian's Chromium driven by Playwright against the real app under uvicorn, on
a real database, with the real Twilio SDK whose Messages and Calls APIs are mocked at the HTTP boundary."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import (
    CHROMIUM,
    PHONE_VIEWPORT,
    PageWatch,
    check_page,
    free_socket,
    require_chromium,
    serve,
)


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


def test_open_login_page_without_javascript_says_sign_in_needs_it(live, browser):
    context = browser.new_context(viewport=PHONE_VIEWPORT, java_script_enabled=False)
    try:
        tab = context.new_page()
        tab.goto(f"{live}/console/login")
        assert "Signing in needs JavaScript" in tab.locator("main").inner_text()
    finally:
        context.close()
