"""Scopes: negation, the past and other senses, written once and named by the rules they apply to.

    policies/scopes/*.yaml   kind: scope

A rule lists scopes under ``unless:`` (``unless: [negated, past]``). A match of one of the rule's patterns does
not count when a listed scope covers it; another match of the same rule elsewhere in the reply still does
("nothing is locked yet, but the closing is friday" is a closing). A scope reads the *clause* around the match:
the text between the nearest sentence break (. ! ? ; a line break, "but", "and", "so") before the match and the next
one after it.

- ``before``: a regex that must match the end of the clause text before the match, within 80 characters
  ("nothing is [locked]", "there's no [deadline]", "haven't [locked]").
- ``after``: a regex that must match the start of the clause text after the match ("[closing] shift").
- ``clause``: a regex found anywhere in the clause ("our last [closing] back in 2017").
- ``phrase``: a regex whose match contains the matched words (searched up to 60 characters around them,
  across clause breaks): an idiom or another sense of the word
  ("[stop] and go traffic", "close [shave]", "[locked] and loaded", "[deadline] at work").
- ``unless``: a regex; the scope stands down when it is found in the clause ("if someone doesn't [call me]"
  is a condition, not a negation), or in the whole reply with ``unless_in: message`` (a reply that asks
  anything keeps its rate words).
- ``reach``: at most this many characters of the clause on each side of the match are read (a past year at
  the far end of a long sentence says nothing about the words here).
- ``unless_question``: the scope stands down when the clause asks a question (ends in "?"): "we haven't
  locked, is that bad?" still goes to a person.

Any of before / after / clause that is given and matches makes the scope apply. A file's examples mark the
match with brackets: ``must_match`` texts where the scope covers the bracketed words, ``must_not_match`` texts
where it does not; `textback policy check` runs them.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from service.errors import PolicyError
from service.policy.files import PolicyFile, PolicyFileModel, display_path, expand_defines, read_policy_files
from service.replies.prescreen import DIGIT, Searcher, screen

__all__ = ["Scope", "ScopeFile", "load_scopes"]

_BREAK = re.compile(r"[.!?;\n]|\b(?:but|and|so|pero|y)\b", re.IGNORECASE)
_BREAK_ENDING = re.compile(r"\b(?:but|and|so|pero|y)\Z", re.IGNORECASE)  # searched with endpos: ends there
_WORDS = re.compile(r"\w")
_PHRASE_REACH = 60  # a phrase may run past the clause ("stop and go"), this far on each side
_BEFORE_REACH = 80  # `before` reads at most this much of the clause before the match (a few words)
_MEMO_LIMIT = 4096  # texts remembered by a scope whose exceptions read the whole message
_MARKED = re.compile(r"\[([^\[\]]+)\]")


class ScopeExamples(BaseModel):
    model_config = ConfigDict(extra="forbid")

    must_match: list[StrictStr] = Field(min_length=1)
    must_not_match: list[StrictStr] = Field(default_factory=list)


class ScopeFile(PolicyFileModel):
    """The strict schema of one ``policies/scopes/*.yaml`` file; unknown keys are errors."""

    kind: Literal["scope"]
    define: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    before: StrictStr | None = None
    after: StrictStr | None = None
    clause: StrictStr | None = None
    phrase: StrictStr | None = None
    unless: StrictStr | None = None
    unless_in: Literal["clause", "message"] = "clause"
    reach: int | None = Field(default=None, ge=10, le=400)
    unless_question: StrictBool = False
    examples: ScopeExamples


def clause_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    """The clause around text[start:end]: from just after the last break before `start` to the next break
    at or after `end`.

    The breaks of a text are found once (every scope of every match asks about the same reply) and the
    answer is read from them; it is the same as scanning text[:start] and searching from `end` (checked
    against that in tests/test_scopes.py): a break word ending exactly at `start` counts, as it does when
    the text is cut there."""
    breaks = _breaks(text)
    at = bisect_right(breaks, (start, len(text) + 1))  # the breaks that begin at or before `start`
    left = 0
    for index in range(at - 1, -1, -1):
        if breaks[index][1] <= start:
            left = breaks[index][1]
            break
    if _BREAK_ENDING.search(text, max(0, start - 4), start) is not None:
        left = start
    right = len(text)
    for begin, finish, question in breaks[bisect_left(breaks, (end, -1)) :]:
        right = finish if question else begin
        break
    return left, right


# The last text's breaks, one entry: (text, its breaks as (start, end, is "?") in order). The entry is
# replaced whole, so threads never see half of one.
_breaks_memo: list[tuple[str, tuple[tuple[int, int, bool], ...]]] = [("", ())]


def _breaks(text: str) -> tuple[tuple[int, int, bool], ...]:
    memo = _breaks_memo[0]
    if memo[0] is text:
        return memo[1]
    found = tuple((m.start(), m.end(), m.group() == "?") for m in _BREAK.finditer(text))
    _breaks_memo[0] = (text, found)
    return found


@dataclass(frozen=True, slots=True)
class Scope:
    """One loaded scope; `covers` says whether it applies to a match."""

    id: str
    display: str
    path: Path
    before: re.Pattern[str] | None
    after: re.Pattern[str] | None
    clause: re.Pattern[str] | None
    phrase: re.Pattern[str] | None
    unless: re.Pattern[str] | None
    unless_message: bool
    reach: int | None
    unless_question: bool
    examples: ScopeExamples
    # The literal pieces each regex needs (service.replies.prescreen): a clause without any skips the regex.
    screens: dict[str, frozenset[str] | None] = field(default_factory=dict)
    # unless_in: message is the same for every match of one reply: remembered per reply text (a pure memo).
    _memo: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)
    # `screens` as one regex each (the pieces as literal alternatives): one search instead of a test per piece.
    _finders: dict[str, re.Pattern[str] | None] = field(init=False, compare=False, repr=False)
    # The regexes searched through `Searcher` (same matches, only where a match can begin).
    _searchers: dict[str, Searcher] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        finders = {name: _finder(pieces) for name, pieces in self.screens.items()}
        object.__setattr__(self, "_finders", finders)
        searchers = {name: Searcher(pattern) for name in ("before", "clause", "phrase", "unless")
                     if (pattern := getattr(self, name)) is not None}
        object.__setattr__(self, "_searchers", searchers)

    def covers(self, text: str, start: int, end: int) -> bool:
        """Whether this scope applies to the match text[start:end]."""
        words = _WORDS.search(text, start, end)  # a match may start on the punctuation before its words
        if words is not None:
            start = words.start()
        left, right = clause_bounds(text, start, end)
        if self.reach is not None:
            left, right = max(left, start - self.reach), min(right, end + self.reach)
        if not self._hit(text, start, end, left, right):
            return False
        if self.unless_question and text[left:right].rstrip().endswith("?"):
            return False
        if self.unless is None:
            return True
        if not self.unless_message:
            return self._searchers["unless"].search(text[left:right]) is None
        asked = self._memo.get(text)
        if asked is None:
            if len(self._memo) > _MEMO_LIMIT:
                self._memo.clear()
            asked = self._memo[text] = self._searchers["unless"].search(text) is not None
        return not asked

    def _hit(self, text: str, start: int, end: int, left: int, right: int) -> bool:
        """Whether before, after, phrase or clause finds its words around the match (before the exceptions)."""
        lower = text[max(0, min(left, start - _PHRASE_REACH)) : max(right, end + _PHRASE_REACH)].lower()
        if self.before is not None and self._may("before", lower) and (
                self._searchers["before"].search(text, max(left, start - _BEFORE_REACH), start) is not None):
            return True
        if self.after is not None and self._may("after", lower) and self.after.match(text, end, right) is not None:
            return True
        if self.phrase is not None and self._may("phrase", lower):
            for found in self._searchers["phrase"].finditer(text, max(0, start - _PHRASE_REACH), end + _PHRASE_REACH):
                if found.start() > start:
                    break  # in order of start: none later can cover the match
                if end <= found.end():
                    return True
        return self.clause is not None and self._may("clause", lower) and (
            self._searchers["clause"].search(text, left, right) is not None)

    def _may(self, name: str, lower: str) -> bool:
        """Whether the text around the match holds a piece the regex needs (True when it needs none known)."""
        finder = self._finders.get(name)
        return finder is None or finder.search(lower) is not None

    def example_findings(self) -> list[str]:
        findings: list[str] = []
        for expected, texts in ((True, self.examples.must_match), (False, self.examples.must_not_match)):
            for example in texts:
                marked = _MARKED.search(example)
                if marked is None:
                    findings.append(f"{self.display}: example {example!r} marks no words with [brackets]")
                    continue
                text = example[: marked.start()] + marked.group(1) + example[marked.end() :]
                start, end = marked.start(), marked.start() + len(marked.group(1))
                if self.covers(text, start, end) is not expected:
                    verb = "must cover" if expected else "must not cover"
                    findings.append(f"{self.display}: scope '{self.id}' {verb} the marked words in {example!r}")
        return findings


def _compile(display: str, where: str, pattern: str | None, define: dict[str, str], *, anchor: str) -> (
        re.Pattern[str] | None):
    if pattern is None:
        return None
    try:
        expanded = expand_defines(pattern, define)
    except ValueError as exc:
        raise PolicyError(display, where, str(exc)) from None
    try:
        compiled = re.compile(anchor.replace("P", expanded), re.IGNORECASE)
    except re.error as exc:
        raise PolicyError(display, where, f"bad regex {pattern!r}: {exc}") from None
    if compiled.fullmatch(""):
        raise PolicyError(display, where, f"regex {pattern!r} matches the empty string")
    return compiled


def load_scopes(policies_dir: Path, read: tuple[list[PolicyFile], list[PolicyError]] | None = None) -> (
        dict[str, Scope]):
    """Every ``policies_dir/scopes/*.yaml`` by id; `read`: the policy files already read by the caller."""
    files, errors = read if read is not None else read_policy_files(policies_dir)
    mine = [e for e in errors if Path(e.path).parent.name == "scopes"]
    if mine:
        raise mine[0]
    scopes: dict[str, Scope] = {}
    for policy in sorted((f for f in files if f.header.kind == "scope"), key=lambda f: f.path.name):
        spec = policy.validate(ScopeFile)
        display = display_path(policy.path, policies_dir)
        if spec.before is None and spec.after is None and spec.clause is None and spec.phrase is None:
            raise PolicyError(display, "before", "a scope needs before, after, clause or phrase")
        scopes[spec.id] = Scope(
            id=spec.id,
            display=display,
            path=policy.path,
            # `before` must reach the end of the text before the match; `after` starts where the match ends.
            before=_compile(display, "before", spec.before, spec.define, anchor="(?:P)\\s*$"),
            after=_compile(display, "after", spec.after, spec.define, anchor="\\s*(?:P)"),
            clause=_compile(display, "clause", spec.clause, spec.define, anchor="P"),
            phrase=_compile(display, "phrase", spec.phrase, spec.define, anchor="P"),
            unless=_compile(display, "unless", spec.unless, spec.define, anchor="P"),
            unless_message=spec.unless_in == "message",
            reach=spec.reach,
            unless_question=spec.unless_question,
            examples=spec.examples,
            screens={name: _screen(getattr(spec, name), spec.define) for name in ("before", "after", "phrase", "clause")},
        )
    return scopes


def _finder(pieces: frozenset[str] | None) -> re.Pattern[str] | None:
    """A regex that finds any of `pieces` as plain text (case-sensitive, like `in`); None for no screen."""
    if pieces is None:
        return None
    if not pieces:
        return re.compile("(?!)")  # no piece can be present: `any` over none is False
    return re.compile("|".join(re.escape(piece) for piece in sorted(pieces, key=len, reverse=True)))


def _screen(pattern: str | None, define: dict[str, str]) -> frozenset[str] | None:
    """The literal pieces one of a scope's regexes needs (None: no known piece, the regex always runs)."""
    if pattern is None:
        return None
    pieces = screen([expand_defines(pattern, define)])
    return None if pieces is None or DIGIT in pieces else pieces
