"""The regex pre-screen of the inbound rules: which literal pieces a reply must contain for a pattern to match.

Most rules cannot match most replies. Each pattern's parse tree tells which literal text every match must
contain ("refi" for ``\\brefi\\b``, one of {"1", DIGIT} for an hour); a rule is only run when the lowercased
reply contains one of its required pieces (`screen`, `screens`), found in one pass by `PieceFinder`. The
screen is derived from the regex itself, so it can only skip work, never change an answer: a pattern the
analysis cannot reason about has no screen, and the rule always runs.

Why this reads ``re._parser``: the standard library has no public API for a regex's parse tree. The public
alias ``sre_parse`` is the same module, deprecated since Python 3.11 (importing it warns), and a home-made
regex parser would have to agree with ``re`` on every construct to stay sound. So the parse tree is read
here, in this module only, and every read is guarded: if a future Python changes the tree, `screen` and
`screens` return "no screen" for the patterns they cannot read and the rules simply run unscreened
(``tests/test_reply_rules.py`` checks that the screen agrees with the full match).
"""

from __future__ import annotations

import re
import re._constants as _sre  # type: ignore[import-not-found]  # private, no stubs: see the module docstring
import re._parser as _sre_parse  # type: ignore[import-not-found]  # the regex parse tree, read only here
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["DIGIT", "PieceFinder", "ScreenedList", "Searcher", "screen", "screens"]

DIGIT = "\\d"


def _is_digit_class(items: list[tuple[Any, Any]]) -> bool:
    for op, arg in items:
        if op is _sre.RANGE and 48 <= arg[0] <= arg[1] <= 57:  # '0'..'9'
            continue
        if op is _sre.LITERAL and 48 <= arg <= 57:
            continue
        if op is _sre.CATEGORY and arg is _sre.CATEGORY_DIGIT:
            continue
        return False
    return True


def _selectivity(pieces: frozenset[str]) -> tuple[int, float]:
    lengths = [1 if p == DIGIT else len(p) for p in pieces]
    return min(lengths), sum(lengths) / len(lengths)


def _required(seq: Any) -> frozenset[str] | None:
    """Pieces of which every match of the sequence contains at least one, or None when there are none."""
    candidates = _all_required(seq)
    # The most selective: the one whose shortest piece is longest (a digit counts as one character).
    return max(candidates, key=_selectivity) if candidates else None


def _all_required(seq: Any) -> list[frozenset[str]]:
    """Every set of pieces a match must contain one of (a match contains one piece of each set)."""
    candidates: list[frozenset[str]] = []
    run: list[str] = []

    def close_run() -> None:
        if run:
            candidates.append(frozenset({"".join(run)}))
            run.clear()

    for op, arg in seq:
        if op is _sre.LITERAL:
            run.append(chr(arg).lower())
            continue
        close_run()
        sub: frozenset[str] | None = None
        if op is _sre.SUBPATTERN:
            sub = _required(arg[-1])
        elif op is _sre.ATOMIC_GROUP:
            sub = _required(arg)
        elif op is _sre.BRANCH:
            alternatives = [_required(alt) for alt in arg[1]]
            screened = [a for a in alternatives if a is not None]
            if len(screened) == len(alternatives):  # every branch has its pieces
                sub = frozenset().union(*screened)
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT) and arg[0] >= 1:
            sub = _required(arg[2])
        elif op is _sre.IN and _is_digit_class(arg):
            sub = frozenset({DIGIT})
        if sub:
            candidates.append(sub)
    close_run()
    return candidates


def screen(patterns: list[str]) -> frozenset[str] | None:
    """Pieces of which a reply must contain one for any of the patterns to match, or None when some pattern
    has no required piece (then the rule always runs)."""
    pieces: set[str] = set()
    for pattern in patterns:
        try:
            found = _required(_sre_parse.parse(pattern, re.IGNORECASE))
        except Exception:  # the screen is an optimisation; without it the rule just always runs
            return None
        if found is None:
            return None
        pieces |= found
    return frozenset(pieces)


