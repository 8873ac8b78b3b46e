"""`textback policy diff OLD NEW` through the real CLI: two policy folders, or two git revisions."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from service.cli import main
from service.policy.approvals import approve
from service.policy.diff_values import value_changes
from service.policy.files import policy_version

POLICIES = Path(__file__).resolve().parent.parent / "policies"
OPENER_OLD = "Sorry I missed your call! Are you"
OPENER_NEW = "Sorry I missed your call! We take bitcoin. Are you"
CRYPTO_RULE = """id: no-crypto-talk
kind: outbound_rule
title: No talk of paying in crypto
rationale: >-
  How a borrower pays is for a person to explain, never a text.
severity: block
patterns:
  - '\\bbitcoin\\b'
examples:
  must_match: ["Pay your fees in bitcoin."]
  must_not_match: ["Call me when you can."]
"""


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, ["policy", "diff", *args], catch_exceptions=False)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _change(policies: Path) -> None:
    """One rule's pattern and example added, another's severity lowered, a rule added, one deleted, a template
    reworded."""
    _edit(policies / "outbound" / "rates.yaml", "patterns:\n", "patterns:\n  - '\\bteaser\\s+pricing\\b'\n")
    _edit(policies / "outbound" / "rates.yaml", "  must_match:\n", '  must_match:\n    - "Ask about our teaser pricing."\n')
    _edit(policies / "outbound" / "loan-term.yaml", "severity: block", "severity: warn")
    (policies / "outbound" / "crypto.yaml").write_text(CRYPTO_RULE, encoding="utf-8")
    (policies / "inbound" / "handoff-rate-lock.yaml").unlink()
    _edit(policies / "templates" / "borrower.yaml", OPENER_OLD, OPENER_NEW)


@pytest.fixture
def sides(tmp_path: Path) -> tuple[Path, Path]:
    """The shipped policies (OLD) and an edited copy (NEW)."""
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(POLICIES, old)
    shutil.copytree(POLICIES, new)
    _change(new)
    return old, new


def test_diff_directories_lists_changes_in_reviewer_terms(sides: tuple[Path, Path]) -> None:
    old, new = sides
    approve(new, reviewer="Dana Whitfield, CCO", note=None, now=datetime(2026, 12, 3, 9, 14, tzinfo=UTC))
    result = _run(str(old), str(new))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    expected = [
        f"  OLD: directory {old}: policy set {policy_version(old)}, NOT APPROVED",
        f"  NEW: directory {new}: policy set {policy_version(new)}, approved by Dana Whitfield, CCO on "
        "2026-12-03 09:14 UTC",
        "Outbound rules (what a text to a borrower must never say)",
        "  added no-crypto-talk: No talk of paying in crypto",
        "      severity: block; 1 pattern(s); 2 example(s)",
        "  changed no-rate-quotes: No interest rates, APRs or rate ranges",
        "      patterns: 1 added, 0 removed (regexes in the appendix)",
        '      example added (must_match): "Ask about our teaser pricing."',
        "  changed no-repayment-terms: No number of payments, repayment period or loan structure",
        "      severity: block -> warn",
        "Inbound rules (how a borrower's reply is read)",
        "  removed handoff-rate-lock: Rate lock questions go to a person",
        "Templates (the only words a borrower or broker receives)",
        "  changed opener (en): borrower text",
        '      words: added "We take bitcoin."',
        # the examples of both sets, under the old rules and the new
        '  outbound "Ask about our teaser pricing." (no-rate-quotes must_match): allowed -> blocked by no-rate-quotes',
        '  outbound "Pay your fees in bitcoin." (no-crypto-talk must_match): allowed -> blocked by no-crypto-talk',
        '  outbound "A 30-year fixed is still a great option for you." (no-repayment-terms must_match): '
        "blocked by no-repayment-terms -> allowed, flagged by no-repayment-terms (warn)",
        '  inbound "can I lock my rate?" (handoff-rate-lock must_match): sets handoff_reasons=rate_lock -> '
        "nothing, asks the LLM (content)",
        '  inbound "the lender said my rate is floating, what does that mean" (handoff-rate-lock must_match): '
        "sets handoff_reasons=rate_lock,rate_or_terms -> sets handoff_reasons=rate_or_terms",
        "Appendix: patterns (regular expressions) added and removed",
        "  outbound rule no-rate-quotes",
        "      + \\bteaser\\s+pricing\\b",
    ]
    missing = [line for line in expected if line not in lines]
    assert not missing, result.output
    # the reworded opener, rendered with the sample data, is allowed by the old rules and blocked by the new
    [opener] = [line for line in lines if "(template opener (en) rendered)" in line]
    assert opener.startswith('  outbound "Hi, this is Alexandra Montgomery-Ruiz with Pacific Northwest Home Lending')
    assert opener.endswith(": allowed -> blocked by no-crypto-talk")
    # words first: no regex appears before the appendix
    appendix = lines.index("Appendix: patterns (regular expressions) added and removed")
    assert not [line for line in lines[:appendix] if "\\b" in line]
    heading = next(line for line in lines if line.startswith("Examples whose outcome changes ("))
    assert heading.endswith("run under both sets)")


def test_diff_same_set_reports_no_change(tmp_path: Path) -> None:
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    result = _run(str(POLICIES), str(copy))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "  the two sides are the same policy set" in lines
    assert "No rule, template or policy file changed" in lines
    assert lines[lines.index(next(x for x in lines if x.startswith("Examples whose"))) + 1] == "  none"


def test_diff_formats_md_and_json(sides: tuple[Path, Path]) -> None:
    old, new = sides
    md = _run(str(old), str(new), "--format", "md")
    assert md.exit_code == 0, md.output
    assert "## Outbound rules (what a text to a borrower must never say)" in md.output.splitlines()
    assert "  - + `\\bteaser\\s+pricing\\b`" in md.output.splitlines()
    data = json.loads(_run(str(old), str(new), "--format", "json").output)
    assert (data["old"]["version"], data["new"]["version"]) == (policy_version(old), policy_version(new))
    assert data["old"]["approval"] == data["new"]["approval"] == "NOT APPROVED"
    changed = {(c["section"], c["id"]): c for c in data["changes"]}
    assert changed[("outbound rule", "no-rate-quotes")]["regexes_added"] == ["\\bteaser\\s+pricing\\b"]
    assert changed[("inbound rule", "handoff-rate-lock")]["status"] == "removed"
    teaser = next(o for o in data["outcomes"] if o["text"] == "Ask about our teaser pricing.")
    assert (teaser["kind"], teaser["old"], teaser["new"]) == ("outbound", "allowed", "blocked by no-rate-quotes")


def _change_settings(policies: Path) -> None:
    """Settings, header keys and examples of files that are not rules."""
    opt_out, quiet = policies / "sending" / "opt_out.yaml", policies / "sending" / "quiet_hours.yaml"
    _edit(opt_out, "scope: brokerage", "scope: broker")
    _edit(opt_out, "summary: >-\n  A borrower's STOP", "summary: >-\n  Any STOP")
    _edit(opt_out, "  - CTIA Messaging Principles and Best Practices (industry standard, opt-out keywords)\n",
          "  - CTIA Messaging Principles and Best Practices (2023 edition, opt-out keywords)\n")
    _edit(policies / "retention" / "retention.yaml", "keep_months: 25", "keep_months: 30")
    _edit(quiet, 'as amended 2021), 8 a.m. to 8 p.m.\n    window: {start: "08:00", end: "20:00"}',
          'as amended 2021), 8 a.m. to 8 p.m.\n    window: {start: "08:00", end: "21:00"}')
    _edit(quiet, "  - {where: NY,", '  - {where: FL, local: "2026-06-10T20:30", allowed: true}\n  - {where: NY,')
    _edit(quiet, "internal_notes: >-\n  Times are", "internal_notes: >-\n  Secret: times are")
    _edit(policies / "sending" / "caps.yaml", "    value: 4\n", "    value: 3\n")


def test_diff_policy_files_show_each_setting_old_to_new(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(POLICIES, old)
    shutil.copytree(POLICIES, new)
    _change_settings(new)
    result = _run(str(old), str(new))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = lines.index("  changed sending/opt_out.yaml: Who a borrower's STOP stops texting them")
    assert lines[start + 1:start + 5] == [
        '      summary words: "A borrower\'s" -> "Any"',
        "      summary: \"A borrower's STOP (or any other opt-out word) to one loan officer stops every text from "
        "every loan officer of the same brokerage, automated and a person's own alike; only the one confirmation "
        'of the STOP is sent. START or UNSTOP to any of them makes the number textable again for the whole '
        'brokerage." -> "Any STOP (or any other opt-out word) to one loan officer stops every text from every '
        "loan officer of the same brokerage, automated and a person's own alike; only the one confirmation of "
        'the STOP is sent. START or UNSTOP to any of them makes the number textable again for the whole '
        'brokerage."',
        '      cites changed: "CTIA Messaging Principles and Best Practices (industry standard, opt-out keywords)" '
        '-> "CTIA Messaging Principles and Best Practices (2023 edition, opt-out keywords)"',
        "      scope: brokerage -> broker",
    ]
    expected = [
        "  changed retention/retention.yaml: How long textback keeps each kind of record, and why",
        "      categories.communications.keep_months: 25 -> 30",
        "  changed sending/caps.yaml: How many automated texts a lead, a broker and the platform may send",
        "      limits.per_lead_per_day.value: 4 -> 3",
        "  changed sending/quiet_hours.yaml: No automated text outside the recipient's calling hours",
        "      internal_notes changed (engineering notes; the report never shows them)",
        "      states.FL.window: 08:00 to 20:00 -> 08:00 to 21:00",
        "      example added: where: FL, local: 2026-06-10T20:30, allowed: true",
    ]
    assert [line for line in lines if line in expected] == expected, result.output
    assert "Secret" not in result.output
    assert "settings changed" not in result.output
    md = _run(str(old), str(new), "--format", "md").output.splitlines()
    assert "  - states.FL.window: 08:00 to 20:00 -> 08:00 to 21:00" in md
    data = json.loads(_run(str(old), str(new), "--format", "json").output)
    changed = {c["id"]: c for c in data["changes"]}
    assert changed["retention/retention.yaml"]["details"] == ["categories.communications.keep_months: 25 -> 30"]
    assert changed["sending/quiet_hours.yaml"]["details"][-1] == (
        "example added: where: FL, local: 2026-06-10T20:30, allowed: true")


@pytest.mark.parametrize(("path", "old", "new", "lines"), [
    ("scope", "brokerage", "all", ["scope: brokerage -> all"]),
    ("opener_is_reply", True, False, ["opener_is_reply: true -> false"]),
    ("states", {"FL": {"window": {"start": "08:00", "end": "20:00"}}}, {},
     ["states.FL removed (was window: 08:00 to 20:00)"]),
    ("states", {}, {"WA": {"citation": "RCW 80.36.390", "window": {"start": "08:00", "end": "20:00"}}},
     ['states.WA added: citation: "RCW 80.36.390", window: 08:00 to 20:00']),
    ("categories", [{"id": "a", "keep": "forever", "records": ["optout"]}],
     [{"id": "a", "keep": "forever", "records": ["optout", "optoutevent"]}, {"id": "b", "keep_months": 2}],
     ["categories.a.records added: optoutevent", "categories.b added: keep_months: 2"]),
    ("cites", ["A law", "B law"], ["B law", "C law"], ['cites removed: "A law"', 'cites added: "C law"']),
    ("cites", ["A", "B"], ["B", "A"], ["cites: same entries, new order"]),
    ("window", None, {"start": "09:00", "end": "17:00"}, ["window: (none) -> 09:00 to 17:00"]),
])
def test_value_changes_reads_each_entry_in_plain_terms(path: str, old: object, new: object,
                                                       lines: list[str]) -> None:
    assert value_changes(path, old, new) == lines


def test_diff_spelling_examples_and_template_file_header(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(POLICIES, old)
    shutil.copytree(POLICIES, new)
    _edit(new / "spelling" / "optout.yaml", "    stoooop: stop\n", "    stoooop: stop\n    unsbscribe: unsubscribe\n")
    _edit(new / "spelling" / "optout.yaml", '    - "a b"\n', '    - "a b"\n    - "stepping out"\n')
    _edit(new / "templates" / "broker.yaml", "kind: templates\n", "kind: templates\ncites: [SAFE Act]\n")
    lines = _run(str(old), str(new)).output.splitlines()
    start = lines.index("  changed spelling/optout.yaml: Misspelled opt-out words are read as the word meant")
    assert lines[start + 1:start + 3] == ['      example added (must_not_match): "stepping out"',
                                          '      example added (pairs): "unsbscribe": "unsubscribe"']
    start = lines.index("  changed templates/broker.yaml: Alerts the broker's team receives")
    assert lines[start + 1] == '      cites added: "SAFE Act"'


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-C", str(repo), *args],
        capture_output=True, text=True, check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository whose policies/ is the shipped set at tag v1 and the edited set at HEAD."""
    root = tmp_path / "repo"
    shutil.copytree(POLICIES, root / "policies")
    _git(tmp_path, "init", "-q", str(root))
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "policies as shipped")
    _git(root, "tag", "v1")
    _change(root / "policies")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "policies edited")
    monkeypatch.chdir(root)
    return root


