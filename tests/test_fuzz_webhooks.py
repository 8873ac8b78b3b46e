"""Property-based and schema-driven fuzzing of every webhook, with CORRECTLY SIGNED requests.

Every generated form is signed against the public URL exactly as Twilio signs it, so it reaches the
handler rather than stopping at the signature check. Properties, for any fields and values (unicode,
control characters, huge, empty, missing, extra):

- never a 5xx (an unhandled exception is a 500; a 503 would make Twilio retry a request forever);
- the signature check accepted it (no 403: the form the handler saw is the form that was signed);
- a 200 is well-formed TwiML;
- no text is sent unless the request is one that may cause a text (a refused request sends nothing, and
  status, screening and voicemail callbacks never text anybody).

Then schemathesis over the OpenAPI schema the app serves (/schema/openapi.json), once as it is (the handlers take the raw Request, so it declares no form body) and once with the
Twilio form fields declared, in positive and negative generation modes; every generated request is signed.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from sqlmodel import Session, func, select

from service.app import create_app
from service.models import OutboundMessage
from service.phones import InvalidPhone, to_e164
from service.twilio.forms import KNOWN_DIAL_STATUSES, MAX_SMS_BODY
from service.twilio.signature import sign
from tests.helpers import (
    BROKER,
    BROKER2,
    BROKER_ALERT,
    BROKER_CELL,
    CALLER,
    PUBLIC_URL,
    TWILIO_TOKEN,
    call_params,
    dial_params,
    sms_params,
    status_params,
)

FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])
SCHEMA_FUZZ = settings(FUZZ, max_examples=25)

CALL_SID = "CA" + "5" * 32
MESSAGE_SID = "SM" + "5" * 32


def _base(path: str) -> dict[str, str]:
    """A valid request for each webhook, the starting point of every mutation."""
    call = call_params(CALL_SID, CALLER, BROKER)
    return {
        "/twilio/voice": call,
        "/twilio/voice/dial-status": dial_params("no-answer", CALL_SID, DialCallDuration="0"),
        "/twilio/voice/status": {**call, "CallStatus": "completed", "CallDuration": "14"},
        "/twilio/voice/screen": {**call, "CallSid": "CA" + "8" * 32, "ParentCallSid": CALL_SID,
                                 "To": BROKER_CELL},
        "/twilio/voice/screen/accept": {**call, "CallSid": "CA" + "8" * 32, "ParentCallSid": CALL_SID,
                                        "Digits": "1", "To": BROKER_CELL},
        "/twilio/voice/voicemail": {**call, "RecordingUrl": "https://api.twilio.com/2010-04-01/Recordings/RE1",
                                    "RecordingDuration": "21", "RecordingSid": "RE" + "1" * 32},
        "/twilio/voice/transcription": {**call, "RecordingSid": "RE" + "1" * 32, "TranscriptionSid": "TR" + "1" * 32,
                                        "TranscriptionStatus": "completed", "TranscriptionText": "please call me"},
        "/twilio/voice/fallback": {**call, "ErrorCode": "11200", "ErrorUrl": "https://textback.example.com/twilio/voice"},
        "/twilio/sms/fallback": {**sms_params("refi, in the next month or so", MESSAGE_SID), "ErrorCode": "11205"},
        "/twilio/sms": sms_params("refi, in the next month or so", MESSAGE_SID),
        "/twilio/sms/status": status_params(MESSAGE_SID, "undelivered", error_code=30006),
    }[path]


WEBHOOKS = ["/twilio/voice", "/twilio/voice/dial-status", "/twilio/voice/status", "/twilio/voice/screen",
            "/twilio/voice/screen/accept", "/twilio/voice/voicemail", "/twilio/voice/transcription", "/twilio/sms",
            "/twilio/sms/status", "/twilio/voice/fallback", "/twilio/sms/fallback"]

# ------------------------------------------------------------------------------------------ strategies

# Every code point but surrogates, with the troublemakers drawn often: NUL and other controls, non-characters,
# bidi overrides, non-ASCII digits, XML metacharacters, emoji.
NASTY = "\x00\x01\x1f\x7f\ufffe\uffff\u202e\u00b2\u0663\uff11 a1+<&'\"\n\t\r\U0001f600"
any_text = st.one_of(st.text(max_size=80), st.text(alphabet=st.sampled_from(NASTY), max_size=24))
huge_text = st.sampled_from([2000, 70_000]).flatmap(
    lambda n: st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=4).map(lambda s: (s * n)[:n]))
phones = st.sampled_from([BROKER, BROKER2, BROKER_CELL, BROKER_ALERT, CALLER, "+14155550123", "+442071838750",
                          "4155550123", "+1 (415) 555-0100", "anonymous", "+266696687", "+1", "sip:x@y", "0"])
sids = st.one_of(
    st.sampled_from([CALL_SID, MESSAGE_SID, "CA", "SM", "MM" + "0" * 32, "CA" + "x" * 70, "CA-1", "ca" + "1" * 32]),
    st.from_regex(r"\A(CA|SM|MM|RE)[0-9a-f]{32}\Z"),
)
statuses = st.sampled_from([
    *sorted(KNOWN_DIAL_STATUSES),
    "queued", "ringing", "in-progress", "initiated", "delivered", "undelivered", "failed", "sent", "received",
    "NO-ANSWER", " busy ", "", "unknown"])
numbers = st.one_of(st.sampled_from(
    ["", "1.5", "٣", "1e9", "0x1F", "²", "１", "2147483648", "9223372036854775808", "9" * 40, " 7 ", "-0"]),
    st.integers(-10**30, 10**30).map(str))
interesting = {
    "To": phones, "From": phones, "Caller": phones, "Called": phones, "ForwardedFrom": phones,
    "CallSid": sids, "ParentCallSid": sids, "MessageSid": sids, "SmsSid": sids, "DialCallSid": sids,
    "DialCallStatus": statuses, "CallStatus": statuses, "MessageStatus": statuses,
    "DialBridged": st.sampled_from(["true", "false", "", "FALSE", "yes"]),
    "DialCallDuration": numbers, "CallDuration": numbers, "RecordingDuration": numbers, "NumMedia": numbers,
    "ErrorCode": st.one_of(numbers, st.sampled_from(["21610", "21211", "30006", "21614", "30007"])),
    "Digits": st.sampled_from(["", "1", "#", "*", "0123456789"]),
    "OptOutType": st.sampled_from(["STOP", "START", "HELP", "stop", "", "OTHER"]),
    "TranscriptionStatus": st.sampled_from(["completed", "failed", "in-progress", "COMPLETED", ""]),
    "RecordingUrl": st.sampled_from(["https://api.twilio.com/x/RE1", "http://evil.example/a", "javascript:x", "",
                                     "https://a b"]),
    "Body": st.one_of(any_text, st.sampled_from(["STOP", "stop please", "HELP", "START", "yes", "purchase",
                                                  "can I lock my rate", "\x00", "x" * (MAX_SMS_BODY + 1)])),
}
field_names = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="&=%+#"),
                      min_size=1, max_size=20)


def value_for(name: str) -> st.SearchStrategy[str]:
    return st.one_of(interesting.get(name, any_text), any_text, st.just(""), huge_text)


@st.composite
def mutated_forms(draw: st.DrawFn, path: str) -> dict[str, str]:
    """The valid form for `path`, then either a few targeted changes (so the request still gets deep into the
    handler) or a broad one (each field kept, dropped or replaced); plus extra fields."""
    form = dict(_base(path))
    if draw(st.booleans()):
        names = sorted(set(form) | set(interesting))
        for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)):
            action = draw(st.sampled_from(["replace", "replace", "drop", "empty"]))
            if action == "drop":
                form.pop(name, None)
            else:
                form[name] = "" if action == "empty" else draw(value_for(name))
    else:
        for name in list(form):
            action = draw(st.sampled_from(["keep", "keep", "drop", "replace"]))
            if action == "drop":
                del form[name]
            elif action == "replace":
                form[name] = draw(value_for(name))
    form.update(draw(st.dictionaries(st.one_of(field_names, st.sampled_from(sorted(interesting))),
                                     st.one_of(any_text, huge_text), max_size=3)))
    return form


def hostile_field(path: str) -> st.SearchStrategy[tuple[str, str]]:
    """One field of `path`'s form (or a field another webhook uses) and a hostile value for it."""
    names = sorted(_base(path)) + sorted(set(interesting) - set(_base(path)))
    return st.sampled_from(names).flatmap(lambda name: st.tuples(st.just(name), st.one_of(
        interesting.get(name, any_text), st.text(alphabet=st.sampled_from(NASTY), min_size=1, max_size=12),
        huge_text)))


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def app_client(ctx, twilio_api) -> Iterator[TestClient]:
    with TestClient(app=create_app(ctx=ctx, run_worker=False), base_url="http://testserver.local") as client:
        yield client


