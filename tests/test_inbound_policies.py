"""The inbound policy files: every example they carry is a test case, and the schema is strict.

A failure reads like a compliance finding: `handoff-rate-lock::"can I lock my rate?"`.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.errors import PolicyError
from service.replies.rules import RuleSet, load_rules

POLICIES = Path(__file__).resolve().parents[1] / "policies"
_RULES = load_rules(POLICIES)
EXAMPLES = [
    pytest.param(rule_id, text, must_match, id=f'{rule_id}::"{text}"')
    for _display, rule_id, text, must_match in _RULES.examples()
]


@pytest.fixture
def policies_copy(tmp_path: Path) -> Path:
    """A private copy of the policies the rules read (inbound rules, spelling, scopes) to break on purpose."""
    for folder in ("inbound", "spelling", "scopes"):
        shutil.copytree(POLICIES / folder, tmp_path / "policies" / folder)
    return tmp_path / "policies"


@pytest.mark.parametrize(("rule_id", "text", "must_match"), EXAMPLES)
def test_policy_example_behaves(rule_id: str, text: str, must_match: bool) -> None:
    assert _RULES.example_fires(rule_id, text) is must_match


def test_example_findings_empty_for_repository_policies() -> None:
    assert _RULES.example_findings() == []


def test_example_findings_names_file_rule_and_text(policies_copy: Path) -> None:
    path = policies_copy / "inbound" / "optout-plain.yaml"
    path.write_text(
        path.read_text().replace('    - "we want to refinance"\n', '    - "please stop texting me"\n')
    )
    findings = load_rules(policies_copy).example_findings()
    assert findings == [
        "policies/inbound/optout-plain.yaml: rule 'optout-plain' must not match 'please stop texting me'"
        " but did"
    ]


def test_policy_examples_cover_every_rule() -> None:
    assert len(EXAMPLES) >= 200
    assert {rule_id for _, rule_id, _, _ in _RULES.examples()} == {p.stem for p in _RULES.files}


@pytest.mark.parametrize(
    ("file", "old", "new", "field"),
    [
        pytest.param(
            "handoff-rate-lock.yaml", "severity: high", "severity: high\nowner: me", "owner", id="unknown-key"
        ),
        pytest.param(
            "handoff-rate-lock.yaml",
            "'\\brate\\b.{0,25}\\block'",
            "'\\brate(\\b'",
            "patterns[1]",
            id="bad-regex",
        ),
        pytest.param(
            "handoff-rate-lock.yaml", "value: rate_lock", "value: rate_lok", "sets.value", id="bad-enum"
        ),
        pytest.param(
            "handoff-rate-lock.yaml", "severity: high", "severity: urgent", "severity", id="bad-severity"
        ),
        pytest.param(
            "handoff-rate-lock.yaml", "field: handoff_reasons", "field: mood", "sets.field", id="bad-field"
        ),
        pytest.param(
            "loan-purchase.yaml", "ignore:\n", "ignore:\n  - '[unclosed'\n", "ignore[0]", id="bad-ignore"
        ),
        pytest.param(
            "loan-purchase-emoji.yaml", "loan-refinance,", "loan-refinanse,", "yields_to", id="unknown-yield"
        ),
        pytest.param(
            "callback-window.yaml", "extract: window", "extract: when", "patterns[0]", id="missing-group"
        ),
        pytest.param(
            "applied-elsewhere-yes.yaml",
            "${brand}|${lender}|${other})'\n",
            "${brnd})'\n",
            "patterns[0]",
            id="undefined-ref",
        ),
        pytest.param(
            "wrong-number.yaml",
            "examples:\n  must_match:",
            "examples:\n  must_hit: [x]\n  must_match:",
            "examples.must_hit",
            id="bad-example-key",
        ),
        pytest.param("not-interested.yaml", "id: not-interested", "id: Not_Interested", "id", id="not-kebab"),
    ],
)
def test_load_rules_schema_error_names_file_and_field(
    policies_copy: Path, file: str, old: str, new: str, field: str
) -> None:
    path = policies_copy / "inbound" / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(PolicyError) as caught:
        load_rules(policies_copy)
    assert caught.value.path == f"policies/inbound/{file}"
    assert caught.value.field == field


def test_load_rules_duplicate_id_raises_policy_error(policies_copy: Path) -> None:
    source = policies_copy / "inbound" / "wrong-number.yaml"
    (policies_copy / "inbound" / "wrong-number-copy.yaml").write_text(source.read_text())
    with pytest.raises(PolicyError) as caught:
        load_rules(policies_copy)
    assert caught.value.field == "id"


def test_load_rules_empty_folder_raises_policy_error(tmp_path: Path) -> None:
    (tmp_path / "policies" / "inbound").mkdir(parents=True)
    with pytest.raises(PolicyError, match="no inbound_rule files"):
        load_rules(tmp_path / "policies")


def test_load_rules_version_changes_with_content(policies_copy: Path) -> None:
    before = load_rules(policies_copy).version
    path = policies_copy / "inbound" / "wrong-number.yaml"
    path.write_text(path.read_text().replace("closes politely", "closes politely at once"))
    after: RuleSet = load_rules(policies_copy)
    assert after.version != before
    assert before == _RULES.version


def test_load_rules_removed_opt_out_word_changes_analysis(policies_copy: Path) -> None:
    path = policies_copy / "inbound" / "keyword-carrier-stop.yaml"
    assert "\n  - quit\n" in path.read_text()
    path.write_text(path.read_text().replace("\n  - quit\n", "\n"))
    at = datetime(2026, 3, 2, 15, tzinfo=UTC)
    assert "keyword-carrier-stop" not in load_rules(policies_copy).analyze("QUIT", at).rules_fired
    assert "keyword-carrier-stop" in _RULES.analyze("QUIT", at).rules_fired
