"""Read a reply the way it was meant: spaced and stretched letters joined, misspelled safety words corrected.

    policies/spelling/*.yaml   kind: spelling

Borrowers type fast, on small keys, or talk to their phone: "S T O P", "stoppp", "clsoing", "rate lcok",
"unsubcribe", "contengency". Before any inbound rule runs, `Speller.correct` rewrites the reply into a
canonical view and the rules read that view, so every pattern in ``policies/inbound/`` is typo-tolerant for
the words listed here without each pattern spelling out its typos.

What it does, in order, deterministic and bounded:

1. Full-width and compatibility forms to plain letters (NFKC: "ＳＴＯＰ" is "STOP").
2. Letters spaced or dotted one by one are joined: "S T O P", "s.t.o.p", "s-t-o-p" (three letters or more).
3. A letter typed three or more times in a row is typed once: "stooop", "pleeease" (no English or Spanish
   word has a tripled letter).
4. Each word that is not itself in the file's `words` or `keep` lists is compared with the `words` starting
   with the same letter (or with its first two letters swapped): it becomes the listed word when
   * squeezing runs of a letter gives the same letters ("stopp", "loock", "unsubscribbe"); or
   * it is within the word's edit budget, counting a swap of two neighbouring letters as one edit
     (optimal string alignment): a word of up to 4 letters only takes a swap ("lcok", "sotp"); 5 to 7
     letters take one edit ("closng", "escorw"); 8 or more take two ("contengency", "unsubcsribe").
     `max_edits` sets one word's budget instead (0: only squeezed runs, never an edit). The nearest word wins; the file's order breaks ties.
   * `keep` lists real words that sit near a listed word and must stay as typed ("clothing", "massages",
     "testing", "dates").

A file's ``examples``: ``must_match`` texts in which some word is corrected, ``must_not_match`` texts left as
they are, and ``pairs`` (typo: word) corrected exactly so; `textback policy check` runs them.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from rapidfuzz.distance import OSA

from service.errors import PolicyError
from service.policy.files import PolicyFile, PolicyFileModel, display_path, read_policy_files

__all__ = ["Speller", "SpellingFile", "load_speller"]

_SPACED = re.compile(r"(?<![^\W\d_])(?:[^\W\d_][ .\-*_]{1,2}){2,}[^\W\d_](?![^\W\d_])")
_SEPARATORS = re.compile(r"[ .\-*_]")
_TRIPLED = re.compile(r"([^\W\d_])\1{2,}", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+")
_CACHE_LIMIT = 50_000
REAL_WORDS = Path(__file__).with_name("real_words.txt")
_UNSEEN = object()


class SpellingExamples(BaseModel):
    model_config = ConfigDict(extra="forbid")

    must_match: list[StrictStr] = Field(min_length=1)
    must_not_match: list[StrictStr] = Field(default_factory=list)
    pairs: dict[StrictStr, StrictStr] = Field(default_factory=dict)


class SpellingFile(PolicyFileModel):
    """The strict schema of one ``policies/spelling/*.yaml`` file; unknown keys are errors."""

    kind: Literal["spelling"]
    words: list[StrictStr] = Field(min_length=1)
    max_edits: dict[StrictStr, StrictInt] = Field(default_factory=dict)
    keep: list[StrictStr] = Field(default_factory=list)
    examples: SpellingExamples


def _squeeze(word: str) -> str:
    """Each run of one letter as one letter: "stoopp" -> "stop"."""
    out: list[str] = []
    for ch in word:
        if not out or out[-1] != ch:
            out.append(ch)
    return "".join(out)


def _budget(word: str) -> int:
    """The default edit budget of a listed word of 5 letters or more (shorter ones take a swap only)."""
    return 1 if len(word) <= 7 else 2


def _swapped(a: str, b: str) -> bool:
    """Whether `a` is `b` with two neighbouring letters swapped."""
    if len(a) != len(b) or a == b:
        return False
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]


@dataclass
class Speller:
    """The loaded vocabulary; `correct` is pure and thread-safe (its cache only memoises)."""

    words: tuple[str, ...] = ()
    keep: frozenset[str] = frozenset()
    budgets: dict[str, int] = field(default_factory=dict)
    examples: list[tuple[str, SpellingExamples]] = field(default_factory=list)
    version: str = "none"
    real_words: frozenset[str] = frozenset()
    _known: frozenset[str] = field(init=False)
    _squeezed: dict[str, str] = field(init=False)
    _by_initial: dict[str, tuple[str, ...]] = field(init=False)
    _cache: dict[str, str | None] = field(init=False, default_factory=dict)
    _fixes: dict[str, object] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._known = frozenset(self.words) | self.keep
        self._squeezed = {}
        for word in self.words:
            self._squeezed.setdefault(_squeeze(word), word)
        initials: dict[str, list[str]] = {}
        for word in self.words:
            initials.setdefault(word[0], []).append(word)
        self._by_initial = {k: tuple(v) for k, v in initials.items()}

    # ---- one word
    def word_for(self, token: str) -> str | None:
        """The listed word `token` (lowercase) stands for, or None when it stays as typed."""
        if token in self._cache:
            return self._cache[token]
        found = self._lookup(token)
        if len(self._cache) < _CACHE_LIMIT:
            self._cache[token] = found
        return found

    def _lookup(self, token: str) -> str | None:
        if len(token) < 3 or token in self._known:
            return None
        squeezed = self._squeezed.get(_squeeze(token))
        if squeezed is not None:
            return squeezed
        if len(token) < 4 or token in self.real_words:
            return None
        candidates = self._by_initial.get(token[0], ())
        if len(token) > 1 and token[1] != token[0]:
            candidates += tuple(w for w in self._by_initial.get(token[1], ()) if _swapped(token[:2], w[:2]))
        best: tuple[int, str] | None = None
        for word in candidates:
            budget = self.budgets.get(word)
            if budget is None and len(word) <= 4:
                if _swapped(token, word) and best is None:
                    best = (1, word)
                continue
            budget = _budget(word) if budget is None else budget
            if budget == 0 or abs(len(word) - len(token)) > budget:
                continue
            distance = OSA.distance(token, word, score_cutoff=budget)
            if distance <= budget and (best is None or distance < best[0]):
                best = (distance, word)
        return best[1] if best else None

    # ---- a reply
    def correct(self, text: str) -> str:
        """The canonical view of `text` (see the module docstring); the text itself when nothing changes."""
        if not text.isascii():
            text = unicodedata.normalize("NFKC", text)
        text = _SPACED.sub(_join, text)
        fixes = self._fixes
        changed = False
        for token in _WORD.findall(text):
            fixed = fixes.get(token, _UNSEEN)
            if fixed is _UNSEEN:
                fixed = self._fix(token)
                if len(fixes) < _CACHE_LIMIT:
                    fixes[token] = fixed
            changed = changed or fixed is not None
        if not changed:
            return text
        return _WORD.sub(self._replace, text)

    def _fix(self, token: str) -> str | None:
        """What one word of the reply (as typed) becomes, or None when it stays as typed."""
        lower = token.lower()
        if lower in self.keep:
            return None
        stretched = _TRIPLED.search(token) is not None
        if stretched:
            lower = _TRIPLED.sub(r"\1", lower)
        found = self.word_for(lower) if self.words else None
        if found is None and stretched:
            return _TRIPLED.sub(r"\1", token)
        return found

    def _replace(self, match: re.Match[str]) -> str:
        token = match.group()
        fixed = self._fixes.get(token, _UNSEEN)
        if fixed is _UNSEEN:
            fixed = self._fix(token)
        return token if fixed is None else str(fixed)

    # ---- the files' own examples
    def example_findings(self) -> list[str]:
        """One finding per example that misbehaves; empty when every example behaves."""
        findings: list[str] = []
        for display, examples in self.examples:
            for text in examples.must_match:
                if self.correct(text).lower() == text.lower():
                    findings.append(f"{display}: must correct a word in {text!r} but left it as typed")
            for text in examples.must_not_match:
                corrected = self.correct(text)
                if corrected.lower() != text.lower():
                    findings.append(f"{display}: must leave {text!r} as typed but read it as {corrected!r}")
            for typo, word in examples.pairs.items():
                got = self.correct(typo).lower()
                if got != word.lower():
                    findings.append(f"{display}: must read {typo!r} as {word!r} but read it as {got!r}")
        return findings


def _join(match: re.Match[str]) -> str:
    return _SEPARATORS.sub("", match.group())


def load_speller(policies_dir: Path, read: tuple[list[PolicyFile], list[PolicyError]] | None = None) -> Speller:
    """Every ``policies_dir/spelling/*.yaml`` merged into one Speller (none: nothing is corrected but spacing and
    stretched letters). A schema problem raises `PolicyError` naming the file and field. `read`: the policy
    files already read by the caller (`read_policy_files`), so they are parsed once."""
    files, errors = read if read is not None else read_policy_files(policies_dir)
    ours = sorted((f for f in files if f.header.kind == "spelling"), key=lambda f: f.path.name)
    mine = [e for e in errors if Path(e.path).parent.name == "spelling"]
    if mine:
        raise mine[0]
    words: list[str] = []
    keep: set[str] = set()
    budgets: dict[str, int] = {}
    examples: list[tuple[str, SpellingExamples]] = []
    digest = hashlib.sha256()
    for policy in ours:
        spec = policy.validate(SpellingFile)
        for word in spec.words:
            if word != word.lower() or not _WORD.fullmatch(word):
                raise PolicyError(policy.display, "words", f"{word!r} must be one lowercase word")
            if word not in words:
                words.append(word)
        unknown = sorted(set(spec.max_edits) - set(spec.words))
        if unknown:
            raise PolicyError(policy.display, "max_edits", f"names words not in 'words': {unknown}")
        for word, edits in spec.max_edits.items():
            if not 0 <= edits <= 3:
                raise PolicyError(policy.display, f"max_edits.{word}", "must be between 0 and 3")
        overlap = sorted((set(spec.keep) & set(spec.words)) | (set(spec.keep) & set(words)) | (keep & set(spec.words)))
        if overlap:
            raise PolicyError(policy.display, "keep", f"words both kept and corrected to: {overlap}")
        keep |= {w.lower() for w in spec.keep}
        budgets |= spec.max_edits
        examples.append((display_path(policy.path, policies_dir), spec.examples))
        digest.update(policy.path.name.encode() + b"\0" + policy.path.read_bytes() + b"\0")
    version = digest.hexdigest()[:12] if ours else "none"
    real = _real_words() - set(words) if words else frozenset()
    return Speller(words=tuple(words), keep=frozenset(keep), budgets=budgets, examples=examples, version=version,
                   real_words=frozenset(real))


@cache
def _real_words() -> frozenset[str]:
    """The most frequent English and Spanish words: never edited into a listed word. Read from the list
    service.replies.build_real_words wrote from wordfreq (loading wordfreq itself cost 61 MiB per process)."""
    lines = REAL_WORDS.read_text(encoding="utf-8").splitlines()
    return frozenset(lines[1:])  # the first line names the source
