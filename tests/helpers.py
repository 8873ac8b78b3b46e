"""Constants and helpers shared by the service tests (fixtures live in conftest.py)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import respx

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "test-auth-token-5f3b2c1d"  # noqa: S105 - a test value
PUBLIC_URL = "https://textback.example.com"
MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"

BROKER = "+14155550100"  # Dana's Twilio number
BROKER_CELL = "+14155550111"
BROKER_ALERT = "+14155550112"
BROKER2 = "+12125550100"  # a second broker, with a booking link
CALLER = "+14155550199"

BROKERS_YAML = f"""
brokers:
  - twilio_number: "{BROKER}"
    name: Dana Whitfield
    brokerage: Summit Home Loans
    nmls_id: "123456"
    company_nmls_id: "654321"
    forward_to: "{BROKER_CELL}"
    alert_to: ["{BROKER_ALERT}"]
    timezone: America/Los_Angeles
    ring_seconds: 18
    call_screening: true
  - twilio_number: "{BROKER2}"
    name: Marcus Chen
    brokerage: Harbor Mortgage Group
    nmls_id: "2233445"
    forward_to: "+12125550111"
    timezone: America/New_York
    booking_url: https://cal.example.com/marcus
    call_screening: false
"""

_sid_counter = itertools.count(1)


def message_json(to: str, from_: str, body: str, sid: str | None = None, status: str = "queued") -> dict:
    """A Messages API response body shaped like Twilio's."""
    sid = sid or f"SM{next(_sid_counter):032x}"
    return {
        "account_sid": TWILIO_SID, "api_version": "2010-04-01", "body": body, "date_created": None,
        "date_sent": None, "date_updated": None, "direction": "outbound-api", "error_code": None,
        "error_message": None, "from": from_, "messaging_service_sid": None, "num_media": "0",
        "num_segments": "1", "price": None, "price_unit": "USD", "sid": sid, "status": status, "to": to,
        "uri": f"/2010-04-01/Accounts/{TWILIO_SID}/Messages/{sid}.json", "subresource_uris": {},
    }


def twilio_created(request: httpx.Request) -> httpx.Response:
    """respx side effect: accept a Messages API create like Twilio does."""
    form = dict(httpx.QueryParams(request.content.decode()))
    return httpx.Response(201, json=message_json(form["To"], form["From"], form["Body"]))


def sent_texts(route: respx.Route) -> list[dict[str, str]]:
    """The form bodies of every Messages API request a route saw."""
    return [dict(httpx.QueryParams(call.request.content.decode())) for call in route.calls]


def call_params(call_sid: str = "CA" + "1" * 32, caller: str = CALLER, to: str = BROKER, **extra: str) -> dict[str, str]:
    return {"AccountSid": TWILIO_SID, "ApiVersion": "2010-04-01", "CallSid": call_sid, "From": caller,
            "To": to, "Caller": caller, "Called": to, "Direction": "inbound", "CallStatus": "ringing", **extra}


def sms_params(body: str, sid: str | None = None, sender: str = CALLER, to: str = BROKER, **extra: str) -> dict[str, str]:
    sid = sid or f"SM{next(_sid_counter):032x}"
    return {"AccountSid": TWILIO_SID, "ApiVersion": "2010-04-01", "MessageSid": sid, "SmsMessageSid": sid,
            "SmsSid": sid, "From": sender, "To": to, "Body": body, "NumMedia": "0", "NumSegments": "1",
            "SmsStatus": "received", **extra}


_Seen = TypeVar("_Seen")


@contextmanager
def session_hooks(seen: _Seen) -> Iterator[_Seen]:
    """Listen to every ORM session's flushes, rollbacks and commits through `seen`'s methods of those names."""
    from sqlalchemy import event  # noqa: PLC0415
    from sqlalchemy.orm import Session  # noqa: PLC0415

    hooks = {name: getattr(seen, name) for name in ("after_flush", "after_rollback", "after_commit")}
    for name, hook in hooks.items():
        event.listen(Session, name, hook)
    try:
        yield seen
    finally:
        for name, hook in hooks.items():
            event.remove(Session, name, hook)
