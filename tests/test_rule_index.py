"""The rule index, the screened lists and the Searcher only skip work: every answer is the one a plain run gives."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.replies.analysis import ReplyAnalysis
from service.replies.prescreen import ScreenedList, Searcher, screens
from service.replies.rules import RuleSet, load_rules
from tests.helpers import unscreened_rules

POLICIES = Path(__file__).resolve().parents[1] / "policies"
AT = datetime(2025, 11, 14, 15, 30, tzinfo=UTC)
_REPLIES = [json.loads(line)["text"] for line in (Path(__file__).resolve().parents[1] / "evals" / "replies.jsonl")
            .read_text().splitlines()]


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    """The shipped rule set."""
    return load_rules(POLICIES)


@pytest.fixture(scope="module")
def unscreened(rules: RuleSet) -> RuleSet:
    """The same rules with every pre-screen switched off: each pattern and each ignore runs on every reply."""
    return unscreened_rules(rules)


@pytest.mark.parametrize("chunk", range(8))
def test_analyze_index_matches_unscreened_run_on_eval_replies(rules: RuleSet, unscreened: RuleSet, chunk: int) -> None:
    for text in _REPLIES[chunk::8]:
        assert rules.analyze(text, AT) == unscreened.analyze(text, AT), text


def test_analyze_index_matches_unscreened_run_on_policy_examples(rules: RuleSet, unscreened: RuleSet) -> None:
    for _, _, text, _ in rules.examples():
        assert rules.analyze(text, AT) == unscreened.analyze(text, AT), text


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        (r"\bno\b|n't", "we haven't locked, no"),
        (r"(?<!\bca)n't\s+\w+", "can't stop, won't stop"),
        (r"\b(?:lock|closing)\s+\w+", "Closing date, LOCK it"),
        (r"stop\s*$", "stop stop"),
        (r"ab", "ababab"),
        (r"\bso\b|_x", "so_x so, _x x_x"),  # a word boundary next to "_" (a word character)
        (r"\bsk\w+", "s\u212ay sky"),  # Kelvin sign: non-ASCII text takes the regex's own way, same answer
        (r"\bno\b", "ñno no NO"),
        (r"\bſo\b|\bnot", "so not"),  # a non-ASCII beginning ("ſ" matches "s"): never the str.find way
    ],
)
def test_searcher_finds_same_matches_as_regex(pattern: str, text: str) -> None:
    compiled = re.compile(pattern, re.IGNORECASE)
    searcher = Searcher(compiled)
    assert searcher._starts is not None  # these all begin with literal text: the fast path runs
    for lo in range(len(text) + 1):
        for hi in range(lo, len(text) + 1):
            plain, fast = compiled.search(text, lo, hi), searcher.search(text, lo, hi)
            assert (plain and plain.span()) == (fast and fast.span())
            assert [m.span() for m in compiled.finditer(text, lo, hi)] == [
                m.span() for m in searcher.finditer(text, lo, hi)]


def test_searcher_finds_starts_by_str_find_only_for_ascii_beginnings() -> None:
    assert Searcher(re.compile(r"\bnot|n't", re.IGNORECASE))._positions("We haven't, NOT yet", 0, 19) == [7, 12]
    assert Searcher(re.compile(r"\bnot|n't", re.IGNORECASE))._positions("caf\u00e9 not", 0, 8) is None
    assert Searcher(re.compile(r"\bſo|\bnot", re.IGNORECASE))._positions("so not", 0, 6) is None


def test_from_rules_builds_same_model_as_model_construct(rules: RuleSet) -> None:
    """The rules' fast constructor gives what pydantic's model_construct gives: values, fields set, order."""
    for text in ("refi in 3 months, can I lock?", "STOP", "ok", "buying a house, haven't applied"):
        fast = rules.analyze(text, AT)
        values = {name: getattr(fast, name) for name in fast.model_fields_set}
        slow = ReplyAnalysis.model_construct(**values)
        assert fast == slow
        assert fast.model_fields_set == slow.model_fields_set
        assert list(fast.__dict__) == list(slow.__dict__)
        assert repr(fast) == repr(slow)
        assert fast.model_dump_json() == slow.model_dump_json()
        assert ReplyAnalysis.model_validate(fast.model_dump()) == fast


@pytest.mark.parametrize("pattern", [r"\w+ing", r"a?bc", r"(?:x|)yz", r"[ab]cd", r"s"])
def test_searcher_keeps_plain_search_without_literal_beginning(pattern: str) -> None:
    assert Searcher(re.compile(pattern, re.IGNORECASE))._starts is None


def test_screened_list_yields_items_whose_screens_all_meet_in_order() -> None:
    items = [(name, screens(pattern)) for name, pattern in
             [("a", r"\block\b.*\brate"), ("b", r"\brate"), ("c", r"\w+"), ("d", r"\bclose")]]
    listed = ScreenedList(items)
    assert listed.viable({"rate"}) == ["b", "c"]
    assert listed.viable({"rate", "lock"}) == ["a", "b", "c"]
    assert listed.viable(set()) == ["c"]
