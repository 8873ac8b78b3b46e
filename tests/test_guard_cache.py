"""The output guard remembers its verdict for a text: by policy version, template, exact text and required
values. New bytes still go through guardrails, a blocked text stays blocked, and a guard error is never kept."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from service.policy.guard import OutputGuard
from service.policy.verdicts import Violation

REQUIRED = {"brokerage": "Harbor Home Loans", "nmls_id": "1234567"}
OPENER = "Hi, this is Dana with Harbor Home Loans (NMLS #1234567). Sorry I missed your call! Reply STOP to opt out."
BLOCKED = OPENER.replace("Sorry I missed your call!", "You are guaranteed approval at 2.9% APR!")


class CountingGuard:
    """The real guardrails Guard, counting how often it validates."""

    def __init__(self, guard: Any) -> None:
        self.guard = guard
        self.calls = 0

    def validate(self, text: str, **kwargs: Any) -> Any:
        self.calls += 1
        return self.guard.validate(text, **kwargs)


class FailingGuard:
    def __init__(self) -> None:
        self.calls = 0

    def validate(self, text: str, **_kwargs: Any) -> Any:
        self.calls += 1
        raise RuntimeError("boom")


@pytest.fixture
def counted(output_guard: OutputGuard) -> tuple[OutputGuard, CountingGuard]:
    """A fresh OutputGuard (an empty cache) over the session's real guardrails Guard."""
    inner = CountingGuard(output_guard._guard)
    return OutputGuard(inner, output_guard.rules, output_guard.policy_version), inner


def test_check_same_opener_twice_validates_once(counted) -> None:
    guard, inner = counted
    first = guard.check(OPENER, required=REQUIRED, template="opener")
    second = guard.check(OPENER, required=REQUIRED, template="opener")
    assert first.allowed
    assert second == first
    assert inner.calls == 1


@pytest.mark.parametrize(("changed", "kwargs"), [
    ("one byte of the text", {"text": OPENER[:-1] + "!", "required": REQUIRED, "template": "opener"}),
    ("a trailing space", {"text": OPENER + " ", "required": REQUIRED, "template": "opener"}),
    ("the template", {"text": OPENER, "required": REQUIRED, "template": "question"}),
    ("a required value", {"text": OPENER, "required": {**REQUIRED, "nmls_id": "7654321"}, "template": "opener"}),
])
def test_check_text_afresh_when_anything_changed(counted, changed, kwargs) -> None:
    guard, inner = counted
    guard.check(OPENER, required=REQUIRED, template="opener")
    guard.check(kwargs["text"], required=kwargs["required"], template=kwargs["template"])
    assert inner.calls == 2, changed


def test_check_blocked_text_stays_blocked(counted) -> None:
    guard, inner = counted
    first = guard.check(BLOCKED, required=REQUIRED, template="opener")
    second = guard.check(BLOCKED, required=REQUIRED, template="opener")
    assert not first.allowed
    assert not second.allowed
    assert second.violations == first.violations
    assert inner.calls == 1
    assert guard.check(OPENER, required=REQUIRED, template="opener").allowed  # its neighbour is judged apart


def test_check_text_afresh_under_another_policy_version(counted) -> None:
    guard, inner = counted
    guard.check(OPENER, required=REQUIRED, template="opener")
    guard.policy_version = "another-version"
    result = guard.check(OPENER, required=REQUIRED, template="opener")
    assert result.policy_version == "another-version"
    assert inner.calls == 2


def test_check_text_never_remembers_guard_error(output_guard: OutputGuard) -> None:
    inner = FailingGuard()
    guard = OutputGuard(inner, output_guard.rules, output_guard.policy_version)
    for _ in range(2):
        assert guard.check(OPENER, required=REQUIRED).violations == [Violation("guard-error", "RuntimeError")]
    assert inner.calls == 2
    assert len(guard.verdicts) == 0


def test_check_text_hands_out_copies(counted) -> None:
    guard, _inner = counted
    mine = guard.check(BLOCKED, required=REQUIRED, template="opener")
    mine.violations.clear()
    mine.warnings.append(Violation("mine", "x"))
    again = guard.check(BLOCKED, required=REQUIRED, template="opener")
    assert again.violations
    assert Violation("mine", "x") not in again.warnings


def test_check_text_cache_is_bounded(output_guard: OutputGuard) -> None:
    inner = CountingGuard(output_guard._guard)
    guard = OutputGuard(inner, output_guard.rules, output_guard.policy_version, cache_size=2)
    for text in (OPENER, OPENER + " a", OPENER + " b"):
        guard.check(text, required=REQUIRED)
    assert len(guard.verdicts) == 2
    guard.check(OPENER, required=REQUIRED)  # the least recently used went out
    assert inner.calls == 4


def test_check_text_from_many_threads_once(counted) -> None:
    guard, inner = counted
    guard.check(OPENER, required=REQUIRED, template="opener")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _i: guard.check(OPENER, required=REQUIRED, template="opener"), range(64)))
    assert all(r.allowed for r in results)
    assert inner.calls == 1
