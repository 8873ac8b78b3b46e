"""The gates before any automated text: known contacts, caps, circuit breaker, quiet hours, line type."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlmodel import Session, select

from service import outbox, sender
from service.models import Broker, Lead, OutboundMessage
from service.sending import gates
from service.sending.gates import Kind
from service.sending.policy import load_sending_policy
from tests.helpers import BROKER, BROKER_ALERT, CALLER, POLICIES, call_params, sent_templates, sent_texts

DIAL = "/twilio/voice/dial-status"
LOOKUP = "https://lookups.twilio.com/v2/PhoneNumbers/{}"


def missed(client, post, caller: str = CALLER, index: int = 1) -> None:
    assert post(client, DIAL, call_params(f"CA{index:032d}", caller=caller, DialCallStatus="no-answer")).status_code == 200


def policy_with(tmp_path: Path, **caps: int):
    """The shipped sending policy with some caps changed (a reviewed file, edited in a temporary copy)."""
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    path = copy / "sending" / "caps.yaml"
    text = path.read_text()
    for name, value in caps.items():
        head, _, rest = text.partition(f"  {name}:\n    value: ")
        text = head + f"  {name}:\n    value: {value}" + rest[rest.index("\n"):]
    path.write_text(text)
    return load_sending_policy(copy)


def broker_row(ctx) -> Broker:
    return ctx.broker_for(BROKER)


@pytest.mark.parametrize(
    ("phone", "now_utc", "deferred"),
    [
        ("+13055550123", datetime(2026, 6, 10, 0, 30, tzinfo=UTC), True),  # Miami 20:30: FL closes at 20:00
        ("+14045550123", datetime(2026, 6, 10, 0, 30, tzinfo=UTC), False),  # Atlanta 20:30: federal 21:00
        ("+14155550123", datetime(2026, 6, 10, 10, 0, tzinfo=UTC), True),  # San Francisco 03:00
        ("+14155550123", datetime(2026, 6, 10, 17, 0, tzinfo=UTC), False),  # San Francisco 10:00
    ],
)
def test_defer_later_text_to_recipient_window(ctx, phone, now_utc, deferred) -> None:
    with Session(ctx.engine) as session:
        gate = gates.at_queue(session, ctx, broker=broker_row(ctx), lead=None, to=phone, purpose="question",
                              now=now_utc)
    assert (gate.kind is Kind.defer) is deferred
    if deferred:
        assert gate.until is not None
        assert gate.until > now_utc
        assert "quiet hours" in (gate.reason or "")


def test_send_opener_at_night_as_reply_to_the_call(ctx) -> None:
    with Session(ctx.engine) as session:
        gate = gates.at_queue(session, ctx, broker=broker_row(ctx), lead=None, to="+14155550123", purpose="opener",
                              now=datetime(2026, 6, 10, 10, 0, tzinfo=UTC))
    assert gate.kind is Kind.allow


def test_defer_opener_at_night_when_configured_not_a_reply(ctx) -> None:
    ctx.settings.opener_is_reply_override = False
    with Session(ctx.engine) as session:
        gate = gates.at_queue(session, ctx, broker=broker_row(ctx), lead=None, to="+14155550123", purpose="opener",
                              now=datetime(2026, 6, 10, 10, 0, tzinfo=UTC))
    assert gate.kind is Kind.defer



@pytest.mark.parametrize(("override", "kind"), [(None, Kind.allow), (True, Kind.allow), (False, Kind.defer)])
def test_send_opener_at_night_only_while_the_reply_exemption_is_in_force(ctx, override, kind) -> None:
    """At send time (a retry, a worker back after downtime) an opener outside the recipient's hours still goes
    only while the exemption is in force, and its allow reason names the exemption only then."""
    ctx.settings.opener_is_reply_override = override
    night = datetime(2026, 6, 10, 10, 0, tzinfo=UTC)  # 03:00 in San Francisco
    msg = OutboundMessage(broker_id=broker_row(ctx).id, to_phone="+14155550123", from_phone=BROKER, body="Hi",
                          purpose="opener", audience="borrower", template_id="opener")
    with Session(ctx.engine) as session:
        gate = gates.at_send(session, ctx, msg, night)
    assert gate.kind is kind
    if kind is Kind.allow:
        assert gate.reason is not None
        assert gate.reason.startswith("answers the caller's own call (quiet hours exemption, ")
    else:
        assert gate.until is not None
        assert gate.until > night


def test_allow_reason_outside_hours_never_claims_an_exemption_that_is_off(ctx) -> None:
    ctx.settings.opener_is_reply_override = False
    verdict = gates.allowed(ctx, broker_tz="America/Los_Angeles", to="+14155550123", purpose="opener",
                            now=datetime(2026, 6, 10, 10, 0, tzinfo=UTC))
    assert verdict.reason is not None
    assert "exemption" in verdict.reason
    assert verdict.reason.startswith("outside the recipient's calling hours (")
    assert verdict.reason.endswith("and no quiet-hours exemption applies (opener)")

def test_store_deferred_text_pending_until_window(client, post, twilio_api, ctx) -> None:
    """A question queued at 3 a.m. the caller's time waits as a pending row with its reason, unsent."""
    from datetime import timedelta

    from service.outbox import queue_text

    missed(client, post)
    night = (datetime.now(UTC) + timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)
    with Session(ctx.engine, expire_on_commit=False) as session:
        lead = session.exec(select(Lead)).one()
        msg = queue_text(session, ctx, broker=session.get(Broker, lead.broker_id), lead=lead, to=lead.phone,
                         template_id="ask_timeline", purpose="question", now=night).msg
        session.commit()
    assert msg is not None
    assert msg.status == "pending"
    assert msg.last_error.startswith("deferred: quiet hours")
    assert msg.next_attempt_at > night
    client.app.state.worker.run_once()
    assert len(sent_texts(twilio_api["messages"])) == 1  # only the opener
    with Session(ctx.engine) as session:
        row = session.get(OutboundMessage, msg.id)
        row.next_attempt_at = datetime.now(UTC) - timedelta(seconds=1)  # the window has opened
        session.add(row)
        session.commit()
    client.app.state.worker.run_once()
    assert len(sent_texts(twilio_api["messages"])) == 2


