"""A broker number's webhook set-up on the Twilio account: what it must be (the README's "Twilio console set-up"
table), what it is (the IncomingPhoneNumbers API, through the real SDK), the fields that differ, and the update
that makes them equal. Read by `textback doctor`, changed by `textback twilio configure`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.response import Response
from twilio.rest import Client

from service.settings import Settings
from service.twilio.client import HttpxTwilioClient

# Each field of an IncomingPhoneNumber textback sets: the SDK's attribute (and update keyword), and the path under
# TEXTBACK_PUBLIC_URL or the literal value it must hold. An application SID set on a number makes Twilio ignore
# that number's URLs (a TwiML App answers instead), so it must be empty.
WEBHOOK_PATHS: tuple[tuple[str, str], ...] = (
    ("voice_url", "/twilio/voice"),
    ("voice_fallback_url", "/twilio/voice/fallback"),
    ("status_callback", "/twilio/voice/status"),
    ("sms_url", "/twilio/sms"),
    ("sms_fallback_url", "/twilio/sms/fallback"),
)
FIXED_VALUES: tuple[tuple[str, str], ...] = (
    ("voice_method", "POST"),
    ("voice_fallback_method", "POST"),
    ("status_callback_method", "POST"),
    ("sms_method", "POST"),
    ("sms_fallback_method", "POST"),
    ("voice_application_sid", ""),
    ("sms_application_sid", ""),
)
FIELDS = tuple(name for name, _ in WEBHOOK_PATHS + FIXED_VALUES)


def twilio_client(settings: Settings) -> tuple[Client, HttpxTwilioClient]:
    """The real SDK over the service's httpx client (its hosts rewritten to the configured base URLs)."""
    http = HttpxTwilioClient(api_url=settings.twilio_api_url, lookup_url=settings.twilio_lookup_url,
                             messaging_url=settings.twilio_messaging_url, timeout=settings.send_timeout_seconds)
    return Client(settings.twilio_account_sid, settings.twilio_auth_token, http_client=http), http


def expected_fields(public_url: str) -> dict[str, str]:
    """Every field textback sets on a number, with the value it must hold for `public_url`."""
    base = public_url.rstrip("/")
    return {**{name: base + path for name, path in WEBHOOK_PATHS}, **dict(FIXED_VALUES)}


@dataclass(frozen=True)
class FieldChange:
    """One field of a number that is not what textback needs."""

    field: str
    current: str
    expected: str

    def describe(self) -> str:
        return f"{self.field}: {_shown(self.current)} -> {_shown(self.expected)}"


def _shown(value: str) -> str:
    return value if value else "(none)"


def _normal(field: str, value: object) -> str:
    text = "" if value is None else str(value)
    return text.upper() if field.endswith("_method") else text


@dataclass(frozen=True)
class NumberSetup:
    """A number as the account holds it: its SID and the fields textback sets."""

    phone: str
    sid: str
    values: dict[str, str]

    def changes(self, public_url: str) -> list[FieldChange]:
        """The fields that differ from what `public_url` needs, in the table's order."""
        return [
            FieldChange(name, self.values.get(name, ""), want)
            for name, want in expected_fields(public_url).items()
            if _normal(name, self.values.get(name, "")) != _normal(name, want)
        ]


@contextmanager
def page_errors() -> Iterator[None]:
    """The SDK raises a bare TwilioException for a list page that is not 200; re-raised here as the
    TwilioRestException a fetch raises, with the HTTP status and Twilio's error code and message."""
    try:
        yield
    except TwilioRestException:
        raise
    except TwilioException as exc:
        response = exc.args[1] if len(exc.args) > 1 else None
        if not isinstance(response, Response):
            raise
        try:
            body = json.loads(response.text)
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        raise TwilioRestException(response.status_code, "", msg=str(body.get("message", "")),
                                  code=body.get("code")) from None


def find_number(client: Client, phone: str) -> NumberSetup | None:
    """The account's IncomingPhoneNumber for `phone` (E.164), or None when the account has no such number."""
    with page_errors():
        numbers = client.incoming_phone_numbers.list(phone_number=phone, limit=20)
    for number in numbers:
        if number.phone_number == phone:
            return NumberSetup(phone=phone, sid=str(number.sid),
                               values={name: _normal(name, getattr(number, name, None)) for name in FIELDS})
    return None


def apply_changes(client: Client, setup: NumberSetup, changes: list[FieldChange]) -> None:
    """One update of the number with exactly the differing fields (nothing is sent when none differ)."""
    if not changes:
        return
    values: dict[str, Any] = {change.field: change.expected for change in changes}
    client.incoming_phone_numbers(setup.sid).update(**values)