def post_signed(client: TestClient, path: str, pairs: list[tuple[str, str]]) -> httpx.Response:
    """POST a form signed over the fields the service will see (the last value of a repeated key)."""
    signature = sign(token=TWILIO_TOKEN, url=PUBLIC_URL + path, params=dict(pairs))
    return client.post(path, content=urlencode(pairs).encode(),
                       headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})


def outbound_count(ctx: Any) -> int:
    with Session(ctx.engine) as session:
        return session.exec(select(func.count()).select_from(OutboundMessage)).one()


def _phone(value: str | None) -> str | None:
    try:
        return to_e164(value or "")
    except InvalidPhone:
        return None


def _is_sid(value: str | None, prefixes: tuple[str, ...]) -> bool:
    value = (value or "").strip()
    return value.startswith(prefixes) and value.isalnum() and len(value) <= 64


def may_text(path: str, form: dict[str, str]) -> bool:
    """Whether a request to `path` is well-formed enough that the service may send a text because of it."""
    to_broker = _phone(form.get("To")) in {BROKER, BROKER2}
    if path == "/twilio/voice/dial-status":
        return (to_broker and _is_sid(form.get("CallSid"), ("CA",))
                and (form.get("DialCallStatus") or "").strip().lower() in KNOWN_DIAL_STATUSES)
    if path == "/twilio/voice":
        return to_broker and _is_sid(form.get("CallSid"), ("CA",)) and bool((form.get("ForwardedFrom") or "").strip())
    if path == "/twilio/sms":
        return (to_broker and _is_sid(form.get("MessageSid"), ("SM", "MM")) and _phone(form.get("From")) is not None
                and len(form.get("Body") or "") <= MAX_SMS_BODY)
    if path == "/twilio/voice/voicemail":  # the broker's voicemail alert
        return to_broker and _is_sid(form.get("CallSid"), ("CA",))
    if path == "/twilio/voice/transcription":  # the transcript alert (To may be left out: the call names the broker)
        return (_is_sid(form.get("CallSid"), ("CA",)) and (to_broker or not (form.get("To") or "").strip())
                and form.get("TranscriptionStatus", "").strip().lower() == "completed")
    return False  # status and screening callbacks never text anybody; fallbacks only spool


