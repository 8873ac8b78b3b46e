"""The guard's floor fixed in code, and the manifest's examples pinning every pattern (issue 9, section 2).

- A policy set that no longer blocks a floor text (service/policy/floor.py: rate quotes, payment amounts,
  repayment terms, loan products, approval promises, points and fees, down payments) fails `policy check`
  and stops start-up, naming the category, even when the rule file and its manifest entry were removed in
  the same change; a rule the manifest does not require does not count.
- Removing any pattern of a required rule together with the rule's own examples is caught by the manifest's
  examples whenever it lets a red-team text through (evals/outbound_redteam.jsonl).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from service.app import create_app
from service.cli import main
from service.errors import PolicyError
from service.policy.check import run_check
from service.policy.files import OutboundRule, load_outbound_rules
from service.policy.floor import FLOOR, FloorCategory
from service.policy.guard import OutputGuard
from service.policy.manifest import MANIFEST_PATH, load_manifest
from service.policy.normalize import normalize
from service.policy.verdicts import rule_matches
from tests.helpers import POLICIES, REPO
from tests.test_required_rules import start_refusal

REDTEAM = REPO / "evals" / "outbound_redteam.jsonl"


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


def test_refuse_start_rates_file_and_manifest_entry_deleted(policies_copy: Path, settings) -> None:
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
    """Every rule that blocks a category's floor texts removed with its manifest entry: the category is named."""
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
    rules = sum(len(r.rule.examples.must_match) + len(r.rule.examples.must_not_match) for r in guard.rules)
    manifest = sum(len(r.must_match) for r in load_manifest(POLICIES).manifest.required)
    floor = sum(len(c.must_block) for c in FLOOR)
    assert guard.self_test.examples == rules + manifest + floor + 1  # and the known-good text


# ------------------------------------------------------------------ every pattern pinned by the manifest
def _redteam_blocks() -> list[tuple[str, str, str]]:
    cases = [json.loads(line) for line in REDTEAM.read_text(encoding="utf-8").splitlines() if line.strip()]
    blocks = [c for c in cases if c["expect"] == "block"]
    return [(c["id"], c.get("category", "general"), normalize(c["text"])) for c in blocks]


def _without_pattern(rule: OutboundRule, index: int) -> OutboundRule:
    return OutboundRule.model_validate(
        {**rule.model_dump(), "patterns": rule.patterns[:index] + rule.patterns[index + 1 :]}
    )


def _blocks(rule: OutboundRule, normalized: str) -> bool:
    return bool(rule_matches(rule, normalized))


RULES = {lr.rule.id: lr.rule for lr in load_outbound_rules(POLICIES)}


@pytest.mark.parametrize("rule_id", sorted(r.id for r in load_manifest(POLICIES).manifest.required))
def test_remove_pattern_that_lets_redteam_text_through_caught_by_manifest(rule_id: str) -> None:
    """Weaken a required rule by one pattern, together with its own examples (they are the editor's to change):
    if that lets any red-team text through the whole guard, the manifest's own examples for the rule, or the
    floor, must stop it. Basis points used to be one such pattern: the manifest had no example of it."""
    required = {r.id: r for r in load_manifest(POLICIES).manifest.required}[rule_id]
    rule = RULES[rule_id]
    blocking = [r for r in RULES.values() if r.severity == "block"]
    blocks = _redteam_blocks()
    caught_by = {cid: {r.id for r in blocking if _blocks(r, text)} for cid, _, text in blocks}
    pinned = [normalize(t) for t in required.must_match]
    floor = [normalize(t) for c in FLOOR for t in c.must_block]
    floor_others = [any(_blocks(r, t) for r in blocking if r.id != rule_id) for t in floor]
    unpinned: list[str] = []
    for index, pattern in enumerate(rule.patterns):
        weak = _without_pattern(rule, index)
        if any(not _blocks(weak, text) for text in pinned):
            continue  # a manifest example for this rule stops passing: caught
        if any(not others and not _blocks(weak, t) for t, others in zip(floor, floor_others, strict=True)):
            continue  # a floor text stops being blocked: caught
        lost = [
            f"{cid} ({cat})" for cid, cat, text in blocks if caught_by[cid] == {rule_id} and not _blocks(weak, text)
        ]
        if lost:
            unpinned.append(f"patterns.{index} {pattern[:60]!r} alone blocks {', '.join(lost[:4])}")
    assert not unpinned, f"{rule_id}: no manifest example pins\n  " + "\n  ".join(unpinned)


def test_refuse_check_basis_points_patterns_removed_with_their_examples(policies_copy: Path) -> None:
    """The reviewer's case: the basis-point patterns deleted from rates.yaml together with the examples only
    they blocked; the rule's remaining examples all pass, so only the manifest's own examples can catch it."""
    path = policies_copy / "outbound" / "rates.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    kept = [p for p in data["patterns"] if "bps" not in p]
    assert len(kept) < len(data["patterns"])
    weak = OutboundRule.model_validate({**data, "patterns": kept})
    data["patterns"] = kept
    data["examples"]["must_match"] = [t for t in data["examples"]["must_match"] if _blocks(weak, normalize(t))]
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    result = _check(policies_copy)
    assert result.exit_code == 1, result.output
    assert re.search(r'required\.no-rate-quotes\.must_match\[\d+\]: "[^"]*(?:bps|bips)[^"]*" was not blocked by '
                     r"no-rate-quotes", result.output), result.output
