"""Every outbound example is a test case through the real OutputGuard; the policy schema's errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from service.errors import PolicyError
from service.policy.files import load_outbound_rules, policy_version, read_policy_files
from service.policy.guard import OutputGuard
from service.policy.verdicts import scan

POLICIES = Path(__file__).resolve().parent.parent / "policies"
RULES = load_outbound_rules(POLICIES)
MIN_EXAMPLES = 60


def _cases(section: str) -> list[pytest.param]:
    return [
        pytest.param(loaded.rule.id, text, id=f'{loaded.rule.id}::"{text}"')
        for loaded in RULES
        for text in getattr(loaded.rule.examples, section)
    ]


@pytest.fixture(scope="session")
def guard() -> OutputGuard:
    """The real output guard over the repository's policies, built once."""
    return OutputGuard.load(POLICIES)


@pytest.mark.parametrize(("rule_id", "text"), _cases("must_match"))
def test_block_example_by_its_rule(guard: OutputGuard, rule_id: str, text: str) -> None:
    result = guard.check(text)
    assert not result.allowed
    assert rule_id in {v.rule for v in result.violations}, result.violations


@pytest.mark.parametrize(("rule_id", "text"), _cases("must_not_match"))
def test_pass_example_through_guard(guard: OutputGuard, rule_id: str, text: str) -> None:
    result = guard.check(text)
    assert result.allowed, f"{rule_id}: {result.violations}"
    assert result.violations == []


def test_count_outbound_examples_meets_floor() -> None:
    assert sum(len(r.rule.examples.must_match) for r in RULES) >= MIN_EXAMPLES
    assert sum(len(r.rule.examples.must_not_match) for r in RULES) >= MIN_EXAMPLES


@pytest.mark.parametrize(
    ("text", "rule_id"),
    [
        ("Rates from 5.9\uff05 this week", "no-rate-quotes"),  # fullwidth percent sign
        ("Rates from 5.9\u200b9% for you", "no-rate-quotes"),  # zero-width space inside the number
        ("Today's rate is 5 . 99 on the 30", "no-rate-quotes"),  # spaced decimal
        ("You'd be at 6\u00bd% fixed", "no-rate-quotes"),  # vulgar fraction
        ("Msg & data rates may apply. Rates from 5.9% today!", "no-rate-quotes"),  # allow span elsewhere
        ("Fixed at e1ght percent for you", "no-rate-quotes"),  # look-alike digit inside a number word
        ("Fixed at 8\ufe0f\u20e3 % for you", "no-rate-quotes"),  # keycap emoji digit
        ("Fixed at \u0668% for you", "no-rate-quotes"),  # Arabic-Indic digit
        ("Fixed at n i n e percent", "no-rate-quotes"),  # spaced-out letters
        ("Tw3lve percent down on condos", "no-down-payment-terms"),
        ("Zer0 points this month", "no-finance-charge-offers"),
        ("We're a H-U-D approved lender", "no-government-endorsement-claims"),
    ],
)
def test_block_obfuscated_text_by_rule(guard: OutputGuard, text: str, rule_id: str) -> None:
    result = guard.check(text)
    assert not result.allowed
    assert rule_id in {v.rule for v in result.violations}


# The black-box reviewer's phrasings (issue 9, section 2): approval promised in idioms, loan products named with
# a structure, sentences that deny a promise, clock times in a list. Their families are in the rule files'
# examples and evals/outbound_redteam.jsonl in other words.
@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        ("No way you get turned down with us.", False),
        ("You'll sail through underwriting, trust me.", False),
        ("We have an adjustable-rate mortgage fixed for the first seven years.", False),
        ("Graduated payment mortgage available for you", False),
        ("Nobody can guarantee approval, but I'll walk you through the process.", True),
        ("There's no guarantee of approval, but let's see what's possible.", True),
        ("Reply with the best time (e.g. 6.30 or 7.15).", True),
    ],
)
def test_check_reviewer_phrasing_verdict(guard: OutputGuard, text: str, allowed: bool) -> None:
    result = guard.check(text)
    assert result.allowed is allowed, result.violations


# --- schema errors name the file and the field ------------------------------------------------------------

GOOD_RULE = """\
id: sample-rule
kind: outbound_rule
title: A sample rule
rationale: 12 CFR 1026.24(c), for the test.
severity: block
patterns: ['\\d+%']
examples:
  must_match: ["5%"]
  must_not_match: ["hello"]
"""


def _write(tmp_path: Path, text: str, name: str = "outbound/sample.yaml") -> Path:
    policies = tmp_path / "policies"
    path = policies / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return policies


def _error(policies: Path) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_outbound_rules(policies)
    return info.value


