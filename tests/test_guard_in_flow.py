"""The output guard inside the service: at start-up for templates, and before every borrower text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlmodel import Session, select

from service.app import create_app
from service.errors import ConfigError, PolicyError
from service.models import Lead, OutboundMessage
from service.templates import TemplateSet, load_templates
from tests.helpers import BROKER_ALERT, CALLER, POLICIES, call_params, sent_templates, sent_texts

DIAL = "/twilio/voice/dial-status"


def policies_with_rate_in_opener(tmp_path: Path) -> Path:
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    path = copy / "templates" / "borrower.yaml"
    text = path.read_text()
    assert "Sorry I missed your call!" in text
    path.write_text(text.replace("Sorry I missed your call!", "Sorry I missed your call! Rates from 5.99% APR.", 1))
    return copy


def test_refuse_start_when_template_edited_to_contain_rate(tmp_path, ctx) -> None:
    ctx.templates = load_templates(policies_with_rate_in_opener(tmp_path))
    with pytest.raises(PolicyError) as info:
        ctx.check_templates()
    assert "templates.opener" in str(info.value)
    assert "borrower.yaml" in str(info.value)


def test_block_text_at_send_time_alert_broker_and_never_send(tmp_path, client, post, twilio_api, ctx) -> None:
    """A template changed under a running service is caught by the guard before the send."""
    ctx.templates = load_templates(policies_with_rate_in_opener(tmp_path))
    assert post(client, DIAL, call_params(DialCallStatus="no-answer")).status_code == 200
    client.app.state.worker.run_once()
    texts = sent_texts(twilio_api["messages"])
    assert [t for t in texts if t["To"] == CALLER] == []
    [_alert] = [t for t in texts if t["To"] == BROKER_ALERT]
    assert sent_templates(ctx, twilio_api["messages"], BROKER_ALERT) == ["alert_blocked"]
    with Session(ctx.engine) as session:
        row = session.exec(select(OutboundMessage).where(OutboundMessage.to_phone == CALLER)).one()
        lead = session.exec(select(Lead)).one()
    assert row.status == "blocked"
    assert row.guard_result["allowed"] is False
    assert any(v["rule"] == "no-rate-quotes" for v in row.guard_result["violations"])
    assert lead.state == "handoff"


def test_record_guard_result_and_policy_version_on_every_borrower_text(client, post, twilio_api, ctx) -> None:
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    with Session(ctx.engine) as session:
        row = session.exec(select(OutboundMessage)).one()
    assert row.guard_result == {"allowed": True, "violations": []}
    assert row.policy_version
    assert row.template_id == "opener"
    assert row.twilio_sid


def test_keep_borrower_text_out_of_logs(client, post, twilio_api, caplog, capsys) -> None:
    from tests.helpers import sms_params

    secret = "can I lock my rate? my SSN is 123-45-6789, acct 99887766"
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    post(client, "/twilio/sms", sms_params(secret))
    fields = " ".join(str(getattr(r, "fields", "")) for r in caplog.records)
    logged = caplog.text + fields + capsys.readouterr().err
    assert "inbound stored" in logged  # the events are there, without the text
    assert "123-45-6789" not in logged
    assert "lock my rate" not in logged
    assert "99887766" not in logged


def _strip_opt_out(templates: TemplateSet) -> TemplateSet:
    """The opener without its opt-out line (and no `requires:`), as if swapped in under a running service."""
    spec = templates.templates["opener"]
    assert " Reply STOP to opt out." in spec.text
    stripped = spec.model_copy(update={"text": spec.text.replace(" Reply STOP to opt out.", ""), "requires": []})
    return TemplateSet({**templates.templates, "opener": stripped}, templates.sources, templates.version)


def test_block_opener_without_opt_out_at_send_time(client, post, twilio_api, ctx) -> None:
    """Required content is enforced on every rendered text by its template kind, not by the template's list."""
    ctx.templates = _strip_opt_out(ctx.templates)
    assert post(client, DIAL, call_params(DialCallStatus="no-answer")).status_code == 200
    client.app.state.worker.run_once()
    assert [t for t in sent_texts(twilio_api["messages"]) if t["To"] == CALLER] == []
    with Session(ctx.engine) as session:
        row = session.exec(select(OutboundMessage).where(OutboundMessage.to_phone == CALLER)).one()
    assert row.status == "blocked"
    assert {"rule": "required-opt_out", "match": "opt-out instructions"} in row.guard_result["violations"]


def test_refuse_start_opener_without_opt_out_or_nmls(tmp_path, settings) -> None:
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    path = copy / "templates" / "borrower.yaml"
    text = path.read_text()
    assert text.count(" (NMLS #$nmls_id)") == 7  # the opener first, its five variants, help
    path.write_text(text.replace(" (NMLS #$nmls_id)", "", 1).replace("requires: [brokerage, nmls_id]", "requires: []", 1))
    with pytest.raises(PolicyError) as info:
        create_app(settings.model_copy(update={"policies_dir": copy}), run_worker=False)
    assert info.value.field == "templates.opener"
    assert "NMLS ID" in info.value.message


def test_refuse_start_broker_booking_link_with_encoded_rate(tmp_path, settings, output_guard) -> None:
    """serve's start-up (build_context + warm_up) names the brokers file and the line of the value."""
    from service.context import build_context

    brokers = tmp_path / "bad-brokers.yaml"
    text = settings.brokers_file.read_text()
    assert "booking_url: https://cal.example.com/marcus" in text
    brokers.write_text(text.replace("https://cal.example.com/marcus", "https://cal.example.com/marcus?promo=5.5%25APR"))
    line = 1 + brokers.read_text().splitlines().index("    booking_url: https://cal.example.com/marcus?promo=5.5%25APR")
    context = build_context(settings.model_copy(update={"brokers_file": brokers}), guard=output_guard)
    try:
        with pytest.raises(ConfigError) as info:
            context.warm_up()
    finally:
        context.close()
    assert str(info.value).startswith(f"{brokers}:{line}: brokers[1].booking_url: ")


def test_guard_broker_template_addressed_to_a_borrower(client, post, twilio_api, ctx) -> None:
    """Only the team's numbers get a text the guard does not read: an alert template sent anywhere else is
    a borrower text, checked and gated like one."""
    from service.models import Broker
    from service.outbox import queue_text

    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    with Session(ctx.engine, expire_on_commit=False) as session:
        lead = session.exec(select(Lead)).one()
        broker = session.get(Broker, lead.broker_id)
        to_team = queue_text(session, ctx, broker=broker, lead=lead, to=BROKER_ALERT, template_id="alert_reply",
                             purpose="alert", values={"caller": CALLER, "excerpt": "is 5.99% APR ok?"}).msg
        to_caller = queue_text(session, ctx, broker=broker, lead=lead, to=CALLER, template_id="alert_reply",
                               purpose="alert", values={"caller": CALLER, "excerpt": "is 5.99% APR ok?"}).msg
        session.commit()
    assert (to_team.audience, to_team.status) == ("broker", "pending")
    assert to_caller.audience == "borrower"
    assert to_caller.status == "blocked"
    assert any(v["rule"] == "no-rate-quotes" for v in to_caller.guard_result["violations"])
