"""Shared by the sign-in tests: a brokers file with a team, an https test client (the session cookie is Secure
under the https public URL, so a browser sends it over https only), and signing in through the real routes:
ask for a code, read it off the text Twilio was asked to send, trade it for a session."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import respx
from litestar.testing import TestClient

from service.web.principal import CSRF_HEADER, SESSION_COOKIE
from tests.helpers import BROKERS_YAML, sent_texts

ADMIN = "+14155550120"  # Ada, an admin of the file (in Dana's team)
MEMBER = "+14155550121"  # Mo, a member of Dana's team
MARCUS_CELL = "+12125550111"  # Marcus's forward_to: a user of Marcus's broker only
STRANGER = "+14155550177"  # nobody's phone
JSON_HEADERS = {"Content-Type": "application/json"}

TEAM_YAML = BROKERS_YAML.replace(
    "    call_screening: true\n",
    "    call_screening: true\n"
    "    team:\n"
    f'      - {{name: Ada Admin, phone: "{ADMIN}", role: admin}}\n'
    f'      - {{name: Mo Member, phone: "{MEMBER}"}}\n', 1)
assert TEAM_YAML != BROKERS_YAML


@contextmanager
def https_client(ctx) -> Iterator[TestClient]:
    """A test client for the app on `ctx`, over https like the public URL (background work runs before each
    call returns); the service's logging is set up as its entry points set it up."""
    from service.app import create_app
    from service.logs import configure_logging

    configure_logging(ctx.settings.log_level)
    with TestClient(app=create_app(ctx=ctx, run_worker=False), base_url="https://testserver.local") as client:
        yield client


def ask_code(web: TestClient, phone: str) -> httpx.Response:
    return web.post("/api/auth/code", json={"phone": phone})


def texted_code(twilio_api: respx.MockRouter, phone: str) -> str:
    """The code in the latest text the Messages API was asked to send to `phone`."""
    [*_, text] = [t for t in sent_texts(twilio_api["messages"]) if t["To"] == phone]
    match = re.search(r"\b(\d{6})\b", text["Body"])
    assert match, text["Body"]
    return match.group(1)


def open_session(web: TestClient, phone: str, code: str) -> httpx.Response:
    return web.post("/api/auth/session", json={"phone": phone, "code": code})


def sign_in(web: TestClient, twilio_api: respx.MockRouter, phone: str) -> dict[str, str]:
    """Sign `phone` in through the routes; the client keeps the cookies. Returns the CSRF header to send."""
    assert ask_code(web, phone).status_code == 202
    response = open_session(web, phone, texted_code(twilio_api, phone))
    assert response.status_code == 200, response.text
    return {CSRF_HEADER: response.json()["csrf_token"]}


def session_cookie(web: TestClient) -> str:
    value = web.cookies.get(SESSION_COOKIE)
    assert value, "no session cookie"
    return value
