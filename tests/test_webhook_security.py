"""Signatures, idempotency and malformed input on every Twilio endpoint."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from service.models import CallEvent, InboundMessage, OutboundMessage
from service.twilio.signature import public_url_for, sign
from tests.helpers import PUBLIC_URL, TWILIO_TOKEN, call_params, sent_texts, sms_params, status_params

ENDPOINTS = [
    ("/twilio/voice", call_params()),
    ("/twilio/voice/dial-status", call_params(DialCallStatus="no-answer")),
    ("/twilio/voice/status", call_params(CallStatus="completed")),
    ("/twilio/voice/screen", call_params()),
    ("/twilio/voice/screen/accept", call_params(Digits="1")),
    ("/twilio/voice/voicemail", call_params(RecordingDuration="12")),
    ("/twilio/sms", sms_params("hello")),
    ("/twilio/sms/status", status_params("SM" + "e" * 32, "delivered")),
]


def _rows(ctx) -> int:
    with Session(ctx.engine) as session:
        return sum(len(session.exec(select(model)).all()) for model in (CallEvent, InboundMessage, OutboundMessage))


@pytest.mark.parametrize(("path", "params"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_reject_forged_signature_on_every_endpoint(client, post, twilio_api, ctx, path, params) -> None:
    forged = sign(token="not-the-token", url=PUBLIC_URL + path, params=params)
    response = post(client, path, params, signature=forged)
    assert response.status_code == 403
    assert _rows(ctx) == 0
    assert sent_texts(twilio_api["messages"]) == []


@pytest.mark.parametrize(("path", "params"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_reject_missing_signature_on_every_endpoint(client, twilio_api, ctx, path, params) -> None:
    response = client.post(path, data=params)
    assert response.status_code == 403
    assert _rows(ctx) == 0


def test_reject_signature_over_tampered_field(client, post, twilio_api, ctx) -> None:
    params = call_params(DialCallStatus="no-answer")
    signature = sign(token=TWILIO_TOKEN, url=PUBLIC_URL + "/twilio/voice/dial-status", params=params)
    tampered = {**params, "From": "+14155550123"}
    response = post(client, "/twilio/voice/dial-status", tampered, signature=signature)
    assert response.status_code == 403
    assert sent_texts(twilio_api["messages"]) == []


def test_reject_signature_made_for_internal_url_behind_proxy(client, post, twilio_api) -> None:
    """Behind a TLS proxy the app sees http://internal; only the configured public URL is valid."""
    params = call_params(DialCallStatus="no-answer")
    response = post(client, "/twilio/voice/dial-status", params, public_url="http://testserver.local")
    assert response.status_code == 403


def test_accept_signature_over_public_url_with_query(client, twilio_api) -> None:
    params = sms_params("hello there")
    path = "/twilio/sms?source=console"
    signature = sign(token=TWILIO_TOKEN, url=PUBLIC_URL + path, params=params)
    response = client.post(path, data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200


def test_build_public_url_from_base_path_and_query() -> None:
    assert public_url_for("https://a.example.com/", "/twilio/sms", "") == "https://a.example.com/twilio/sms"
    assert public_url_for("https://a.example.com", "/twilio/sms", "x=1&y=2") == "https://a.example.com/twilio/sms?x=1&y=2"


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/twilio/voice/dial-status", {k: v for k, v in call_params(DialCallStatus="busy").items() if k != "CallSid"}, 422),
        ("/twilio/voice/dial-status", call_params(), 422),  # no DialCallStatus
        ("/twilio/voice/dial-status", call_params(DialCallStatus="exploded"), 422),
        ("/twilio/voice/dial-status", call_params("not-a-sid", DialCallStatus="busy"), 422),
        ("/twilio/voice", call_params(to="+19995550100"), 422),  # To is not a valid number
        ("/twilio/voice", call_params(to="+14155550177"), 404),  # To is not a broker number
        ("/twilio/sms", sms_params("hi", sender="garbage"), 422),
        ("/twilio/sms", {k: v for k, v in sms_params("hi").items() if k != "MessageSid"}, 422),
        ("/twilio/sms", sms_params("x" * 1601), 413),
        ("/twilio/sms/status", status_params("SM" + "e" * 32, "bogus"), 422),
        ("/twilio/voice/status", call_params(CallStatus="weird"), 422),
    ],
)
def test_reject_malformed_webhook_with_clear_4xx(client, post, twilio_api, ctx, path, params, status) -> None:
    response = post(client, path, params)
    assert response.status_code == status
    assert response.json()["error"]
    assert sent_texts(twilio_api["messages"]) == []


def test_reject_oversized_body_with_413(client, twilio_api) -> None:
    response = client.post("/twilio/sms", content=b"Body=" + b"x" * 70_000,
                           headers={"content-type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"})
    assert response.status_code == 413


def test_reject_non_form_body_with_415(client, twilio_api) -> None:
    response = client.post("/twilio/sms", json={"Body": "hi"}, headers={"X-Twilio-Signature": "x"})
    assert response.status_code == 415


def test_log_refusal_without_borrower_text(client, post, twilio_api, caplog) -> None:
    secret = "my ssn is 123-45-6789 please call"
    response = post(client, "/twilio/sms", sms_params(secret, sender="bogus"))
    assert response.status_code == 422
    assert "123-45-6789" not in caplog.text
    assert secret not in response.text


def test_store_inbound_once_when_delivered_twice(client, post, twilio_api, ctx) -> None:
    params = sms_params("hello again", sid="SM" + "5" * 32)
    assert post(client, "/twilio/sms", params).status_code == 200
    assert post(client, "/twilio/sms", params).status_code == 200
    with Session(ctx.engine) as session:
        assert len(session.exec(select(InboundMessage)).all()) == 1


def test_record_each_call_event_once(client, post, ctx) -> None:
    params = call_params(CallStatus="completed")
    for _ in range(3):
        post(client, "/twilio/voice/status", params)
    with Session(ctx.engine) as session:
        assert len(session.exec(select(CallEvent)).all()) == 1


def test_answer_health_and_ready(client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200




def test_serve_openapi_schema_listing_every_webhook(client) -> None:
    schema = client.get("/schema/openapi.json").json()
    for path in ("/twilio/voice", "/twilio/voice/dial-status", "/twilio/voice/status", "/twilio/sms",
                 "/twilio/sms/status", "/health", "/ready"):
        assert path in schema["paths"]
