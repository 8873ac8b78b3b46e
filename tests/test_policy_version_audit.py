"""One policy-set version id: every version the audit trail records (texts, alerts, decisions, a person's text) is the
policy-set version of the policies the service started with, the one `policy report` and approvals show."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlmodel import Session, select

from service.cli import main
from service.context import build_context
from service.errors import PolicyError
from service.models import Decision, Lead, OutboundMessage
from service.policy.files import policy_version
from tests.api_helpers import signed_in
from tests.helpers import CALLER, POLICIES, call_params, sms_params

DIAL = "/twilio/voice/dial-status"


def test_record_policy_set_version_on_every_text_decision_and_alert(client, post, ctx) -> None:
    version = policy_version(POLICIES)
    assert ctx.policy_version == version
    params = call_params("CA" + "7" * 32, CALLER, CallStatus="in-progress", DialCallStatus="no-answer")
    assert post(client, DIAL, params).status_code == 200
    assert post(client, "/twilio/sms", sms_params("refi, after 5 works")).status_code == 200
    assert post(client, "/twilio/sms", sms_params("HELP")).status_code == 200  # a carrier keyword's decision
    assert post(client, "/twilio/sms", sms_params("can I lock my rate today?")).status_code == 200
    with Session(ctx.engine) as session:
        lead_id = session.exec(select(Lead.id).where(Lead.phone == CALLER)).one()
    human = client.post(f"/api/leads/{lead_id}/messages", json={"body": "Hi, this is Dana. Calling you now."},
                        headers=signed_in(ctx))  # a person's own text, through the guard
    assert human.status_code == 201, human.text

    with Session(ctx.engine) as session:
        texts = session.exec(select(OutboundMessage)).all()
        decisions = session.exec(select(Decision)).all()
    purposes = {m.purpose for m in texts}
    assert {"opener", "alert", "human"} <= purposes, purposes  # a borrower text, an alert, a person's text
    [person] = [m for m in texts if m.purpose == "human"]
    assert person.guard_result["policy_version"] == version
    assert {m.audience for m in texts} == {"borrower", "broker"}
    assert [m.policy_version for m in texts] == [version] * len(texts)
    assert decisions
    assert {d.action for d in decisions} >= {"handoff", "help"}
    assert [d.rules_version for d in decisions] == [version] * len(decisions)

    env = {"TEXTBACK_DATABASE_URL": ctx.settings.database_url}
    for layout in ("flat", "conversation"):
        export = CliRunner().invoke(
            main, ["audit", "export", "--since", "2000-01-01", "--format", "jsonl", "--layout", layout], env=env)
        assert export.exit_code == 0, export.output
        rows = [json.loads(line) for line in export.stdout.splitlines()]
        shown = set(_versions(rows)) | set(re.findall(r"policy set ([0-9a-f]{12})", export.stdout))
        assert shown == {version}, layout

    report = CliRunner().invoke(main, ["policy", "report", "--policies", str(POLICIES)])
    assert report.exit_code == 0, report.output
    assert version in report.output


@pytest.mark.parametrize("part", ["guard", "rules", "sending_policy"])
def test_refuse_policy_part_built_from_files_edited_after_start_up(settings, reply_rules, sending_policy,
                                                                   tmp_path: Path, part: str) -> None:
    """The guard, the reply rules and the sending policy are built on first use: from files edited after
    start-up, each is refused (the version recorded must be the one enforced)."""
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    started = settings.model_copy(update={"policies_dir": copy})
    given = {"rules": reply_rules, "sending_policy": sending_policy}
    given.pop(part, None)
    ctx = build_context(started, **given)  # what is not given is built on first use
    try:
        assert ctx.policy_version == policy_version(copy)
        caps = copy / "sending" / "caps.yaml"
        caps.write_text(caps.read_text(encoding="utf-8").replace("title: ", "title: Reviewed, ", 1), encoding="utf-8")
        with pytest.raises(PolicyError, match=f"started with policy set {ctx.policy_version}, now "
                                              f"{policy_version(copy)}"):
            getattr(ctx, part)
    finally:
        ctx.close()


def _versions(value: object) -> list[str]:
    """Every value of a `policy_version` or `rules_version` key anywhere in an exported row."""
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k in {"policy_version", "rules_version"} and isinstance(v, str) and v]
        return found + [x for v in value.values() for x in _versions(v)]
    if isinstance(value, list):
        return [x for v in value for x in _versions(v)]
    return []