def screens(pattern: str) -> tuple[frozenset[str], ...]:
    """Up to three piece sets the reply must each meet (one piece of each) for `pattern` to match."""
    try:
        found = _all_required(_sre_parse.parse(pattern, re.IGNORECASE))
    except Exception:  # as above: no screen, the pattern always runs
        return ()
    return tuple(sorted(set(found), key=_selectivity, reverse=True)[:3])


class ScreenedList(Generic[T]):
    """Items (patterns) with their screens, filed under the pieces of their first screen: `viable` gives, in
    order, the items whose every screen the reply's pieces meet without testing the others."""

    def __init__(self, items: Sequence[tuple[T, tuple[frozenset[str], ...]]]) -> None:
        by_piece: dict[str, list[int]] = {}
        always: list[int] = []
        for position, (_, item_screens) in enumerate(items):
            if not item_screens:
                always.append(position)
            for piece in item_screens[0] if item_screens else ():
                by_piece.setdefault(piece, []).append(position)
        self._items = tuple((item, tuple(item_screens[1:])) for item, item_screens in items)
        self._by_piece = {piece: tuple(positions) for piece, positions in by_piece.items()}
        self._pieces = frozenset(by_piece)
        self._always = tuple(always)

    def __len__(self) -> int:
        return len(self._items)

    def viable(self, present: set[str]) -> list[T]:
        """The items, in order, whose every screen holds a piece of `present`."""
        found = set(self._always)
        by_piece = self._by_piece
        for piece in self._pieces.intersection(present):
            found.update(by_piece[piece])
        viable = []
        items = self._items
        for position in sorted(found):
            item, rest = items[position]
            for pieces in rest:
                if pieces.isdisjoint(present):
                    break
            else:
                viable.append(item)
        return viable


class PieceFinder:
    """Finds, in one pass over the lowercased reply, every screen piece it contains.

    A lookahead alternation (longest pieces first) reports the longest piece starting at each position; the
    pieces that are prefixes of it start there too, so each hit adds its prefix closure. Digits are one
    search of their own.
    """

    def __init__(self, pieces: set[str]) -> None:
        words = sorted(pieces - {DIGIT}, key=len, reverse=True)
        self._finder = re.compile("(?=(" + _trie_regex(words) + "))") if words else None
        known = set(words)  # each word's prefix closure: its own prefixes that are pieces (linear, not n^2)
        self._closure = {w: frozenset(w[:end] for end in range(len(w) + 1) if w[:end] in known) for w in words}

    def __call__(self, lower: str) -> set[str]:
        present: set[str] = set()
        if self._finder is not None:
            closure = self._closure
            for hit in set(self._finder.findall(lower)):
                present |= closure[hit]
        if _DIGIT.search(lower) is not None:
            present.add(DIGIT)
        return present


_DIGIT = re.compile(r"\d")


