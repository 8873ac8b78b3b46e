"""`textback policy approve` and TEXTBACK_REQUIRE_APPROVED_POLICIES: signing off the exact policy-set version,
and start-up refusing a version nobody signed off."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from service.cli import main
from service.context import build_context
from service.errors import ConfigError
from service.policy.approvals import approval_state
from service.policy.files import policy_version
from service.settings import get_settings
from tests.helpers import BROKERS_YAML

POLICIES = Path(__file__).resolve().parent.parent / "policies"


def _policy(*args: str) -> Result:
    return CliRunner().invoke(main, ["policy", *args], catch_exceptions=False)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture
def policies_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    return copy


def test_approve_records_exact_version_reviewer_and_note(policies_copy: Path) -> None:
    version = policy_version(policies_copy)
    result = _policy("approve", "--policies", str(policies_copy), "--reviewer", "Dana Whitfield, CCO",
                     "--note", "Reviewed with counsel")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    digest = approval_state(policies_copy).digest
    assert lines[0] == f"approved policy set {version} (sha256 {digest})"
    assert lines[1].startswith("reviewer: Dana Whitfield, CCO; at ")
    assert lines[1].endswith(" UTC; note: Reviewed with counsel")
    assert lines[-1] == "wrote policies/approvals.yaml"
    [entry] = yaml.safe_load((policies_copy / "approvals.yaml").read_text(encoding="utf-8"))["approvals"]
    assert (entry["version"], entry["digest"], entry["reviewer"], entry["note"]) == (
        version, digest, "Dana Whitfield, CCO", "Reviewed with counsel")
    assert policy_version(policies_copy) == version  # the record is not part of the version it signs

    check = _policy("check", "--policies", str(policies_copy))
    assert check.exit_code == 0, check.output
    assert check.output.splitlines()[-1].startswith(f"policy set {version}: approved by Dana Whitfield, CCO on ")


def test_approve_again_adds_second_sign_off(policies_copy: Path) -> None:
    assert _policy("approve", "--policies", str(policies_copy), "--reviewer", "Dana Whitfield, CCO").exit_code == 0
    result = _policy("approve", "--policies", str(policies_copy), "--reviewer", "Sam Ortiz, counsel")
    assert result.exit_code == 0, result.output
    assert "already approved by Dana Whitfield, CCO: this adds a sign-off (2 for this version)" in result.output
    state = approval_state(policies_copy)
    assert [a.reviewer for a in state.approvals] == ["Dana Whitfield, CCO", "Sam Ortiz, counsel"]
    check = _policy("check", "--policies", str(policies_copy))
    assert check.output.splitlines()[-1].endswith("(2 sign-offs)")


def test_approve_refuses_set_with_findings(policies_copy: Path) -> None:
    borrower = policies_copy / "templates" / "borrower.yaml"
    _edit(borrower, "Sorry I missed your call!", "Sorry I missed your call! Rates from 5.99% this week.")
    result = CliRunner().invoke(main, ["policy", "approve", "--policies", str(policies_copy), "--reviewer", "Dana"])
    assert result.exit_code == 1
    assert any(line.startswith("policies/templates/borrower.yaml: template opener") for line in result.stdout.splitlines())
    assert (f"policy approve: refused: policy set {policy_version(policies_copy)} has" in result.stderr)
    assert not (policies_copy / "approvals.yaml").exists()


def test_check_reports_unapproved_set_without_failing(policies_copy: Path) -> None:
    result = _policy("check", "--policies", str(policies_copy))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        f"policy set {policy_version(policies_copy)}: NOT APPROVED; to sign it off: "
        f'textback policy approve --reviewer "NAME, ROLE" --policies {policies_copy}'
    )


# --------------------------------------------------------------------------------------------- start-up
@pytest.fixture
def production_env(tmp_path: Path, policies_copy: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment of a production start (dry-run: no Twilio credentials) on a copy of the policies."""
    brokers = tmp_path / "brokers.yaml"
    brokers.write_text(BROKERS_YAML, encoding="utf-8")
    for name, value in {
        "TEXTBACK_REQUIRE_APPROVED_POLICIES": "true", "TEXTBACK_POLICIES_DIR": str(policies_copy),
        "TEXTBACK_DATABASE_URL": f"sqlite:///{tmp_path / 'textback.db'}", "TEXTBACK_BROKERS_FILE": str(brokers),
        "TEXTBACK_SPOOL_DIR": str(tmp_path / "spool"), "TEXTBACK_GUARD_CACHE_DIR": str(tmp_path / "guard-cache"),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield policies_copy
    get_settings.cache_clear()


def test_serve_refuses_unapproved_policy_set(production_env: Path) -> None:
    version = policy_version(production_env)
    result = CliRunner().invoke(main, ["serve", "--port", "0"])
    assert result.exit_code == 1
    [line] = [x for x in result.output.splitlines() if x.strip()]
    assert line == (
        f"Error: policy set {version} in {production_env} is not approved and TEXTBACK_REQUIRE_APPROVED_POLICIES "
        "is on: review it (`textback policy diff`, `textback policy report`), then run "
        f'`textback policy approve --reviewer "NAME, ROLE" --policies {production_env}`'
    )


def test_start_with_approved_set_then_refuse_after_edit(production_env: Path, reply_rules, sending_policy,
                                                        output_guard) -> None:
    assert _policy("approve", "--policies", str(production_env), "--reviewer", "Dana Whitfield, CCO").exit_code == 0
    settings = get_settings()
    ctx = build_context(settings, rules=reply_rules, sending_policy=sending_policy, guard=output_guard)
    try:
        assert ctx.policy_version == policy_version(production_env) == approval_state(production_env).version
    finally:
        ctx.close()

    _edit(production_env / "sending" / "caps.yaml", "title: ", "title: Reviewed, ")
    with pytest.raises(ConfigError, match=f"policy set {policy_version(production_env)} in .* is not approved"):
        build_context(settings, rules=reply_rules, sending_policy=sending_policy, guard=output_guard)


def test_start_unapproved_set_when_not_required(production_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                reply_rules, sending_policy, output_guard) -> None:
    monkeypatch.setenv("TEXTBACK_REQUIRE_APPROVED_POLICIES", "false")
    get_settings.cache_clear()
    ctx = build_context(get_settings(), rules=reply_rules, sending_policy=sending_policy, guard=output_guard)
    try:
        assert ctx.policy_version == policy_version(production_env)
    finally:
        ctx.close()


def test_approve_refuses_when_files_change_during_the_check(policies_copy: Path, monkeypatch) -> None:
    """A file edited while `policy check` runs is a version nobody checked: nothing is recorded."""
    from service.policy import cli

    real = cli._run_check

    def check_then_edit(*args, **kwargs):
        result = real(*args, **kwargs)
        _edit(policies_copy / "sending" / "caps.yaml", "title:", "title: Edited -")
        return result

    monkeypatch.setattr(cli, "_run_check", check_then_edit)
    result = CliRunner().invoke(main, ["policy", "approve", "--policies", str(policies_copy), "--reviewer", "Dana W"])
    assert result.exit_code == 1
    assert "refused: the policy files changed while they were checked" in result.output
    assert not (policies_copy / "approvals.yaml").exists()
    assert not approval_state(policies_copy).approved