def test_diff_git_revisions_reads_each_revision_policies(repo: Path) -> None:
    first, head = _git(repo, "rev-parse", "--short=7", "v1"), _git(repo, "rev-parse", "--short=7", "HEAD")
    result = _run("HEAD~1", "HEAD")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"  OLD: git revision HEAD~1 (commit {first}): policy set {policy_version(POLICIES)}, NOT APPROVED" in lines
    new_version = policy_version(repo / "policies")
    assert f"  NEW: git revision HEAD (commit {head}): policy set {new_version}, NOT APPROVED" in lines
    assert "  removed handoff-rate-lock: Rate lock questions go to a person" in lines
    assert '  outbound "Ask about our teaser pricing." (no-rate-quotes must_match): allowed -> blocked by no-rate-quotes' in lines


def test_diff_git_tag_against_working_directory(repo: Path) -> None:
    result = _run("v1", "policies")
    assert result.exit_code == 0, result.output
    assert "  changed no-repayment-terms: No number of payments, repayment period or loan structure" in result.output.splitlines()
    assert "  NEW: directory policies: policy set" in result.output


@pytest.mark.parametrize("spec", ["no-such-dir-or-rev", "v9"])
def test_diff_refuses_side_neither_directory_nor_revision(repo: Path, spec: str) -> None:
    result = CliRunner().invoke(main, ["policy", "diff", spec, "HEAD"])
    assert result.exit_code == 2
    assert f"'{spec}' is neither a policies directory nor a git revision" in result.output


def test_diff_refuses_revision_without_policies(repo: Path) -> None:
    _git(repo, "rm", "-q", "-r", "policies")
    _git(repo, "commit", "-q", "-m", "no policies")
    result = CliRunner().invoke(main, ["policy", "diff", "HEAD~1", "HEAD"])
    assert result.exit_code == 2
    assert "git revision HEAD (" in result.output
    assert "has no policies/ folder" in result.output