def _trie_regex(words: list[str]) -> str:
    """One regex for a set of literal words, prefixes factored out ("ref(?:i|inanc)"), longest match first."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        parts = [re.escape(char) + emit(child) for char, child in sorted(node.items()) if char]
        if not parts:
            return ""
        inner = parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"
        return f"(?:{inner})?" if "" in node else inner

    return emit(root)


# --------------------------------------------------------------------------------------------- fast search
def _heads(seq: Any) -> list[tuple[bool, str]] | None:
    """Every way a match of the parsed sequence can begin, as (a word boundary is required there, the literal
    text that follows): None when some way begins with anything but literal text (a class, a repeat...).
    Zero-width assertions other than \\b are left out, which only lets more positions through."""
    boundary = False
    prefix: list[str] = []
    for op, arg in seq:
        if op is _sre.LITERAL:
            prefix.append(chr(arg))
            continue
        if prefix:
            break
        if op is _sre.AT:
            boundary = boundary or arg is _sre.AT_BOUNDARY
            continue
        if op in (_sre.ASSERT, _sre.ASSERT_NOT):
            continue
        if op is _sre.SUBPATTERN and not arg[1] and not arg[2]:  # a group without local flags
            inner = _heads(arg[-1])
        elif op is _sre.BRANCH:
            inner = []
            for alternative in arg[1]:
                heads = _heads(alternative)
                if heads is None:
                    return None
                inner.extend(heads)
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT) and arg[0] >= 1:
            inner = _heads(arg[2])
        else:
            return None
        if inner is None:
            return None
        return [(boundary or inner_boundary, text) for inner_boundary, text in inner]
    return [(boundary, "".join(prefix))] if prefix else None


class Searcher:
    """`search` and `finditer` of one compiled regex, with the same results, that only try the positions where
    a match can begin: when every way the regex can begin is literal text of 2 characters or more (optionally
    after \\b), a lookahead over those beginnings finds the positions in one pass and the regex is matched
    there alone. Regexes that try many alternatives at every position (the scopes' negations) then cost a
    fraction; any other regex is searched as it is."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self._starts: re.Pattern[str] | None = None
        if pattern.flags != re.IGNORECASE | re.UNICODE:
            return
        try:
            heads = _heads(_sre_parse.parse(pattern.pattern, re.IGNORECASE))
        except Exception:  # an optimisation only: without it, the plain search
            return
        if not heads or any(len(text) < 2 for _, text in heads):
            return
        alternatives = sorted({("\\b" if boundary else "") + re.escape(text) for boundary, text in heads})
        self._starts = re.compile("(?=" + "|".join(alternatives) + ")", re.IGNORECASE)
        # For ASCII text, the same positions by str.find over the lowercased text: a lookahead alternation tries
        # every alternative at every position (~30 µs over 70 characters for the negations), str.find does
        # not. Only when every beginning is ASCII: under IGNORECASE "ſ" matches "s" and "K" (Kelvin) "k".
        if all(text.isascii() for _, text in heads):
            self._ascii_heads = tuple(sorted({(boundary, text.lower()) for boundary, text in heads}))

    _ascii_heads: tuple[tuple[bool, str], ...] = ()

    def _positions(self, text: str, pos: int, end: int) -> list[int] | None:
        """Where a match can begin in text[pos:end], in order; None when the regex must find them."""
        if not self._ascii_heads or not text.isascii():
            return None
        lower = text.lower()
        found = set()
        for boundary, head in self._ascii_heads:
            at = lower.find(head, pos, end)
            while at != -1:
                if not boundary or (at > 0 and _word(lower[at - 1])) != _word(lower[at]):
                    found.add(at)
                at = lower.find(head, at + 1, end)
        return sorted(found)

    def _starts_in(self, starts: re.Pattern[str], text: str, pos: int, end: int) -> Iterator[int]:
        positions = self._positions(text, pos, end)
        if positions is not None:
            return iter(positions)
        return (start.start() for start in starts.finditer(text, pos, end))

    def search(self, text: str, pos: int = 0, endpos: int | None = None) -> re.Match[str] | None:
        end = len(text) if endpos is None else endpos
        if self._starts is None:
            return self.pattern.search(text, pos, end)
        match = self.pattern.match
        for start in self._starts_in(self._starts, text, pos, end):
            found = match(text, start, end)
            if found is not None:
                return found
        return None

    def finditer(self, text: str, pos: int = 0, endpos: int | None = None) -> Iterator[re.Match[str]]:
        end = len(text) if endpos is None else endpos
        if self._starts is None:
            yield from self.pattern.finditer(text, pos, end)
            return
        match = self.pattern.match
        for start in self._starts_in(self._starts, text, pos, end):
            if start < pos:
                continue  # inside the previous match
            found = match(text, start, end)
            if found is not None:
                yield found
                pos = found.end()  # never empty: every match begins with literal text


def _word(char: str) -> bool:
    """Whether an ASCII character is a regex word character (\\w)."""
    return char.isalnum() or char == "_"
