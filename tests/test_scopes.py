"""Scopes (policies/scopes/): negation and the past, written once and named by the rules under `unless:`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.errors import PolicyError
from service.replies.rules import EXAMPLES_RECEIVED_AT, load_rules
from service.replies.scopes import _BREAK, clause_bounds, load_scopes
from tests.helpers import POLICIES


@pytest.mark.parametrize(
    ("text", "word", "clause"),
    [
        ("nothing locked yet. closing friday", "closing", "closing friday"),
        ("nothing locked yet but closing friday", "closing", "closing friday"),
        ("we haven't locked, is that bad? thanks", "locked", "we haven't locked, is that bad?"),
        ("locked", "locked", "locked"),
    ],
)
def test_clause_bounds_stop_at_sentence_breaks(text: str, word: str, clause: str) -> None:
    start = text.index(word)
    left, right = clause_bounds(text, start, start + len(word))
    assert text[left:right].strip() == clause


def _clause_bounds_by_scanning(text: str, start: int, end: int) -> tuple[int, int]:
    """The definition: the last break in text[:start], the first break searched from `end`."""
    left = 0
    for found in _BREAK.finditer(text, 0, start):
        left = found.end()
    after = _BREAK.search(text, end)
    right = after.start() if after is not None else len(text)
    return left, (after.end() if after is not None and after.group() == "?" else right)


@pytest.mark.parametrize("text", [
    "nothing locked yet. closing friday", "andy so soon, pero y... but\nso", "so\nand", "sandy and so", "but", "y",
    "pero? y", "a so b", "x.so", "we haven't locked, is that bad? and so y but", "Y AND So? PERO", "",
])
def test_clause_bounds_same_as_scanning_the_text_at_every_span(text: str) -> None:
    """Breaks are found once per text and read by position: the same bounds as scanning the cut text."""
    for start in range(len(text) + 1):
        for end in range(start, len(text) + 1):
            assert clause_bounds(text, start, end) == _clause_bounds_by_scanning(text, start, end), (start, end)


def _rules_with(tmp_path: Path, unless: str) -> Path:
    policies = tmp_path / "policies"
    (policies / "inbound").mkdir(parents=True)
    shutil.copytree(POLICIES / "scopes", policies / "scopes")
    (policies / "inbound" / "lock.yaml").write_text(
        "id: lock\nkind: inbound_rule\ntitle: lock rule\nrationale: a rule for the scope table\nseverity: high\n"
        f"sets: {{field: handoff_reasons, value: rate_lock}}\nunless: {unless}\npatterns: ['\\block\\w*']\n"
        "examples: {must_match: ['lock my rate']}\n")
    return policies


@pytest.mark.parametrize(
    ("text", "fires"),
    [
        ("lock my rate today", True),
        ("nothing is locked yet", False),
        ("we haven't locked anything", False),
        ("we haven't locked, is that bad?", True),  # a question keeps the match
        ("nothing locked yet but the lock on the new one expires friday", True),  # another match still counts
        ("the old lender never locked our rate back in 2021", False),
        ("our last lender locked us in 2019 and this time we want to lock early", True),
    ],
)
def test_analyze_rule_with_scopes_skips_covered_matches(tmp_path: Path, text: str, fires: bool) -> None:
    rules = load_rules(_rules_with(tmp_path, "[negated, past]"))
    analysis = rules.analyze(text, EXAMPLES_RECEIVED_AT)
    assert ("rate_lock" in [r.value for r in analysis.handoff_reasons]) is fires


def test_load_rules_rejects_unknown_scope(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="unknown scope"):
        load_rules(_rules_with(tmp_path, "[negatedd]"))


def test_load_scopes_rejects_scope_without_a_pattern(tmp_path: Path) -> None:
    policies = _rules_with(tmp_path, "[negated]")
    (policies / "scopes" / "empty.yaml").write_text(
        "id: empty\nkind: scope\ntitle: empty scope\nrationale: a scope with nothing\n"
        "examples: {must_match: ['[x]']}\n")
    with pytest.raises(PolicyError, match="needs before, after, clause"):
        load_scopes(policies)


def test_scope_examples_all_behave() -> None:
    for scope in load_scopes(POLICIES).values():
        assert scope.example_findings() == []
