"""Which rules of a rule set, and which of their patterns, a reply can match: one lookup for the whole set.

Every pattern of every rule carries the literal piece sets its matches must contain (service.replies.prescreen:
`screens`, up to three; the rule's `screen` is a gate over all its patterns). `RuleIndex` files each pattern
under the pieces of its first screen (one `ScreenedList` of every rule's patterns), so for the pieces
`PieceFinder` found in a reply it yields, in rule order, the rules whose whole-message words equal the reply and
the patterns whose every screen the reply meets, without visiting the rules that have none. It only ever skips a pattern whose screen the reply does not
meet, which is what each rule checked on its own before (``tests/test_rule_index.py`` compares it with every
pattern of every rule run unscreened).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from service.replies.prescreen import ScreenedList
from service.replies.rule import CompiledRule

__all__ = ["RuleIndex"]

# One rule's candidates: None when its whole-message words equal the reply (it fires, patterns unread), else
# its patterns, in file order, whose every screen the reply meets (never empty).
Candidates = list[tuple[int, list[re.Pattern[str]] | None]]


class RuleIndex:
    """The patterns of `rules` filed under the pieces of their first screen; `candidates` reads it."""

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        whole: dict[str, list[int]] = {}
        items: list[tuple[tuple[int, re.Pattern[str]], tuple[frozenset[str], ...]]] = []
        for position, rule in enumerate(rules):
            for key in rule.whole:
                whole.setdefault(key, []).append(position)
            if rule.pattern is not None:  # in rule order, then file order: the order `viable` keeps
                items.extend(((position, pattern), pattern_screens)
                             for pattern, pattern_screens in zip(rule.ordered, rule.screens, strict=True))
        self._whole = {key: tuple(positions) for key, positions in whole.items()}
        self._patterns = ScreenedList(items)
        self._gates = tuple(rule.screen for rule in rules)

    def candidates(self, key: str, present: set[str]) -> Candidates:
        """In rule order, each rule that can fire on a reply with whole-message key `key` and screen pieces
        `present`, with its viable patterns (None: the whole message is one of its words)."""
        viable: dict[int, list[re.Pattern[str]] | None] = {}
        for position, pattern in self._patterns.viable(present):
            patterns = viable.get(position)
            if patterns is None:
                viable[position] = [pattern]
            else:
                patterns.append(pattern)
        gates = self._gates
        for position in list(viable):
            gate = gates[position]
            if gate is not None and gate.isdisjoint(present):
                del viable[position]
        for position in self._whole.get(key, ()):
            viable[position] = None
        return sorted(viable.items()) if len(viable) > 1 else list(viable.items())
