"""No alert is lost in silence: a failed broker alert is logged, retried, switched to another sender when the
broker's number cannot send, escalated to the operator, and recorded on the lead and in the audit export."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from sqlmodel import Session, select

from service.models import Lead, OutboundMessage
from tests.helpers import (
    BROKER,
    BROKER2,
    BROKER_ALERT,
    BROKER_CELL,
    CALLER,
    call_params,
    message_json,
    sent_templates,
    sent_texts,
    sms_params,
    status_params,
)

DIAL = "/twilio/voice/dial-status"
STATUS = "/twilio/sms/status"
OPERATOR = "+14155550177"
ALERTS_NUMBER = "+14155550150"
RATE_LOCK = "can I lock my rate today? it expires friday"


@pytest.fixture
def settings_env() -> dict[str, object]:
    return {"operator_alert_to": [OPERATOR]}


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    """Every record the service's loggers emit (they do not propagate to the root logger)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    logger = logging.getLogger("textback")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def outbound(ctx) -> list[OutboundMessage]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(OutboundMessage).order_by(OutboundMessage.id)))


def alerts(ctx, template: str | None = None) -> list[OutboundMessage]:
    return [m for m in outbound(ctx) if m.audience == "broker" and template in (None, m.template_id)]


def the_lead(ctx) -> Lead:
    with Session(ctx.engine) as session:
        return session.exec(select(Lead).where(Lead.phone == CALLER)).one()


def status_callback(post, client, sid: str, status: str, code: int | None, sender: str = BROKER,
                    to: str = BROKER_ALERT) -> None:
    assert post(client, STATUS, status_params(sid, status, to=to, from_=sender, error_code=code)).status_code == 200


def warnings_about(records: list[logging.LogRecord], msg_id: int) -> list[dict]:
    return [r.fields for r in records
            if r.levelno >= logging.WARNING and isinstance(getattr(r, "fields", None), dict)
            and r.fields.get("id") == msg_id]


def handoff(client, post, worker_runs: int = 1) -> None:
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    post(client, "/twilio/sms", sms_params(RATE_LOCK))
    for _ in range(worker_runs):
        client.app.state.worker.run_once()


def test_log_retry_and_escalate_alert_when_delivery_fails(client, post, twilio_api, ctx, logged) -> None:
    """Reproduction: an alert Twilio accepted but could not deliver was written to its row, with no log line
    and no escalation."""
    handoff(client, post)
    [first] = alerts(ctx, "alert_handoff")
    assert first.status == "sent"
    status_callback(post, client, first.twilio_sid, "undelivered", 30003)

    [warning] = [f for f in warnings_about(logged, first.id) if f.get("template") == "alert_handoff"]
    assert "30003" in warning["error"]
    assert RATE_LOCK.split()[0] not in json.dumps(warning)  # never borrower text
    lead = the_lead(ctx)
    assert lead.alert_failed_at is not None
    assert "30003" in (lead.alert_error or "")
    # Retried with backoff (a new text, the failed one stays as Twilio reported it) ...
    for _ in range(5):
        client.app.state.worker.run_once()
        latest = alerts(ctx, "alert_handoff")[-1]
        if latest.id != first.id and latest.status == "sent" and latest.delivery_status not in {"failed", "undelivered"}:
            status_callback(post, client, latest.twilio_sid, "undelivered", 30003)
    handoffs = alerts(ctx, "alert_handoff")
    assert len(handoffs) == 3  # the alert and two more tries
    assert {m.body for m in handoffs} == {first.body}
    # ... then escalated to the operator, from a number that is not the failing one.
    client.app.state.worker.run_once()
    to_operator = [t for t in sent_texts(twilio_api["messages"]) if t["To"] == OPERATOR]
    assert len(to_operator) == 1
    assert CALLER in to_operator[0]["Body"]
    assert sent_templates(ctx, twilio_api["messages"], OPERATOR) == ["alert_escalation"]
    assert to_operator[0]["From"] != BROKER


