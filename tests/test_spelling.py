"""The canonical view the inbound rules read: spacing, stretched letters and misspelled listed words."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.errors import PolicyError
from service.policy.check import run_check
from service.replies.rules import load_rules
from service.replies.spelling import Speller, load_speller
from tests.helpers import POLICIES


@pytest.fixture(scope="module")
def speller() -> Speller:
    return load_speller(POLICIES)


@pytest.mark.parametrize(
    ("typed", "read"),
    [
        ("S T O P", "STOP"),
        ("s.t.o.p", "stop"),
        ("s-t-o-p please", "stop please"),
        ("STOPPPP", "STOP"),
        ("stooooop texting", "stop texting"),
        ("ＳＴＯＰ", "STOP"),
        ("unsubcribe", "unsubscribe"),
        ("stpo", "stop"),
        ("rate lcok expires", "rate lock expires"),
        ("my lokc is up", "my lock is up"),
        ("whens the clsoing", "whens the closing"),
        ("closeing date", "closing date"),
        ("the contengency ends", "the contingency ends"),
        ("finacing deadine", "financing deadline"),
        ("need a mortage", "need a mortgage"),
        ("el cirre es el jueves", "el cierre es el jueves"),
    ],
)
def test_correct_reads_misspelled_listed_word(speller: Speller, typed: str, read: str) -> None:
    assert speller.correct(typed).lower() == read.lower()


@pytest.mark.parametrize(
    "text",
    [
        "new clothing store opened",  # a real word one letter from closing is kept
        "what dates work for you",
        "good luck with that",
        "I'll look into it",
        "looking to buy",  # not "locking"
        "reporting you",  # not "recording"
        "no me interesa",  # Spanish, not "interest"
        "the massages were great",
        "we're testing the waters",
        "VA IRRRL",  # an acronym with a tripled letter
        "a b",  # two spaced letters are not a word
        "call me at 5",
    ],
)
def test_correct_leaves_real_words_as_typed(speller: Speller, text: str) -> None:
    assert speller.correct(text) == text


def test_correct_without_vocabulary_still_joins_spacing_and_stretching() -> None:
    assert Speller().correct("S T O P pleeease") == "STOP please"


def test_analyze_reads_typo_opt_out_as_stop() -> None:
    """The rules read the corrected view: a misspelled carrier keyword is an opt-out."""
    rules = load_rules(POLICIES)
    assert rules.carrier_keyword("S T O P") is not None
    assert rules.carrier_keyword("STOPPP") is not None


def _policies_copy(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


def test_load_speller_rejects_word_both_kept_and_listed(tmp_path: Path) -> None:
    policies = _policies_copy(tmp_path)
    path = policies / "spelling" / "loans.yaml"
    path.write_text(path.read_text().replace("keep:\n", "keep:\n  - mortgage\n", 1))
    with pytest.raises(PolicyError, match="both kept and corrected"):
        load_speller(policies)


def test_load_speller_rejects_unknown_key(tmp_path: Path) -> None:
    policies = _policies_copy(tmp_path)
    path = policies / "spelling" / "loans.yaml"
    path.write_text(path.read_text() + "fuzz: 3\n")
    with pytest.raises(PolicyError, match="fuzz"):
        load_speller(policies)


def test_policy_check_names_spelling_example_that_misbehaves(tmp_path: Path) -> None:
    policies = _policies_copy(tmp_path)
    path = policies / "spelling" / "handoffs.yaml"
    path.write_text(path.read_text().replace("  must_not_match:\n", '  must_not_match:\n    - "clsoing soon"\n', 1))
    result = run_check(policies)
    assert any("clsoing soon" in finding and "handoffs.yaml" in finding for finding in result.findings)


def test_load_rules_version_changes_with_spelling(tmp_path: Path) -> None:
    policies = _policies_copy(tmp_path)
    before = load_rules(policies).version
    path = policies / "spelling" / "loans.yaml"
    path.write_text(path.read_text().replace("words:\n", "words:\n  - jumbo\n", 1))
    assert load_rules(policies).version != before
