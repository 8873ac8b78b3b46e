"""What Twilio sends and answers, built once: webhook forms (signed as Twilio signs them), Messages API JSON and
Calls API JSON.

The simulator, the eval driver, the benchmarks and the tests all talk to the service through these, so a
field Twilio adds or renames changes in one place. Nothing here decides anything; it only shapes data.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Mapping

from service.twilio.signature import sign

API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT_SID = "AC" + "0" * 32

_counter = itertools.count(1)


def new_sid(prefix: str) -> str:
    """A fresh, well-formed Twilio SID (`SM...`, `CA...`): the prefix and 32 hex digits, unique per process."""
    return f"{prefix}{next(_counter):032x}"


def random_sid(prefix: str) -> str:
    """A well-formed Twilio SID unique across processes (the simulator posts to a service that outlives it)."""
    return prefix + secrets.token_hex(16)


def call_form(call_sid: str, caller: str, to: str, *, account_sid: str = DEFAULT_ACCOUNT_SID,
              **extra: str) -> dict[str, str]:
    """A voice webhook form for an inbound call (`CallStatus` ringing unless `extra` says otherwise)."""
    return {"AccountSid": account_sid, "ApiVersion": API_VERSION, "CallSid": call_sid, "From": caller,
            "To": to, "Caller": caller, "Called": to, "Direction": "inbound", "CallStatus": "ringing", **extra}


def dial_status_form(call_sid: str, caller: str, to: str, dial_status: str, *,
                     account_sid: str = DEFAULT_ACCOUNT_SID, **extra: str) -> dict[str, str]:
    """The `<Dial action>` callback after the broker's phone rang out (`no-answer`, `busy`, `completed`...)."""
    return call_form(call_sid, caller, to, account_sid=account_sid, CallStatus="in-progress",
                     DialCallStatus=dial_status, DialCallSid=extra.pop("DialCallSid", "CA" + "9" * 32), **extra)


def sms_form(body: str, sender: str, to: str, *, sid: str | None = None, account_sid: str = DEFAULT_ACCOUNT_SID,
             **extra: str) -> dict[str, str]:
    """An inbound SMS webhook form, with a fresh MessageSid unless one is given."""
    sid = sid or new_sid("SM")
    return {"AccountSid": account_sid, "ApiVersion": API_VERSION, "MessageSid": sid, "SmsMessageSid": sid,
            "SmsSid": sid, "From": sender, "To": to, "Body": body, "NumMedia": "0", "NumSegments": "1",
            "SmsStatus": "received", **extra}


def status_form(message_sid: str, status: str, *, to: str, from_: str, account_sid: str = DEFAULT_ACCOUNT_SID,
                error_code: str | None = None, **extra: str) -> dict[str, str]:
    """A message status callback (`StatusCallback`), with `ErrorCode` when the carrier gave one."""
    form = {"AccountSid": account_sid, "ApiVersion": API_VERSION, "MessageSid": message_sid,
            "SmsSid": message_sid, "MessageStatus": status, "SmsStatus": status, "To": to, "From": from_, **extra}
    if error_code is not None:
        form["ErrorCode"] = error_code
    return form


def signature_headers(*, token: str, public_url: str, path: str, form: Mapping[str, str]) -> dict[str, str]:
    """The `X-Twilio-Signature` header Twilio would send for `form` posted to `public_url + path`."""
    return {"X-Twilio-Signature": sign(token=token, url=public_url.rstrip("/") + path, params=form)}


def message_json(to: str, from_: str, body: str, *, sid: str | None = None, status: str = "queued",
                 account_sid: str = DEFAULT_ACCOUNT_SID, error_code: int | None = None) -> dict[str, object]:
    """A Messages API resource, shaped like Twilio's create / fetch / list answers."""
    sid = sid or new_sid("SM")
    return {
        "account_sid": account_sid, "api_version": API_VERSION, "body": body, "date_created": None,
        "date_sent": None, "date_updated": None, "direction": "outbound-api", "error_code": error_code,
        "error_message": None, "from": from_, "messaging_service_sid": None, "num_media": "0",
        "num_segments": "1", "price": None, "price_unit": "USD", "sid": sid, "status": status, "to": to,
        "uri": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json", "subresource_uris": {},
    }


def message_list_json(messages: list[dict[str, object]], *, account_sid: str = DEFAULT_ACCOUNT_SID,
                      page_size: int = 50) -> dict[str, object]:
    """One page of the Messages list API (newest first, as Twilio returns it)."""
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages.json?PageSize={page_size}&Page=0"
    return {"messages": messages, "first_page_uri": uri, "next_page_uri": None, "previous_page_uri": None,
            "page": 0, "page_size": page_size, "uri": uri, "start": 0, "end": max(len(messages) - 1, 0)}


def call_json(to: str, from_: str, *, sid: str | None = None, status: str = "queued",
              account_sid: str = DEFAULT_ACCOUNT_SID) -> dict[str, object]:
    """A Calls API resource, shaped like Twilio's answer to a create (click-to-call)."""
    sid = sid or new_sid("CA")
    return {
        "account_sid": account_sid, "api_version": API_VERSION, "sid": sid, "status": status, "to": to,
        "from": from_, "direction": "outbound-api", "date_created": None, "date_updated": None,
        "start_time": None, "end_time": None, "duration": None, "price": None, "price_unit": "USD",
        "parent_call_sid": None, "uri": f"/{API_VERSION}/Accounts/{account_sid}/Calls/{sid}.json",
        "subresource_uris": {},
    }
