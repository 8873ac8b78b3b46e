"""The guard's floor fixed in code, and the manifest's examples pinning every pattern (issue 9, section 2).

- A policy set that no longer blocks a floor text (service/policy/floor.py: rate quotes, payment amounts,
  repayment terms, loan products, approval promises, points and fees, down payments) fails `policy check`
  and stops start-up, naming the category, even when the rule file and its manifest entry were removed in
  the same change; a rule the manifest does not require does not count.
- Removing any pattern of a required rule together with the rule's own examples is caught by the manifest's
  examples whenever it lets a red-team text through (evals/outbound_redteam.jsonl).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from service.cli import main
from service.errors import PolicyError
from service.app import create_app
from service.policy.check import run_check
from service.policy.files import load_outbound_rules
from service.policy.floor import FLOOR, FloorCategory
from service.policy.guard import OutputGuard
from service.policy.manifest import MANIFEST_PATH, load_manifest
from tests.helpers import POLICIES
from tests.test_required_rules import start_refusal

MANIFEST = POLICIES / MANIFEST_PATH


@pytest.fixture
def policies_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    return copy


def _check(policies: Path) -> Result:
    return CliRunner().invoke(main, ["policy", "check", "--policies", str(policies)], catch_exceptions=False)


def _drop_manifest_entry(policies: Path, rule_id: str) -> None:
    """Remove one `- id: <rule_id>` entry (and its examples) from the manifest, as an editor would."""
    path = policies / MANIFEST_PATH
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = lines.index(f"  - id: {rule_id}\n")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("  - id: ")), len(lines))
    path.write_text("".join(lines[:start] + lines[end:]), encoding="utf-8")


def _rule_files(policies: Path) -> dict[str, Path]:
    return {lr.rule.id: lr.file.path for lr in load_outbound_rules(policies)}


def _remove_rule(policies: Path, rule_id: str) -> None:
    """The rule file deleted and its manifest entry removed in the same change."""
    _rule_files(policies)[rule_id].unlink()
    _drop_manifest_entry(policies, rule_id)


# ------------------------------------------------------------------------------------------------- floor
def test_refuse_check_rates_file_and_manifest_entry_deleted_names_rate_quotes(policies_copy: Path) -> None:
    """The reviewer's reproduction: rates.yaml and its manifest entry gone; `policy check` said ok."""
    _remove_rule(policies_copy, "no-rate-quotes")
    result = _check(policies_copy)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if "floor.rate_quote" in line]
    assert lines, result.output
    assert lines[0].startswith("policies/outbound/required.yaml: floor.rate_quote: the policy set does not "
                               "cover rate or APR quotes: ")
    assert "service/policy/floor.py" in lines[0]


def test_refuse_start_rates_file_and_manifest_entry_deleted(policies_copy: Path, settings) -> None:  # noqa: ANN001
    """`serve` would have started and sent "Rates from 5.99% APR this week."."""
    _remove_rule(policies_copy, "no-rate-quotes")
    with pytest.raises(PolicyError, match=r"floor\.rate_quote: the policy set does not cover rate or APR"):
        OutputGuard.load(policies_copy)
    cache = policies_copy.parent / "cache"
    weak = settings.model_copy(update={"policies_dir": policies_copy, "guard_cache_dir": cache})
    assert "floor.rate_quote" in start_refusal(create_app(weak, run_worker=False))


def _blocking_rules(guard: OutputGuard, texts: tuple[str, ...]) -> set[str]:
    return {v.rule for text in texts for v in guard.check(text).violations}


@pytest.fixture(scope="module")
def repo_guard() -> OutputGuard:
    return OutputGuard.load(POLICIES)


@pytest.mark.parametrize("category", FLOOR, ids=[c.name for c in FLOOR])
def test_refuse_check_floor_category_uncovered_names_it(
    repo_guard: OutputGuard, tmp_path: Path, category: FloorCategory
) -> None:
    """Every rule that blocks a category's floor texts removed, with its manifest entry: the category is named."""
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    for rule_id in sorted(_blocking_rules(repo_guard, category.must_block)):
        _remove_rule(policies, rule_id)
    result = run_check(policies)
    where = f"policies/outbound/required.yaml: floor.{category.name}: "
    named = [f for f in result.findings if f.startswith(where)]
    assert named, result.findings
    assert f"does not cover {category.what}" in named[0]


def test_refuse_check_floor_blocked_only_by_rule_manifest_does_not_require(policies_copy: Path) -> None:
    """rates.yaml kept but dropped from the manifest: nothing keeps rate quotes blocked, so it fails."""
    _drop_manifest_entry(policies_copy, "no-rate-quotes")
    result = _check(policies_copy)
    assert result.exit_code == 1, result.output
    assert re.search(
        r"floor\.rate_quote: .* was blocked only by no-rate-quotes, which policies/outbound/required\.yaml "
        r"does not require at min_severity block", result.output,
    ), result.output


def test_check_floor_repo_policies_block_every_text(repo_guard: OutputGuard) -> None:
    manifest = load_manifest(POLICIES).manifest
    anchored = {r.id for r in manifest.required if r.min_severity == "block"}
    for category in FLOOR:
        assert len(category.must_block) >= 3, category.name
        for text in category.must_block:
            blocked_by = {v.rule for v in repo_guard.check(text).violations}
            assert blocked_by & anchored, (category.name, text, blocked_by)


def test_load_guard_self_test_counts_floor(tmp_path: Path) -> None:
    guard = OutputGuard.load(POLICIES, cache_dir=tmp_path)
    rules = sum(len(r.rule.examples.must_block) + len(r.rule.examples.must_pass) for r in guard.rules)
    manifest = sum(len(r.must_block) for r in load_manifest(POLICIES).manifest.required)
    floor = sum(len(c.must_block) for c in FLOOR)
    assert guard.self_test.examples == rules + manifest + floor + 1  # and the known-good text