def check_response(path: str, form: dict[str, str], response: httpx.Response, sends: int, rows: int) -> None:
    assert response.status_code < 500, f"{path} -> {response.status_code} {response.text[:200]}"
    assert response.status_code != 403, f"{path}: a correctly signed request was refused"
    if response.status_code == 200:
        assert response.headers["content-type"].startswith("application/xml")
        ET.fromstring(response.text)  # well-formed TwiML
    else:
        assert response.status_code in {404, 413, 415, 422}, response.status_code
        assert sends == 0, f"{path}: a refused request sent {sends} text(s)"
        assert rows == 0, f"{path}: a refused request queued {rows} text(s)"
    if sends:
        assert may_text(path, form), f"{path}: a malformed request sent {sends} text(s): {sorted(form)}"


# ------------------------------------------------------------------------------------------ hypothesis


@pytest.mark.parametrize("path", WEBHOOKS)
def test_answer_without_5xx_or_stray_text_for_any_signed_form(app_client, ctx, twilio_api, path) -> None:
    route = twilio_api["messages"]

    @FUZZ
    @given(form=mutated_forms(path))
    def run(form: dict[str, str]) -> None:
        sends, rows = route.call_count, outbound_count(ctx)
        response = post_signed(app_client, path, list(form.items()))
        check_response(path, form, response, route.call_count - sends, outbound_count(ctx) - rows)

    run()


@pytest.mark.parametrize("path", WEBHOOKS)
def test_answer_without_5xx_or_stray_text_when_one_field_is_hostile(app_client, ctx, twilio_api, path) -> None:
    """An otherwise valid request with one field replaced: the way deep into each handler."""
    route = twilio_api["messages"]

    @FUZZ
    @given(change=hostile_field(path), fresh=st.integers(0, 10**12))
    def run(change: tuple[str, str], fresh: int) -> None:
        form = dict(_base(path))
        for name, prefix in (("CallSid", "CA"), ("MessageSid", "SM")):  # a new event each time, not a retry
            if name in form:
                form[name] = f"{prefix}{fresh:032x}"
        form[change[0]] = change[1]
        sends, rows = route.call_count, outbound_count(ctx)
        response = post_signed(app_client, path, list(form.items()))
        check_response(path, form, response, route.call_count - sends, outbound_count(ctx) - rows)

    # Found by this test once and kept as explicit examples for every field of every webhook: a non-ASCII
    # digit ("²".isdigit() but int() fails), a number too big for the column, NUL (PostgreSQL text rejects
    # it), a control character (invalid in the TwiML that echoes it).
    for name in sorted(_base(path)):
        for value in ("²", "9" * 40, "2147483648", "a\x00b", "\x01"):
            run = example(change=(name, value), fresh=1)(run)
    run()


