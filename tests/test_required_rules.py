"""The output guard cannot be weakened by a missing or edited file (issue 9, section 2).

- policies/outbound/required.yaml, the compliance manifest, names the rules that must be in force and their
  minimum severity, with examples of its own: a missing, renamed, downgraded or neutered rule, or a missing or
  empty manifest, fails `policy check` and stops start-up.
- Start-up runs every must_match and must_not_match example of every rule through the guard the service uses,
  once per policy version (cached under var/), and refuses to start on any failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from litestar import Litestar
from litestar.testing import TestClient
from sqlmodel import Session, select

from service.app import create_app
from service.cli import main
from service.errors import PolicyError
from service.models import OutboundMessage
from service.policy.files import load_outbound_rules, policy_version
from service.policy.guard import OutputGuard
from tests.helpers import POLICIES, REPO

RATES = "outbound/rates.yaml"
MANIFEST = "outbound/required.yaml"


@pytest.fixture
def policies_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    return copy


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def start_refusal(app: Litestar) -> str:
    """Start the app as uvicorn would (its lifespan); return the PolicyError that stopped it."""
    try:
        with TestClient(app=app):
            pass
    except PolicyError as exc:
        return str(exc)
    except ExceptionGroup as group:  # the lifespan runs in a task group
        found, _ = group.split(PolicyError)
        if found is not None:
            return str(found.exceptions[0])
        raise
    pytest.fail("the app started")


def _check(policies: Path) -> Result:
    return CliRunner().invoke(main, ["policy", "check", "--policies", str(policies)], catch_exceptions=False)


def _delete(policies: Path) -> None:
    (policies / RATES).unlink()


def _rename_file(policies: Path) -> None:
    (policies / RATES).rename(policies / "outbound" / "rates.yaml.disabled")


def _rename_id(policies: Path) -> None:
    _edit(policies / RATES, "id: no-rate-quotes", "id: no-rate-quotes-old")


def _downgrade(policies: Path) -> None:
    _edit(policies / RATES, "severity: block", "severity: warn")


def _neuter(policies: Path) -> None:
    """Patterns that never fire, with examples rewritten to match: the rule's own examples all still 'pass'."""
    rates = policies / RATES
    text = rates.read_text(encoding="utf-8")
    head = text.split("patterns:")[0]
    rates.write_text(
        head + "patterns:\n  - '\\bzzqx\\b'\nexamples:\n  must_match:\n    - \"zzqx\"\n  must_not_match:\n    - \"hello\"\n",
        encoding="utf-8",
    )


MISSING_LINE = "policies/outbound/required.yaml: required.no-rate-quotes: required outbound rule is missing"
WEAKENINGS: dict[str, tuple[Callable[[Path], None], str]] = {
    "deleted": (_delete, MISSING_LINE),
    "file renamed": (_rename_file, MISSING_LINE),
    "id renamed": (_rename_id, MISSING_LINE),
    "downgraded to warn": (
        _downgrade,
        "policies/outbound/rates.yaml: severity: no-rate-quotes is 'warn' but policies/outbound/required.yaml "
        "requires 'block'",
    ),
    "patterns neutered": (
        _neuter,
        'policies/outbound/required.yaml: required.no-rate-quotes.must_match[0]: "Rates from 5.99% APR this week." '
        "was not blocked by no-rate-quotes",
    ),
}


# ------------------------------------------------------------------------------------------ policy check
@pytest.mark.parametrize("how", list(WEAKENINGS))
def test_check_policies_required_rule_weakened_fails_naming_file_and_rule(policies_copy: Path, how: str) -> None:
    weaken, expected = WEAKENINGS[how]
    weaken(policies_copy)
    result = _check(policies_copy)
    assert result.exit_code == 1, result.output
    assert any(line.startswith(expected) for line in result.output.splitlines()), result.output


@pytest.mark.parametrize("content", [None, "", "id: required-outbound-rules\n"])
def test_check_policies_manifest_missing_or_empty_fails(policies_copy: Path, content: str | None) -> None:
    manifest = policies_copy / MANIFEST
    if content is None:
        manifest.unlink()
    else:
        manifest.write_text(content, encoding="utf-8")
    result = _check(policies_copy)
    assert result.exit_code == 1, result.output
    assert any(line.startswith("policies/outbound/required.yaml") for line in result.output.splitlines()), result.output


def test_check_policies_manifest_with_no_rules_fails(policies_copy: Path) -> None:
    manifest = policies_copy / MANIFEST
    head = manifest.read_text(encoding="utf-8").split("required:")[0]
    manifest.write_text(head + "required: []\n", encoding="utf-8")
    result = _check(policies_copy)
    assert result.exit_code == 1, result.output
    assert re.search(r"^policies/outbound/required\.yaml:\d+: required: ", result.output, re.MULTILINE), result.output


def test_version_policy_set_changes_with_manifest(policies_copy: Path) -> None:
    before = policy_version(policies_copy)
    _edit(policies_copy / MANIFEST, "min_severity: block", "min_severity: warn")
    assert policy_version(policies_copy) != before


# -------------------------------------------------------------------------------------------- start-up
@pytest.mark.parametrize("how", list(WEAKENINGS))
def test_load_guard_required_rule_weakened_refuses(policies_copy: Path, how: str) -> None:
    weaken, expected = WEAKENINGS[how]
    weaken(policies_copy)
    with pytest.raises(PolicyError) as info:
        OutputGuard.load(policies_copy)
    assert str(info.value).startswith(expected)