def test_log_warning_on_every_failed_alert_attempt(client, post, twilio_api, ctx, logged) -> None:
    route = twilio_api["messages"]

    def answer(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        if form["To"] == BROKER_ALERT:
            return httpx.Response(503, text="<html>Service Unavailable</html>")
        return httpx.Response(201, json=message_json(form["To"], form["From"], form["Body"]))

    route.side_effect = answer
    handoff(client, post)
    [alert] = alerts(ctx, "alert_handoff")
    assert alert.status == "pending"
    warnings = warnings_about(logged, alert.id)
    assert len(warnings) == alert.attempts >= 1
    assert all(w["template"] == "alert_handoff" and "503" in w["error"] for w in warnings)


@pytest.mark.parametrize(
    ("how", "code"),
    [("api", 21606), ("api", 21212), ("api", 21659), ("callback", 30034), ("callback", 30032)],
)
def test_send_could_not_text_alert_from_another_number_when_broker_number_cannot_send(
    client, post, twilio_api, ctx, logged, how, code,
) -> None:
    """Reproduction: the broker's number is not registered for A2P 10DLC (30034); the "could not text the caller"
    alert went out from that same number and failed too."""
    route = twilio_api["messages"]

    def answer(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        if form["From"] == BROKER and how == "api":
            return httpx.Response(400, json={"code": code, "message": "cannot send from this number", "status": 400})
        return httpx.Response(201, json=message_json(form["To"], form["From"], form["Body"]))

    route.side_effect = answer
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    if how == "callback":
        [opener] = outbound(ctx)
        status_callback(post, client, opener.twilio_sid, "failed", code, to=CALLER)
    client.app.state.worker.run_once()
    could_not = [t for t in sent_texts(route) if t["To"] == BROKER_ALERT]
    assert len(could_not) == 1
    assert sent_templates(ctx, route, BROKER_ALERT) == ["alert_send_failed"]
    assert could_not[0]["From"] == BROKER2  # the other configured broker number (no TEXTBACK_ALERTS_FROM)
    # The operator learns that the broker's number cannot send, once.
    notices = [t for t in sent_texts(route) if t["To"] == OPERATOR]
    assert len(notices) == 1
    assert BROKER in notices[0]["Body"]
    assert notices[0]["From"] == BROKER2
    assert any(str(code) in json.dumps(r.fields) for r in logged
               if r.levelno >= logging.WARNING and isinstance(getattr(r, "fields", None), dict))


def test_resend_alert_from_alerts_sender_at_once_when_sender_cannot_send(client, post, twilio_api, ctx) -> None:
    ctx.settings.alerts_from = ALERTS_NUMBER
    handoff(client, post)
    [first] = alerts(ctx, "alert_handoff")
    status_callback(post, client, first.twilio_sid, "failed", 30034)
    client.app.state.worker.run_once()
    handoffs = alerts(ctx, "alert_handoff")
    assert len(handoffs) == 2
    assert handoffs[1].from_phone == ALERTS_NUMBER
    assert handoffs[1].status == "sent"
    assert handoffs[1].body == first.body
    # Later alerts for this broker leave from the alerts sender straight away (its number cannot send).
    other = "+14155550198"
    post(client, DIAL, call_params(call_sid="CA" + "2" * 32, caller=other, DialCallStatus="no-answer"))
    post(client, "/twilio/sms", sms_params("my closing is next week, please call", sender=other))
    client.app.state.worker.run_once()
    later = [m for m in alerts(ctx) if m.id > handoffs[1].id and m.to_phone == BROKER_ALERT]
    assert later
    assert all(m.from_phone == ALERTS_NUMBER for m in later)


def test_keep_broker_number_for_alerts_after_it_delivers_again(client, post, twilio_api, ctx) -> None:
    ctx.settings.alerts_from = ALERTS_NUMBER
    handoff(client, post)
    [first] = alerts(ctx, "alert_handoff")
    status_callback(post, client, first.twilio_sid, "failed", 30034)
    client.app.state.worker.run_once()
    # The number is registered again: a text from it is delivered.
    [opener] = [m for m in outbound(ctx) if m.purpose == "opener"]
    post(client, DIAL, call_params(call_sid="CA" + "2" * 32, caller="+14155550198", DialCallStatus="no-answer"))
    second_opener = next(m for m in outbound(ctx) if m.purpose == "opener" and m.id != opener.id)
    status_callback(post, client, second_opener.twilio_sid, "delivered", None, to="+14155550198")
    post(client, "/twilio/sms", sms_params("rate lock question again", sender="+14155550198"))
    client.app.state.worker.run_once()
    latest = [m for m in alerts(ctx) if m.lead_id is not None and m.lead_id != opener.lead_id]
    assert latest
    assert all(m.from_phone == BROKER for m in latest)


def test_escalate_at_once_when_alert_recipient_cannot_receive(client, post, twilio_api, ctx) -> None:
    handoff(client, post)
    [first] = alerts(ctx, "alert_handoff")
    status_callback(post, client, first.twilio_sid, "undelivered", 30006)  # a landline: no retry can help
    client.app.state.worker.run_once()
    assert len(alerts(ctx, "alert_handoff")) == 1
    [escalation] = [t for t in sent_texts(twilio_api["messages"]) if t["To"] == OPERATOR]
    assert CALLER in escalation["Body"]


def test_escalate_to_broker_cell_when_no_operator_is_set(client, post, twilio_api, ctx) -> None:
    ctx.settings.operator_alert_to = []
    handoff(client, post)
    [first] = alerts(ctx, "alert_handoff")
    status_callback(post, client, first.twilio_sid, "undelivered", 30006)
    client.app.state.worker.run_once()
    escalations = [t for t in sent_texts(twilio_api["messages"]) if t["To"] == BROKER_CELL]
    assert len(escalations) == 1
    assert CALLER in escalations[0]["Body"]


def test_never_escalate_an_escalation_twice(client, post, twilio_api, ctx) -> None:
    route = twilio_api["messages"]

    def answer(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        if form["To"] in {BROKER_ALERT, OPERATOR}:
            return httpx.Response(400, json={"code": 21211, "message": "invalid To", "status": 400})
        return httpx.Response(201, json=message_json(form["To"], form["From"], form["Body"]))

    route.side_effect = answer
    handoff(client, post, worker_runs=4)
    to_operator = [t for t in sent_texts(route) if t["To"] == OPERATOR]
    assert len(to_operator) == 1
    assert all(m.status in {"failed", "sent"} for m in alerts(ctx))


def test_export_alert_failures_in_audit(client, post, twilio_api, ctx, settings) -> None:
    from service.audit import export, parse_when

    handoff(client, post)
    [first] = alerts(ctx, "alert_handoff")
    status_callback(post, client, first.twilio_sid, "undelivered", 30006)
    out = io.StringIO()
    export(ctx.engine, out, since=parse_when("2000-01-01"), fmt="jsonl")
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    [failure] = [e for e in events if e["event_type"] == "alert_failure"]
    assert failure["template_id"] == "alert_handoff"
    assert failure["error_code"] == 30006
    assert failure["to"] == BROKER_ALERT
    assert failure["lead_id"] == the_lead(ctx).id
    assert RATE_LOCK not in json.dumps(failure)


def test_reject_alerts_sender_that_is_not_a_phone_number() -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="alerts_from"):
        Settings(_env_file=None, alerts_from="555-0100")


def test_alert_operator_when_broker_alert_fails(client, post, twilio_api, ctx) -> None:
    route = twilio_api["messages"]

    def answer(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        if form["To"] == BROKER_ALERT:
            return httpx.Response(400, json={"code": 21610, "message": "unsubscribed", "status": 400})
        return httpx.Response(201, json=message_json(form["To"], form["From"], form["Body"]))

    route.side_effect = answer
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    post(client, "/twilio/sms", sms_params("can I lock my rate?"))
    for _ in range(2):  # 21610 is about this sender: the alert is tried from another number before escalating
        client.app.state.worker.run_once()
    assert len({t["From"] for t in sent_texts(route) if t["To"] == BROKER_ALERT}) == 2
    to_operator = [t["Body"] for t in sent_texts(route) if t["To"] == OPERATOR]
    assert len(to_operator) == 1
    assert sent_templates(ctx, route, OPERATOR) == ["alert_escalation"]