@pytest.mark.parametrize("path", WEBHOOKS)
def test_answer_without_5xx_for_arbitrary_fields_only(app_client, ctx, twilio_api, path) -> None:
    """No valid skeleton at all: any field names, any values, repeated keys."""
    route = twilio_api["messages"]
    pairs_strategy = st.lists(st.tuples(st.one_of(field_names, st.sampled_from(sorted(interesting))),
                                        st.one_of(any_text, huge_text)), max_size=12)

    @FUZZ
    @given(pairs=pairs_strategy)
    def run(pairs: list[tuple[str, str]]) -> None:
        sends, rows = route.call_count, outbound_count(ctx)
        response = post_signed(app_client, path, pairs)
        check_response(path, dict(pairs), response, route.call_count - sends, outbound_count(ctx) - rows)

    run()


# ---------------------------------------------------------------------------------------- schemathesis

def served_schema(client: TestClient) -> dict[str, Any]:
    """The OpenAPI document the app itself serves."""
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    return response.json()


FORM_FIELDS = {path: sorted(_base(path)) for path in WEBHOOKS}
REQUIRED = {"/twilio/voice": ["CallSid", "To"], "/twilio/voice/dial-status": ["CallSid", "DialCallStatus", "To"],
            "/twilio/voice/status": ["CallSid", "CallStatus", "To"], "/twilio/voice/screen": ["CallSid"],
            "/twilio/voice/screen/accept": ["CallSid"], "/twilio/voice/voicemail": ["CallSid", "To"],
            "/twilio/sms": ["From", "MessageSid", "To"], "/twilio/sms/status": ["MessageSid", "MessageStatus"],
            "/twilio/voice/transcription": ["CallSid"], "/twilio/voice/fallback": ["CallSid", "To"],
            "/twilio/sms/fallback": ["From", "MessageSid", "To"]}


def declared_schema(client: TestClient) -> dict[str, Any]:
    """The same schema with each webhook's Twilio form declared (what the handlers could declare themselves)."""
    schema = copy.deepcopy(served_schema(client))
    for path in WEBHOOKS:
        schema["paths"][path]["post"]["requestBody"] = {"required": True, "content": {
            "application/x-www-form-urlencoded": {"schema": {
                "type": "object", "required": REQUIRED[path], "additionalProperties": {"type": "string"},
                "properties": {name: {"type": "string"} for name in FORM_FIELDS[path]},
            }}}}
    return schema


def _flatten(body: Any) -> list[tuple[str, str]] | bytes:
    """A generated body as form pairs (how a client would encode it), or raw bytes when it is not an object."""
    if not isinstance(body, dict):
        return b"" if body is None else str(body).encode("utf-8", "surrogatepass")
    pairs: list[tuple[str, str]] = []
    for key, value in body.items():
        for item in value if isinstance(value, list) else [value]:
            text = "" if item is None else str(item).lower() if isinstance(item, bool) else str(item)
            pairs.append((str(key), text))
    return pairs


def send_case(client: TestClient, case: Any) -> tuple[httpx.Response, dict[str, str]]:
    """The schemathesis "hook": sign each generated request against the public URL, then send it."""
    body = getattr(case, "body", None)
    has_body = body is not None and type(body).__name__ != "NotSet"
    payload = _flatten(body) if has_body else []
    if isinstance(payload, bytes):
        signature = sign(token=TWILIO_TOKEN, url=PUBLIC_URL + case.path, params={})
        response = client.post(case.path, content=payload, headers={
            "Content-Type": case.media_type or "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})
        return response, {}
    return post_signed(client, case.path, payload), dict(payload)


@pytest.mark.parametrize("path", WEBHOOKS)
def test_answer_without_5xx_for_schemathesis_cases_over_served_schema(app_client, path) -> None:
    operation = schemathesis.openapi.from_dict(served_schema(app_client))[path]["POST"]

    @SCHEMA_FUZZ
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        response, _ = send_case(app_client, case)
        assert response.status_code < 500, response.text
        assert response.status_code != 403

    run()


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize("path", WEBHOOKS)
def test_answer_without_5xx_for_schemathesis_cases_over_declared_forms(app_client, ctx, twilio_api, path, mode) -> None:
    operation = schemathesis.openapi.from_dict(declared_schema(app_client))[path]["POST"]
    route = twilio_api["messages"]

    @SCHEMA_FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        sends, rows = route.call_count, outbound_count(ctx)
        response, form = send_case(app_client, case)
        if response.status_code == 403:
            # Only a body that is not a form at all (negative mode) may fail to round-trip through signing.
            assert not form
            return
        check_response(path, form, response, route.call_count - sends, outbound_count(ctx) - rows)

    run()


def test_serve_schema_with_every_webhook_and_no_form_fields(app_client) -> None:
    """Documents the gap the declared-forms fuzzing fills: the handlers take the raw Request."""
    schema = served_schema(app_client)
    for path in WEBHOOKS:
        assert "post" in schema["paths"][path]
        assert "requestBody" not in schema["paths"][path]["post"]