def test_load_outbound_rule_valid_file(tmp_path: Path) -> None:
    rules = load_outbound_rules(_write(tmp_path, GOOD_RULE))
    assert [r.rule.id for r in rules] == ["sample-rule"]
    assert rules[0].file.display == "policies/outbound/sample.yaml"


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (lambda t: t + "colour: red\n", "colour", "unknown key"),
        (lambda t: t.replace("kind: outbound_rule", "kind: outbound_rules"), "kind", "unknown kind"),
        (lambda t: t.replace("['\\d+%']", "['(unclosed']"), "patterns", "bad regex"),
        (lambda t: t.replace("['\\d+%']", "['x*']"), "patterns", "empty string"),
        (lambda t: t.replace('  must_not_match: ["hello"]\n', ""), "examples.must_not_match", "missing"),
        (lambda t: t.replace("examples:\n  must_match", "exemples:\n  must_match"), "exemples", "unknown key"),
        (lambda t: t.replace("id: sample-rule", "id: Sample Rule"), "id", "kebab-case"),
        (lambda t: t.replace("severity: block", "severity: maybe"), "severity", ""),
        (lambda t: t.replace("title: A sample rule\n", ""), "title", "missing"),
        (lambda t: t.replace('["5%"]', "[5]"), "examples.must_match[0]", ""),
    ],
    ids=["unknown-key", "unknown-kind", "bad-regex", "empty-regex", "missing-examples", "misspelt-section",
         "bad-id", "bad-severity", "missing-title", "non-string-example"],
)
def test_reject_outbound_rule_schema_error(tmp_path: Path, edit, field: str, message: str) -> None:
    error = _error(_write(tmp_path, edit(GOOD_RULE)))
    assert error.path == "policies/outbound/sample.yaml"
    assert error.field is not None
    assert error.field.startswith(field)
    assert message in error.message
    assert re.match(r"policies/outbound/sample\.yaml:\d+: ", str(error)), str(error)
    assert error.line is not None


def test_reject_policy_file_duplicate_key(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, GOOD_RULE + "severity: warn\n"))
    assert error.path == "policies/outbound/sample.yaml"
    assert "duplicate key 'severity'" in error.message


DEFINE_RULE = """\
id: sample-rule
kind: outbound_rule
title: A sample rule
rationale: 12 CFR 1026.24(c), for the test.
severity: block
define:
  figure: '\\d+(?:\\.\\d+)?'
patterns: ['${figure}\\s*%']
allow: ['${figure}\\s*% of callers']
examples:
  must_match: ["5.5 %"]
  must_not_match: ["hello"]
"""


def test_load_outbound_rule_expands_define_fragments(tmp_path: Path) -> None:
    [loaded] = load_outbound_rules(_write(tmp_path, DEFINE_RULE))
    assert loaded.rule.patterns == ["${figure}\\s*%"]  # as written, for the reviewer
    assert [p.pattern for p in loaded.rule.compiled] == ["\\d+(?:\\.\\d+)?\\s*%"]
    assert scan("Rates from 5.5 % today", [loaded.rule])
    assert not scan("90% of callers get a call back", [loaded.rule])  # the allow span, expanded too


def test_reject_outbound_rule_unknown_define_fragment(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, DEFINE_RULE.replace("['${figure}\\s*%']", "['${figur}\\s*%']")))
    assert error.field == "patterns"
    assert "unknown ${figur}; define it under 'define'" in error.message


def test_reject_policy_file_duplicate_id(tmp_path: Path) -> None:
    policies = _write(tmp_path, GOOD_RULE)
    _write(tmp_path, GOOD_RULE, "outbound/copy.yaml")
    error = _error(policies)
    assert (error.path, error.field) == ("policies/outbound/sample.yaml", "id")
    assert "duplicate id (also in policies/outbound/copy.yaml)" in error.message


def test_reject_policy_file_wrong_folder(tmp_path: Path) -> None:
    policies = _write(tmp_path, GOOD_RULE, "inbound/sample.yaml")
    _files, errors = read_policy_files(policies)
    assert [(e.path, e.field) for e in errors] == [("policies/inbound/sample.yaml", "kind")]


def test_read_policy_files_every_kind_recognised() -> None:
    files, errors = read_policy_files(POLICIES)
    assert errors == []
    assert {f.header.kind for f in files} >= {"outbound_rule", "templates"}


def test_change_policy_version_when_any_file_changes(tmp_path: Path) -> None:
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    before = policy_version(copy)
    assert before == policy_version(POLICIES)
    assert len(before) == 12
    (copy / "README.md").write_text("edited\n", encoding="utf-8")
    assert policy_version(copy) == before  # the generated README is not a policy file
    rates = copy / "outbound" / "rates.yaml"
    rates.write_text(rates.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert policy_version(copy) != before
