"""Shared by the API tests: a brokers file with a team, signing a user in, a CRM's bearer token, and the
webhooks that make leads (a missed call, a reply), all through the real service."""

from __future__ import annotations

import httpx
from sqlmodel import Session

from service.models import ApiToken
from service.web.principal import CSRF_HEADER, SESSION_COOKIE, digest, new_token, start_session
from tests.helpers import BROKER, BROKER_CELL, BROKERS_YAML, CALLER, call_params, sms_params

DIAL = "/twilio/voice/dial-status"
ADMIN = "+14155550120"  # Ada, an admin of the file (in Dana's team)
MEMBER = "+14155550121"  # Mo, a member of Dana's team
MARCUS_CELL = "+12125550111"  # Marcus's forward_to: a member of Marcus's broker only

TEAM_YAML = BROKERS_YAML.replace(
    "    call_screening: true\n",
    "    call_screening: true\n"
    "    team:\n"
    f'      - {{name: Ada Admin, phone: "{ADMIN}", role: admin}}\n'
    f'      - {{name: Mo Member, phone: "{MEMBER}"}}\n', 1)
assert TEAM_YAML != BROKERS_YAML


def signed_in(ctx, phone: str = BROKER_CELL, *, lead_id: int | None = None) -> dict[str, str]:
    """Headers of a signed-in browser of `phone`: the session cookie and the CSRF header."""
    with Session(ctx.engine) as session:
        token, row = start_session(session, phone=phone, lead_id=lead_id)
        csrf = row.csrf_token
        session.commit()
    return {"Cookie": f"{SESSION_COOKIE}={token}", CSRF_HEADER: csrf}


def cookie_only(headers: dict[str, str]) -> dict[str, str]:
    """The same browser without the CSRF header (a cross-site form post)."""
    return {"Cookie": headers["Cookie"]}


def bearer(ctx, broker_id: int, name: str = "crm") -> dict[str, str]:
    """Headers of a CRM holding a bearer token for `broker_id` (stored hashed, as `textback tokens create` does)."""
    token = new_token("tb_")
    with Session(ctx.engine) as session:
        session.add(ApiToken(token_hash=digest(token), broker_id=broker_id, name=name))
        session.commit()
    return {"Authorization": f"Bearer {token}"}


def missed(client, post, caller: str = CALLER, to: str = BROKER, sid: str | None = None) -> None:
    sid = sid or "CA" + (to[-10:] + caller[-10:]).rjust(32, "0")
    response = post(client, DIAL, call_params(sid, caller=caller, to=to, DialCallStatus="no-answer"))
    assert response.status_code == 200, response.text


def reply(client, post, text: str, caller: str = CALLER, to: str = BROKER) -> None:
    response = post(client, "/twilio/sms", sms_params(text, sender=caller, to=to))
    assert response.status_code == 200, response.text


def lead_ids(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [lead["id"] for lead in response.json()["leads"]]