def test_refuse_start_required_rule_deleted_and_opener_quotes_rate(policies_copy: Path, settings) -> None:
    """The issue's reproduction: rates.yaml gone and the opener edited to quote a rate; nothing may start."""
    _delete(policies_copy)
    _edit(policies_copy / "templates" / "borrower.yaml", "Sorry I missed your call!",
          "Sorry I missed your call! Rates from 5.99% APR.")
    weak = settings.model_copy(update={"policies_dir": policies_copy, "guard_cache_dir": policies_copy.parent / "c"})
    app = create_app(weak, run_worker=False)
    assert start_refusal(app).startswith(MISSING_LINE)
    with Session(app.state.ctx.engine) as session:
        assert session.exec(select(OutboundMessage)).all() == []


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]])
def test_refuse_serve_command_required_rule_downgraded(policies_copy: Path, tmp_path: Path, command: list[str]) -> None:
    """`textback serve` (and `textback worker`) in a subprocess: exit with the finding, never run."""
    _downgrade(policies_copy)
    brokers = tmp_path / "brokers.yaml"
    shutil.copy(REPO / "brokers.example.yaml", brokers)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TEXTBACK_", "TWILIO_", "OPENAI_"))},
        "TEXTBACK_POLICIES_DIR": str(policies_copy),
        "TEXTBACK_BROKERS_FILE": str(brokers),
        "TEXTBACK_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "TEXTBACK_GUARD_CACHE_DIR": str(tmp_path / "cache"),
    }
    try:
        done = subprocess.run(  # our own CLI
            [str(Path(sys.executable).parent / "textback"), *command],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"textback {command[0]} started with no-rate-quotes downgraded to warn")
    assert done.returncode != 0
    assert "no-rate-quotes is 'warn'" in done.stderr
    assert "policies/outbound/rates.yaml" in done.stderr


# ----------------------------------------------------------------------------- every example at start-up
def _keep_first_pattern(path: Path) -> None:
    """Weaken a rule to its first pattern: its first must_match example still blocks, later ones do not."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = lines.index("patterns:\n")
    first = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("  - "))
    end = next(i for i in range(first + 1, len(lines)) if not lines[i].startswith(" "))
    path.write_text("".join(lines[: first + 1] + lines[end:]), encoding="utf-8")


def test_load_guard_later_must_match_example_fails_refuses(policies_copy: Path) -> None:
    """A weakened rule whose first example still blocks but a later one does not."""
    _keep_first_pattern(policies_copy / RATES)
    guard = OutputGuard.from_rules(load_outbound_rules(policies_copy), "test", policies_copy)
    first = next(r.rule for r in load_outbound_rules(policies_copy) if r.rule.id == "no-rate-quotes")
    assert not guard.check(first.examples.must_match[0]).allowed  # what start-up used to run: still blocked
    with pytest.raises(PolicyError) as info:
        OutputGuard.load(policies_copy)
    message = str(info.value)
    assert message.startswith("policies/outbound/rates.yaml: examples.must_match[")
    assert "more; run `textback policy check`" in message


def test_load_guard_must_not_match_example_blocked_refuses(policies_copy: Path) -> None:
    _edit(policies_copy / "outbound" / "ltv.yaml", "patterns:\n", "patterns:\n  - '\\bcounties\\b'\n")
    with pytest.raises(PolicyError) as info:
        OutputGuard.load(policies_copy)
    assert str(info.value).startswith("policies/outbound/ltv.yaml: examples.must_not_match[")
    assert "64 counties" in str(info.value)


def test_load_guard_every_example_counted(tmp_path: Path) -> None:
    guard = OutputGuard.load(POLICIES, cache_dir=tmp_path)
    examples = sum(len(r.rule.examples.must_match) + len(r.rule.examples.must_not_match) for r in guard.rules)
    assert guard.self_test.examples > examples  # the rules' examples, the manifest's and a known-good text
    assert guard.self_test.cached is False


def test_load_guard_self_test_cached_per_policy_version(policies_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = OutputGuard.load(policies_copy, cache_dir=cache)
    second = OutputGuard.load(policies_copy, cache_dir=cache)
    assert (first.self_test.cached, second.self_test.cached) == (False, True)
    assert second.self_test.examples == first.self_test.examples
    _edit(policies_copy / "outbound" / "ltv.yaml", "title: No loan-to-value", "title: No LTV")
    third = OutputGuard.load(policies_copy, cache_dir=cache)
    assert third.self_test.cached is False
    assert len(list(cache.glob("*.json"))) == 2


def test_load_guard_weakened_after_cached_pass_still_refuses(policies_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    OutputGuard.load(policies_copy, cache_dir=cache)
    _keep_first_pattern(policies_copy / RATES)
    with pytest.raises(PolicyError):
        OutputGuard.load(policies_copy, cache_dir=cache)
    assert len(list(cache.glob("*.json"))) == 1  # a failed run is never recorded


def test_load_guard_cache_dir_unwritable_still_starts(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x", encoding="utf-8")
    guard = OutputGuard.load(POLICIES, cache_dir=blocker / "cache")
    assert guard.self_test.cached is False
