"""The console's pages over HTTP (no browser): headers, redirects, refusals as pages, and the wording helpers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.web import console_view as view
from service.web.pages import safe_next

NOW = datetime(2026, 6, 10, 21, 0, tzinfo=UTC)  # a Wednesday


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