def test_skip_opener_for_known_contact_from_file(tmp_path, settings, output_guard, reply_rules, twilio_api) -> None:
    from litestar.testing import TestClient

    from service.app import create_app
    from service.context import build_context
    from service.twilio.signature import sign
    from tests.helpers import PUBLIC_URL, TWILIO_TOKEN

    dnt = tmp_path / "do-not-text.txt"
    dnt.write_text(f"# staff\n{CALLER}  # Dana's assistant\n")
    settings.do_not_text_file = dnt
    context = build_context(settings, guard=output_guard, rules=reply_rules)
    params = call_params(DialCallStatus="no-answer")
    with TestClient(create_app(ctx=context, run_worker=False), base_url="http://testserver.local") as client:
        sig = sign(token=TWILIO_TOKEN, url=PUBLIC_URL + DIAL, params=params)
        assert client.post(DIAL, data=params, headers={"X-Twilio-Signature": sig}).status_code == 200
    context.close()
    assert sent_texts(twilio_api["messages"]) == []


def test_reject_do_not_text_file_with_bad_line(tmp_path) -> None:
    from service.context import read_do_not_text_file
    from service.errors import ConfigError

    path = tmp_path / "dnt.txt"
    path.write_text("+14155550123\nnot-a-number\n")
    with pytest.raises(ConfigError, match=r"dnt.txt:2:"):
        read_do_not_text_file(path)


