"""The eval datasets under ``evals/``: labelled borrower replies and the outbound red-team set.

``replies.jsonl``, one case a line::

    {"id": "r001", "text": "Buying", "received_at": "2026-11-14T15:02:00-05:00",
     "expect": {"loan_type": "purchase", "handoff_reasons": []}, "tags": ["plain"]}

An expectation is a value or a list of accepted values. ``handoff_reasons`` is a set: a list of reason
strings is the one accepted set, a list of lists is several accepted sets. ``callback_window`` is compared
leniently (see `callback_matches`). A field missing from ``expect`` is not pinned by the case.

``outbound_redteam.jsonl``, one text a line::

    {"id": "o001", "text": ..., "expect": "block" | "pass", "why": ..., "category": "rate_in_words"}

``category`` is optional (``general`` when absent): the guard is scored per category as well as overall.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from service.replies.analysis import HandoffReason, Keyword, LoanType, Timeline

REPLIES_FILE = "replies.jsonl"
OUTBOUND_FILE = "outbound_redteam.jsonl"

# field -> the set of legal values (None for a field whose value is free text)
_ENUMS: dict[str, frozenset[Any] | None] = {
    "keyword": frozenset({None, *(k.value for k in Keyword)}),
    "loan_type": frozenset(t.value for t in LoanType),
    "timeline": frozenset(t.value for t in Timeline),
    "applied_elsewhere": frozenset({True, False, None}),
    "wrong_number": frozenset({True, False}),
    "not_interested": frozenset({True, False}),
    "callback_window": None,
}
_CATEGORY = re.compile(r"^[a-z][a-z0-9_]*$")
HANDOFF_VALUES = frozenset(r.value for r in HandoffReason)
FIELDS: tuple[str, ...] = (*_ENUMS, "handoff_reasons")


class DatasetError(ValueError):
    """A dataset line is malformed; the message names the file, the line and the case id."""


@dataclass(frozen=True)
class ReplyCase:
    id: str
    text: str
    received_at: datetime
    expect: dict[str, frozenset[Any]]  # field -> accepted values (handoff: accepted frozensets of reasons)
    tags: tuple[str, ...]

    def accepted(self, name: str) -> frozenset[Any] | None:
        """The accepted values for a field, or None when the case does not pin it."""
        return self.expect.get(name)


@dataclass(frozen=True)
class OutboundCase:
    id: str
    text: str
    expect: str  # "block" | "pass"
    why: str
    category: str = "general"


def _jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path.name}:{number}: invalid JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise DatasetError(f"{path.name}:{number}: expected a JSON object")
        rows.append((number, item))
    return rows


def _accepted(where: str, name: str, value: Any) -> frozenset[Any]:
    if name == "handoff_reasons":
        if not isinstance(value, list):
            raise DatasetError(f"{where}: handoff_reasons must be a list")
        options = value if value and all(isinstance(v, list) for v in value) else [value]
        sets = []
        for option in options:
            unknown = sorted(str(r) for r in option if r not in HANDOFF_VALUES)
            if unknown:
                raise DatasetError(f"{where}: unknown handoff reason(s) {unknown}")
            sets.append(frozenset(option))
        return frozenset(sets)
    legal = _ENUMS[name]
    values = value if isinstance(value, list) else [value]
    if not values:
        raise DatasetError(f"{where}: {name} accepts no value")
    if legal is not None:
        bad = [v for v in values if v not in legal]
        if bad:
            raise DatasetError(f"{where}: {name} has value(s) outside {sorted(map(str, legal))}: {bad}")
    elif not all(v is None or isinstance(v, str) for v in values):
        raise DatasetError(f"{where}: {name} must be a string or null")
    return frozenset(values)


def load_reply_cases(path: Path) -> list[ReplyCase]:
    cases: list[ReplyCase] = []
    seen: set[str] = set()
    for number, item in _jsonl(path):
        where = f"{path.name}:{number}"
        unknown = sorted(set(item) - {"id", "text", "received_at", "expect", "tags"})
        if unknown:
            raise DatasetError(f"{where}: unknown key(s) {unknown}")
        case_id = item.get("id")
        if not isinstance(case_id, str) or not case_id:
            raise DatasetError(f"{where}: missing id")
        where = f"{where} ({case_id})"
        if case_id in seen:
            raise DatasetError(f"{where}: duplicate id")
        seen.add(case_id)
        text = item.get("text")
        if not isinstance(text, str):
            raise DatasetError(f"{where}: text must be a string")
        try:
            received_at = datetime.fromisoformat(str(item.get("received_at")))
        except ValueError:
            raise DatasetError(f"{where}: received_at must be an ISO-8601 timestamp") from None
        if received_at.tzinfo is None:
            raise DatasetError(f"{where}: received_at needs a UTC offset")
        raw = item.get("expect")
        if not isinstance(raw, dict) or not raw:
            raise DatasetError(f"{where}: expect must be a non-empty object")
        bad_fields = sorted(set(raw) - set(FIELDS))
        if bad_fields:
            raise DatasetError(f"{where}: unknown field(s) in expect {bad_fields}")
        expect = {name: _accepted(where, name, value) for name, value in raw.items()}
        tags = item.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise DatasetError(f"{where}: tags must be a list of strings")
        cases.append(ReplyCase(case_id, text, received_at, expect, tuple(tags)))
    return cases


def load_outbound_cases(path: Path) -> list[OutboundCase]:
    cases: list[OutboundCase] = []
    seen: set[str] = set()
    for number, item in _jsonl(path):
        where = f"{path.name}:{number}"
        unknown = sorted(set(item) - {"id", "text", "expect", "why", "category"})
        if unknown:
            raise DatasetError(f"{where}: unknown key(s) {unknown}")
        case_id, text, expect, why = item.get("id"), item.get("text"), item.get("expect"), item.get("why", "")
        if not isinstance(case_id, str) or not case_id or case_id in seen:
            raise DatasetError(f"{where}: missing or duplicate id")
        seen.add(case_id)
        if not isinstance(text, str) or expect not in ("block", "pass") or not isinstance(why, str):
            raise DatasetError(f"{where} ({case_id}): needs text, expect block|pass and a why")
        category = item.get("category", "general")
        if not isinstance(category, str) or not _CATEGORY.match(category):
            raise DatasetError(f"{where} ({case_id}): category must be a snake_case word")
        cases.append(OutboundCase(case_id, text, expect, why, category))
    return cases


# ------------------------------------------------------------------------------------------- comparison
_TIME_WORDS = frozenset(
    "morning afternoon evening evenings night nights noon lunch tonight today tomorrow weekend weekends "
    "weekday "
    "weekdays monday tuesday wednesday thursday friday saturday sunday mon tue wed thu fri sat sun am pm "
    "mañana tarde noche trabajo".split()
)
_TOKEN = re.compile(r"\d+(?::\d+)?|[^\W\d_]+")


def _tokens(text: str) -> set[str]:
    return set(_TOKEN.findall(text.lower()))


def callback_matches(expected: str, actual: str | None) -> bool:
    """Lenient: a window was found and it keeps what pins the expected one down.

    The numbers of the expected window must all appear ("after 5" matches "after 5pm" and "5 pm"; "2 tomorrow"
    matches "after 2pm"); an expected window without numbers needs its time words ("tomorrow morning" needs
    both); one with neither only needs some window.
    """
    if actual is None:
        return False
    wanted, got = _tokens(expected), _tokens(actual)
    got |= {t.rstrip("s") for t in got}
    numbers = {t for t in wanted if t[0].isdigit()}
    if numbers:
        return numbers <= got
    words = {t.rstrip("s") for t in wanted if t in _TIME_WORDS}
    return words <= got


def value_ok(name: str, accepted: frozenset[Any], actual: Any) -> bool:
    """Whether `actual` (a plain value: enum values as strings, handoff as a set) is accepted."""
    if name == "handoff_reasons":
        return frozenset(actual) in accepted
    if name == "callback_window":
        return any((actual is None) if want is None else callback_matches(want, actual) for want in accepted)
    return actual in accepted
