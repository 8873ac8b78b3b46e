"""One policy-set version id: every version the audit trail records (texts, alerts, decisions) is the
policy-set version of the policies the service started with, the one `policy report` and approvals show."""

from __future__ import annotations

import json

from click.testing import CliRunner
from sqlmodel import Session, select

from service.cli import main
from service.models import Decision, OutboundMessage
from service.policy.files import policy_version
from tests.helpers import CALLER, POLICIES, call_params, sms_params

DIAL = "/twilio/voice/dial-status"


def test_record_policy_set_version_on_every_text_decision_and_alert(client, post, ctx) -> None:
    version = policy_version(POLICIES)
    assert ctx.policy_version == version
    params = call_params("CA" + "7" * 32, CALLER, CallStatus="in-progress", DialCallStatus="no-answer")
    assert post(client, DIAL, params).status_code == 200
    assert post(client, "/twilio/sms", sms_params("refi, after 5 works")).status_code == 200
    assert post(client, "/twilio/sms", sms_params("can I lock my rate today?")).status_code == 200

    with Session(ctx.engine) as session:
        texts = session.exec(select(OutboundMessage)).all()
        decisions = session.exec(select(Decision)).all()
    purposes = {m.purpose for m in texts}
    assert {"opener", "alert"} <= purposes, purposes  # a borrower text and an alert to the broker
    assert {m.audience for m in texts} == {"borrower", "broker"}
    assert [m.policy_version for m in texts] == [version] * len(texts)
    assert decisions
    assert {d.action for d in decisions} >= {"handoff"}
    assert [d.rules_version for d in decisions] == [version] * len(decisions)

    export = CliRunner().invoke(main, ["audit", "export", "--since", "2000-01-01", "--format", "jsonl"],
                                env={"TEXTBACK_DATABASE_URL": ctx.settings.database_url})
    assert export.exit_code == 0, export.output
    rows = [json.loads(line) for line in export.stdout.splitlines()]
    shown = {row[name] for row in rows for name in ("policy_version", "rules_version") if row.get(name)}
    assert shown == {version}

    report = CliRunner().invoke(main, ["policy", "report", "--policies", str(POLICIES)])
    assert report.exit_code == 0, report.output
    assert version in report.output