def test_skip_opener_for_contact_added_by_cli(client, post, twilio_api, ctx, monkeypatch) -> None:
    from service.commands.contacts import contacts
    from service.settings import get_settings

    monkeypatch.setenv("TEXTBACK_DATABASE_URL", ctx.settings.database_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(contacts, ["add", CALLER, "--note", "existing client"])
        assert result.exit_code == 0, result.output
        assert CALLER not in result.output  # masked
        missed(client, post)
        assert sent_texts(twilio_api["messages"]) == []
        result = CliRunner().invoke(contacts, ["add", "garbage"])
        assert result.exit_code != 0
    finally:
        get_settings.cache_clear()


@pytest.fixture
def breaker_at_three(tmp_path: Path, collaborators: dict[str, object]) -> None:
    """`ctx` is built with the circuit breaker tripping after three openers for one broker."""
    collaborators["sending_policy"] = policy_with(tmp_path, breaker_max_openers_per_broker=3)


@pytest.fixture
def cap_at_two(tmp_path: Path, collaborators: dict[str, object]) -> None:
    """`ctx` is built with a cap of two texts per broker per day."""
    collaborators["sending_policy"] = policy_with(tmp_path, per_broker_per_day=2)


def test_trip_circuit_breaker_on_call_flood_and_alert_operator(breaker_at_three, client, post, twilio_api, ctx) -> None:
    for index in range(6):
        missed(client, post, caller=f"+1415555{index:04d}", index=index)
    client.app.state.worker.run_once()  # the alert is queued and the worker woken
    texts = sent_texts(twilio_api["messages"])
    openers = [t for t in texts if t["To"] != BROKER_ALERT]
    alerts = [t for t in texts if t["To"] == BROKER_ALERT]
    assert len(openers) == 3
    assert len(alerts) == 1
    assert sent_templates(ctx, twilio_api["messages"], BROKER_ALERT) == ["alert_operator"]
    with Session(ctx.engine) as session:
        reasons = {m.last_error for m in session.exec(select(OutboundMessage).where(OutboundMessage.status == "suppressed"))}
    assert any("circuit breaker" in (r or "") for r in reasons)


@pytest.fixture
def platform_breaker_at_three(tmp_path: Path, collaborators: dict[str, object]) -> None:
    """`ctx` is built with the platform-wide circuit breaker tripping after three openers in its window."""
    collaborators["sending_policy"] = policy_with(tmp_path, breaker_max_openers=3, breaker_max_openers_per_broker=3)


def test_count_gates_only_up_to_each_limit_and_still_trip(platform_breaker_at_three, client, post, twilio_api,
                                                         ctx) -> None:
    """Each count stops at the limit it is compared with (three openers, of five in the window, are read) and
    the breaker trips on it, saying the limit was reached."""
    for index in range(3):
        missed(client, post, caller=f"+1415555{index:04d}", index=index)
    broker = ctx.broker_for(BROKER)
    with Session(ctx.engine) as session:
        for index in range(2):  # two more openers in the window, queued past the gates (as by a raised limit)
            session.add(OutboundMessage(broker_id=broker.id, to_phone=f"+1415556{index:04d}", from_phone=BROKER,
                                        body="x", template_id="opener", purpose="opener", audience="borrower"))
        session.commit()
        counts = gates.read_counts(session, ctx, broker=broker, lead=None, opener=True, now=datetime.now(UTC))
        in_window = len(session.exec(select(OutboundMessage).where(OutboundMessage.purpose == "opener")).all())
    assert in_window == 5
    assert counts.openers == 3
    assert counts.broker_today == 5
    assert gates.breaker_tripped(ctx, counts) == "circuit breaker: 3 or more openers in 10 min across all brokers"
    missed(client, post, caller="+14155559999", index=9)
    assert len([t for t in sent_texts(twilio_api["messages"]) if t["To"] != BROKER_ALERT]) == 3


def test_stop_at_per_broker_daily_cap(cap_at_two, client, post, twilio_api, ctx) -> None:
    for index in range(4):
        missed(client, post, caller=f"+1415555{index:04d}", index=index)
    assert len(sent_texts(twilio_api["messages"])) == 2


@pytest.mark.parametrize(("line_type", "sent"), [("landline", 0), ("tollFree", 0), ("mobile", 1), ("nonFixedVoip", 1)])
def test_skip_opener_by_line_type_lookup(client, post, twilio_api, ctx, line_type, sent) -> None:
    ctx.settings.line_type_lookup = True
    route = twilio_api.get(LOOKUP.format(CALLER)).respond(200, json={
        "calling_country_code": "1", "country_code": "US", "phone_number": CALLER, "national_format": "(415) 555-0199",
        "valid": True, "validation_errors": [], "line_type_intelligence": {
            "carrier_name": "Carrier", "error_code": None, "mobile_country_code": "310", "mobile_network_code": "456",
            "type": line_type}, "url": LOOKUP.format(CALLER)})
    missed(client, post)
    assert route.called
    assert len(sent_texts(twilio_api["messages"])) == sent
    missed(client, post, index=2)  # inside the cooldown anyway; the lookup result is cached
    assert len(route.calls) == 1


def test_send_opener_when_line_type_lookup_fails(client, post, twilio_api, ctx) -> None:
    ctx.settings.line_type_lookup = True
    twilio_api.get(LOOKUP.format(CALLER)).respond(500, json={"code": 20500, "message": "error", "status": 500})
    missed(client, post)
    assert len(sent_texts(twilio_api["messages"])) == 1


def test_hold_retry_when_it_would_cross_into_quiet_hours(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    with Session(ctx.engine, expire_on_commit=False) as session:
        lead = session.exec(select(Lead)).one()
        queued = outbox.queue_text(session, ctx, broker=ctx.broker_for(BROKER), lead=lead, to=CALLER,
                                   template_id="ask_timeline", purpose="question", now=datetime.now(UTC))
        msg = queued.msg
        session.commit()
    night = (datetime.now(UTC) + timedelta(days=1)).replace(hour=10, minute=0)  # 2-3 a.m. in California
    with Session(ctx.engine) as session:
        row = session.get(OutboundMessage, msg.id)
        row.next_attempt_at, row.last_error = night - timedelta(minutes=1), None
        session.add(row)
        session.commit()
    assert sender.send_one(ctx, msg.id, now=night) == "pending"
    with Session(ctx.engine) as session:
        row = session.get(OutboundMessage, msg.id)
    assert row.next_attempt_at > night
    assert row.last_error == "deferred: quiet hours in CA until 08:00 local (America/Los_Angeles) at send time"
    assert row.verdicts[-1]["reason"] == (
        "held by quiet hours in CA until 08:00 local (America/Los_Angeles) at send time")
    assert len([t for t in sent_texts(twilio_api["messages"]) if t["To"] == CALLER]) == 1  # only the opener


def test_alert_broker_when_lookup_says_not_textable(client, post, twilio_api, ctx) -> None:
    ctx.settings.line_type_lookup = True
    twilio_api.get(LOOKUP.format(CALLER)).respond(200, json={
        "phone_number": CALLER, "valid": True, "line_type_intelligence": {"type": "landline", "error_code": None}})
    missed(client, post)
    client.app.state.worker.run_once()
    texts = sent_texts(twilio_api["messages"])
    assert [t for t in texts if t["To"] == CALLER] == []
    [_alert] = [t["Body"] for t in texts if t["To"] == BROKER_ALERT]
    assert sent_templates(ctx, twilio_api["messages"], BROKER_ALERT) == ["alert_send_failed"]
