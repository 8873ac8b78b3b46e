"""The real twilio SDK over httpx: one HTTP stack that tests mock with respx and that can point at a local API."""

from __future__ import annotations

import functools
import logging
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from twilio.base.exceptions import TwilioRestException
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.rest import Client

_TWILIO_HOSTS = ("https://api.twilio.com", "https://lookups.twilio.com", "https://messaging.twilio.com")

# Delivery / API error codes after which a text must not be retried.
PERMANENT_ERRORS = {
    21211: "invalid_number",
    21408: "region_not_permitted",
    21610: "unsubscribed",
    21612: "unreachable_route",
    21614: "not_mobile",
    30003: "unreachable",
    30005: "unknown_destination",
    30006: "landline_or_unreachable",
    30007: "carrier_filtered",
    30034: "unregistered_10dlc",
}
# The sending number itself cannot send, whoever the recipient is (Twilio's error dictionary): 21212 invalid
# From, 21606 From not a message-capable Twilio number for this destination or account, 21659 From not a
# Twilio number, 21660 From not in this account, 21661 From not SMS-capable, 30032 toll-free number not
# verified, 30034 10DLC number not registered for A2P. Another number of the account can still send.
SENDER_ERRORS = {
    21212: "invalid_sender",
    21606: "sender_not_message_capable",
    21659: "sender_not_twilio",
    21660: "sender_not_in_account",
    21661: "sender_not_sms_capable",
    30032: "unverified_toll_free",
    30034: "unregistered_10dlc",
}
PERMANENT_ERRORS.update(SENDER_ERRORS)
# This sender cannot reach this recipient, though another sender may: 21610 the recipient texted STOP to this
# number, 21612 Twilio cannot route between this To and this From.
ROUTE_ERRORS = {21610, 21612}
# The recipient can never get a text, whoever sends it: retrying or switching senders cannot help.
RECIPIENT_ERRORS = {21211, 21408, 21614, 30005, 30006}
NOT_TEXTABLE_ERRORS = {21614, 30006}
UNSUBSCRIBED_ERROR = 21610


@functools.cache
def _tls() -> ssl.SSLContext:
    """The verifying TLS context (certifi's roots), built once: each build reads the CA bundle (~20 ms)."""
    return httpx.create_ssl_context()


class HttpxTwilioClient(HttpClient):  # type: ignore[misc]  # twilio ships no types: HttpClient is Any
    """twilio.http.HttpClient over httpx.Client, rewriting Twilio's hosts to configured base URLs."""

    def __init__(self, *, api_url: str, lookup_url: str, timeout: float, client: httpx.Client | None = None,
                 messaging_url: str = _TWILIO_HOSTS[2]):
        super().__init__(logger=logging.getLogger("textback.twilio.http"), is_async=False, timeout=timeout)
        self._rewrites = {_TWILIO_HOSTS[0]: api_url.rstrip("/"), _TWILIO_HOSTS[1]: lookup_url.rstrip("/"),
                          _TWILIO_HOSTS[2]: messaging_url.rstrip("/")}
        self._client = client or httpx.Client(timeout=httpx.Timeout(timeout, connect=3.0), verify=_tls())

    def _rewrite(self, uri: str) -> str:
        for host, target in self._rewrites.items():
            if uri.startswith(host):
                return target + uri[len(host) :]
        return uri

    def request(  # the SDK's signature
        self,
        method: str,
        uri: str,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        response = self._client.request(
            method.upper(),
            self._rewrite(uri),
            params={k: v for k, v in (params or {}).items() if v is not None},
            data={k: v for k, v in (data or {}).items() if v is not None} if data else None,
            headers=headers,
            auth=auth,
            timeout=timeout or self.timeout,
            follow_redirects=allow_redirects,
        )
        return Response(response.status_code, response.text, response.headers)

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True)
class SendResult:
    sid: str
    status: str
    error_code: int | None = None


