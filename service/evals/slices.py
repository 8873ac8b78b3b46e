"""The eval slices: the tags of ``evals/replies.jsonl`` every reply metric is also computed on, one slice each.

A slice is a kind of reply the rules must hold up on by itself (``evals/thresholds.yaml`` may give it its own
floors). A case may carry several slices; its other tags (``optout``, ``lookalike:closing``...) are not slices.
This tuple is the only list of them: the scoring, the report and the thresholds read it from here.
"""

from __future__ import annotations

from service.evals.datasets import ReplyCase

SLICES: tuple[str, ...] = ("typo", "spanish", "voice", "negation", "idiom", "long", "injection", "date_edge", "plain")


def slices_of(case: ReplyCase) -> tuple[str, ...]:
    """The slices a case belongs to, in `SLICES` order."""
    return tuple(name for name in SLICES if name in case.tags)
