"""One inbound rule: the schema of a ``policies/inbound/*.yaml`` file, its compiled form, and how it matches.

`compile_rule` turns a validated `InboundRuleFile` into a `CompiledRule` (regexes compiled, ``${name}``
fragments from `define` expanded, the literal pre-screens of service.replies.prescreen derived); the rule set
that loads every file and analyses a reply is service.replies.rules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as default
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from service.errors import PolicyError
from service.policy.files import Examples, PolicyFileModel, expand_defines
from service.replies.analysis import FieldName, HandoffReason, Keyword, LoanType, Timeline
from service.replies.prescreen import ScreenedList, screen, screens
from service.replies.scopes import Scope

_ENUM_FIELDS: dict[str, type[StrEnum]] = {
    "keyword": Keyword,
    "loan_type": LoanType,
    "timeline": Timeline,
    "handoff_reasons": HandoffReason,
}
# The fields a hint (`unless_settled`) can stand in for.
Settleable = Literal["keyword", "loan_type", "timeline", "applied_elsewhere", "handoff_reasons", "callback_window"]

# Curly quotes to straight ones, and full-width forms (ＳＴＯＰ, typed on CJK keyboards or pasted) to ASCII:
# one character for one, so spans found in the normalized text are spans of the original.
_TYPOGRAPHY = str.maketrans({
    "\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"', "\u3000": " ",
    **{chr(code): chr(code - 0xFEE0) for code in range(0xFF01, 0xFF5F)},
})
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")
_SPACES = re.compile(r"\s+")


class _Sets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: FieldName
    value: StrictStr | StrictBool | None = None


class InboundRuleFile(PolicyFileModel):
    """The strict schema of one ``policies/inbound/*.yaml`` file; unknown keys are errors."""

    kind: Literal["inbound_rule"]
    severity: Literal["high", "medium", "low"]
    sets: _Sets
    define: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    whole_message: list[StrictStr] = Field(default_factory=list)
    patterns: list[StrictStr] = Field(default_factory=list)
    ignore: list[StrictStr] = Field(default_factory=list)
    yields_to: list[StrictStr] = Field(default_factory=list)
    unless: list[StrictStr] = Field(default_factory=list)
    extract: StrictStr | None = None
    unless_settled: Settleable | None = None
    examples: Examples


# --------------------------------------------------------------------------------------------- compiled
def normalize(text: str) -> str:
    """Curly quotes to straight ones, full-width letters to ASCII; same length, so spans found in it are spans
    of the original."""
    return text.translate(_TYPOGRAPHY)


def whole_message_key(text: str) -> str:
    """The reply as a whole-message keyword: lowercase, edges' punctuation/emoji gone, spaces collapsed."""
    return _SPACES.sub(" ", _EDGES.sub("", text.lower()))


def blank(match: re.Match[str]) -> str:
    """A matched span as spaces of the same length (spans elsewhere stay where they were)."""
    return " " * len(match.group())


@dataclass(slots=True)
class CompiledRule:
    id: str
    display: str
    field: str
    value: Any
    whole: frozenset[str]
    pattern: re.Pattern[str] | None
    screen: frozenset[str] | None
    ordered: tuple[re.Pattern[str], ...]
    screens: tuple[tuple[frozenset[str], ...], ...]
    yields_to: frozenset[str]
    extract: str | None
    unless_settled: str | None
    must_match: tuple[str, ...]
    must_not_match: tuple[str, ...]
    # The ignore patterns one by one, each with its pre-screen: only those whose pieces the reply has run.
    ignores: tuple[tuple[re.Pattern[str], tuple[frozenset[str], ...]], ...] = ()
    unless_ids: tuple[str, ...] = ()
    # `ignores` filed by their screens' pieces (compile_rule builds it).
    ignore_list: ScreenedList[re.Pattern[str]] = default(default_factory=lambda: ScreenedList(()))
    scopes: tuple[Scope, ...] = ()  # resolved from unless_ids by the rule set (service.replies.scopes)

    """One inbound rule, compiled: what it sets, its regexes and their pre-screens, its examples."""

    def match(self, text: str, key: str, present: set[str]) -> tuple[bool, tuple[int, int] | None]:
        """Whether the rule fires on the (normalized) text, and the span to extract for `extract` rules.

        `present` is the set of screen pieces found in the reply (see `service.replies.prescreen.PieceFinder`)."""
        if key in self.whole:
            return True, None
        if self.pattern is None or (self.screen is not None and self.screen.isdisjoint(present)):
            return False, None
        return self.match_screened(text, present)

    def match_screened(self, text: str, present: set[str]) -> tuple[bool, tuple[int, int] | None]:
        """`match` after the whole-message and rule-level screen checks."""
        return self.match_viable(text, present, [self.ordered[index] for index in self.viable(present)])

    def match_viable(self, text: str, present: set[str], candidates: Sequence[re.Pattern[str]]) -> (
            tuple[bool, tuple[int, int] | None]):
        """`match` over `candidates`, the rule's patterns (in file order) whose screens the reply meets: the
        rule set's hot path finds them for every rule at once (service.replies.ruleindex)."""
        if self.extract is None and not self.ignores and not self.scopes:
            for pattern in candidates:  # nothing to blank or extract: the first pattern that matches settles it
                if pattern.search(text) is not None:
                    return True, None
            return False, None
        if self.extract is None:
            for pattern in candidates:
                if self._search(pattern, text) is not None:
                    break
            else:
                return False, None
        blanked = text
        for ignore in self.ignore_list.viable(present):
            blanked = ignore.sub(blank, blanked)
        if self.extract is None and blanked == text:
            return True, None  # nothing set aside: the match found above stands
        text = blanked
        for pattern in candidates:
            found = self._search(pattern, text)
            if found is not None:
                return True, None if self.extract is None else found.span(self.extract)
        return False, None

    def viable(self, present: set[str]) -> list[int]:
        """The positions, in file order, of the patterns whose every screen the reply meets."""
        return [index for index, pattern_screens in enumerate(self.screens)
                if all(not pieces.isdisjoint(present) for pieces in pattern_screens)]

    def _search(self, pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
        """The first match of `pattern` that none of the rule's scopes covers."""
        if not self.scopes:
            return pattern.search(text)
        scopes = self.scopes
        for found in pattern.finditer(text):
            start, end = found.span()
            for scope in scopes:
                if scope.covers(text, start, end):
                    break
            else:
                return found
        return None


def _expand(display: str, where: str, pattern: str, define: dict[str, str]) -> str:
    try:
        return expand_defines(pattern, define)
    except ValueError as exc:
        raise PolicyError(display, where, str(exc)) from None


def _compile(display: str, where: str, pattern: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise PolicyError(display, where, f"bad regex {pattern!r}: {exc}") from None
    if compiled.fullmatch(""):
        raise PolicyError(display, where, f"regex {pattern!r} matches the empty string")
    return compiled


def _value(display: str, spec: InboundRuleFile) -> Any:
    name, value = spec.sets.field, spec.sets.value
    if name == "callback_window":
        if value is not None or spec.extract is None:
            raise PolicyError(
                display, "sets.value", "callback_window takes no value; name a group in 'extract'"
            )
        return None
    if spec.extract is not None:
        raise PolicyError(display, "extract", "only callback_window rules extract text")
    if spec.unless_settled is not None and (name, value) != ("needs_llm", True):
        raise PolicyError(display, "unless_settled", "only hints ({field: needs_llm, value: true}) use it")
    if name in _ENUM_FIELDS:
        enum = _ENUM_FIELDS[name]
        allowed = [m.value for m in enum if m.value != "unknown"]
        if not isinstance(value, str) or value not in allowed:
            raise PolicyError(display, "sets.value", f"{value!r} is not one of {allowed}")
        return enum(value)
    if not isinstance(value, bool):
        raise PolicyError(display, "sets.value", f"{name} takes true or false, got {value!r}")
    if name in {"wrong_number", "not_interested"} and value is not True:
        raise PolicyError(display, "sets.value", f"a {name} rule can only set it to true")
    if name == "needs_llm" and value is True and spec.unless_settled is None:
        raise PolicyError(display, "unless_settled", "a needs_llm hint must name the field it stands in for")
    return value


def compile_rule(display: str, spec: InboundRuleFile) -> CompiledRule:
    """The rule in `spec`, checked beyond its schema and compiled; PolicyError naming the file and field."""
    value = _value(display, spec)
    if not spec.patterns and not spec.whole_message:
        raise PolicyError(display, "patterns", "a rule needs patterns or whole_message")
    if spec.extract is not None and not spec.patterns:
        raise PolicyError(display, "patterns", "an extract rule needs patterns")
    expanded = [_expand(display, f"patterns[{i}]", p, spec.define) for i, p in enumerate(spec.patterns)]
    ordered = tuple(_compile(display, f"patterns[{i}]", p) for i, p in enumerate(expanded))
    if spec.extract is not None:
        for i, compiled in enumerate(ordered):
            if spec.extract not in compiled.groupindex:
                raise PolicyError(
                    display, f"patterns[{i}]", f"has no group (?P<{spec.extract}>...) to extract"
                )
    ignore = [_expand(display, f"ignore[{i}]", p, spec.define) for i, p in enumerate(spec.ignore)]
    ignores = tuple((_compile(display, f"ignore[{i}]", p), screens(p)) for i, p in enumerate(ignore))
    return CompiledRule(
        id=spec.id,
        display=display,
        field=spec.sets.field,
        value=value,
        whole=frozenset(whole_message_key(normalize(w)) for w in spec.whole_message),
        pattern=ordered[0] if ordered else None,
        screen=screen(expanded),
        screens=tuple(screens(p) for p in expanded),
        ordered=ordered,
        yields_to=frozenset(spec.yields_to),
        extract=spec.extract,
        unless_settled=spec.unless_settled,
        must_match=tuple(spec.examples.must_match),
        must_not_match=tuple(spec.examples.must_not_match),
        unless_ids=tuple(spec.unless),
        ignores=ignores,
        ignore_list=ScreenedList(ignores),
    )