class SendError(Exception):
    """A send that did not go through. `permanent` means do not retry; `unknown_outcome` means it may have."""

    def __init__(self, message: str, *, code: int | None, permanent: bool, unknown_outcome: bool = False):
        super().__init__(message)
        self.code = code
        self.permanent = permanent
        self.unknown_outcome = unknown_outcome


@dataclass(frozen=True)
class CallResult:
    sid: str
    status: str


class CallError(Exception):
    """Twilio did not place a call (refused it, or the request failed); `code` is Twilio's error code."""

    def __init__(self, message: str, *, code: int | None):
        super().__init__(message)
        self.code = code


class TwilioGateway:
    """What textback needs from Twilio: send a text, find a text already sent, look up a line type, place a
    call (click-to-call)."""

    def __init__(self, *, account_sid: str, auth_token: str, api_url: str, lookup_url: str, timeout: float):
        self._http = HttpxTwilioClient(api_url=api_url, lookup_url=lookup_url, timeout=timeout)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        # Resolved once, here (no lazy race between threads): the SDK walks api -> v2010 -> account -> messages
        # on every `client.messages`, a cost paid per send for the same list.
        self._messages = self._client.messages

    def send_sms(self, *, to: str, from_: str, body: str, status_callback: str | None) -> SendResult:
        try:
            message = self._messages.create(
                to=to, from_=from_, body=body, status_callback=status_callback
            )
        except TwilioRestException as exc:
            code = int(exc.code) if exc.code else None
            permanent = code in PERMANENT_ERRORS or (400 <= exc.status < 500 and exc.status != 429)
            raise SendError(f"twilio {exc.status} {code}", code=code, permanent=permanent) from None
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # The request never left: safe to send again.
            raise SendError(f"transport: {type(exc).__name__}", code=None, permanent=False) from None
        except httpx.TransportError as exc:
            # A read/write timeout or a dropped connection after the request went out: Twilio may have the
            # message. The outcome is unknown and is reconciled against the message list before any resend.
            raise SendError(f"unknown outcome: {type(exc).__name__}", code=None, permanent=False,
                            unknown_outcome=True) from None
        return SendResult(sid=message.sid, status=message.status or "queued")

    def find_sent(self, *, to: str, from_: str, body: str, since: datetime) -> SendResult | None:
        """Reconcile an unknown outcome: a message with this body already in Twilio's list.

        Listed by To/From only (newest first): a message still queued has no DateSent yet, so filtering on it
        could miss the very message we are looking for. Creation time is compared here instead.
        """
        for message in self._messages.list(to=to, from_=from_, limit=50):
            created = message.date_created
            if created is not None and created < since:
                continue
            if (message.body or "").strip() == body.strip():
                code = int(message.error_code) if str(message.error_code or "").isdigit() else None
                return SendResult(sid=message.sid, status=message.status or "sent", error_code=code)
        return None

    def line_type(self, phone: str) -> str | None:
        """Lookup v2 line type intelligence ('mobile', 'landline', ...); None when unknown."""
        result: Any = self._client.lookups.v2.phone_numbers(phone).fetch(fields="line_type_intelligence")
        info = result.line_type_intelligence or {}
        return info.get("type")

    def create_call(self, *, to: str, from_: str, url: str, status_callback: str) -> CallResult:
        """Place a call through the Calls API: Twilio rings `to` from `from_` and, once answered, asks `url`
        for TwiML; `status_callback` hears how the call ended. Not retried: a person is waiting for it."""
        try:
            call = self._client.calls.create(to=to, from_=from_, url=url, method="POST",
                                             status_callback=status_callback, status_callback_method="POST")
        except TwilioRestException as exc:
            code = int(exc.code) if exc.code else None
            raise CallError(f"twilio {exc.status} {code}", code=code) from None
        except httpx.TransportError as exc:
            raise CallError(f"transport: {type(exc).__name__}", code=None) from None
        return CallResult(sid=call.sid, status=call.status or "queued")

    def close(self) -> None:
        self._http.close()
