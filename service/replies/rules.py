"""The deterministic rules layer: one borrower SMS reply in, a `ReplyAnalysis` out, no network, no LLM.

Rules live in reviewable files under ``policies/inbound/`` (one rule a file, kind ``inbound_rule``); the
calendar arithmetic for timelines lives in `service.replies.timeline`. Everything is compiled once by
`load_rules`; `RuleSet.analyze` is pure and fast (see ``benchmarks/bench_rules.py``).

How a rule matches (all regexes are case-insensitive, curly quotes are read as straight ones):

- ``whole_message``: the entire reply, lowercased, with surrounding spaces, punctuation and emoji removed and
  inner spaces collapsed, equals one of these words ("Stop!!" → ``stop``; "weekend" is not "end").
- ``patterns``: any regex matches anywhere in the reply.
- ``ignore``: look-alike spans ("stop by the office") are blanked out and ``patterns`` run again, so a
  real match elsewhere in the same reply still counts (a match must exist before and after the blanking).
- ``yields_to``: the rule stands down when any of these rule ids fired (e.g. "just looking" yields to an
  explicit date).
- ``extract``: for ``callback_window``, the named group whose text becomes the value; patterns are tried in
  file order and the first match wins.
- ``unless_settled`` (only for ``sets: {field: needs_llm, value: true}``): the rule is a *hint* that asks for
  the LLM when its words appear but the named field is still unsettled ("FHA loan" with no loan type).
- ``define``: named sub-patterns, written ``${name}`` inside patterns, so a long regex stays readable.

A rule that fires is final for its field. Multi-valued and boolean fields take the union of what fired.
Single-valued fields (``loan_type``, ``timeline``, ``applied_elsewhere``) take the value when every rule
that fired agrees; when two rules disagree the field stays unknown and ``needs_llm`` is set. ``keyword``
is ordered: stop beats start beats help, so an opt-out is never lost to a conflict.
"""

from __future__ import annotations

import hashlib
import re
import re._constants as _sre  # the regex parse tree, read only to pre-screen rules (see _required)
import re._parser as _sre_parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from service.errors import PolicyError
from service.policy.files import display_path, read_policy_files
from service.replies import timeline as _timeline
from service.replies.analysis import HandoffReason, Keyword, LoanType, ReplyAnalysis, Source, Timeline

__all__ = ["RuleSet", "carrier_keyword", "load_rules"]

DEFAULT_POLICIES_DIR = Path(__file__).resolve().parents[2] / "policies"
# The date the examples in the policy files are checked against (any date works: they pin no timeline).
EXAMPLES_RECEIVED_AT = datetime(2025, 6, 16, 15, 0, tzinfo=UTC)

FieldName = Literal[
    "keyword",
    "loan_type",
    "timeline",
    "applied_elsewhere",
    "wrong_number",
    "not_interested",
    "handoff_reasons",
    "callback_window",
    "needs_llm",
]
_ENUM_FIELDS: dict[str, type] = {
    "keyword": Keyword,
    "loan_type": LoanType,
    "timeline": Timeline,
    "handoff_reasons": HandoffReason,
}
_SETTLEABLE = ("keyword", "loan_type", "timeline", "applied_elsewhere", "handoff_reasons", "callback_window")
_KEYWORD_ORDER = (Keyword.STOP, Keyword.START, Keyword.HELP)
_HANDOFF_ORDER = tuple(HandoffReason)

# Curly quotes to straight ones, and full-width forms (ＳＴＯＰ, typed on CJK keyboards or pasted) to ASCII:
# one character for one, so spans found in the normalized text are spans of the original.
_TYPOGRAPHY = str.maketrans({
    "\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"', "\u3000": " ",
    **{chr(code): chr(code - 0xFEE0) for code in range(0xFF01, 0xFF5F)},
})
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")
_SPACES = re.compile(r"\s+")
_DEFINE_REF = re.compile(r"\$\{([a-z_][a-z0-9_]*)\}")


# --------------------------------------------------------------------------------------------- pre-screen
# Most rules cannot match most replies. Each pattern's parse tree tells which literal text every match must
# contain ("refi" for '\\brefi\\b', one of {"1", DIGIT} for an hour); a rule is only run when the lowercased
# reply contains one of its required pieces. The screen is derived from the regex itself, so it can only
# skip work, never change an answer: a pattern the analysis cannot reason about has no screen.
DIGIT = "\\d"


def _is_digit_class(items: list[tuple[Any, Any]]) -> bool:
    for op, arg in items:
        if op is _sre.RANGE and 48 <= arg[0] <= arg[1] <= 57:  # noqa: PLR2004 - '0'..'9'
            continue
        if op is _sre.LITERAL and 48 <= arg <= 57:  # noqa: PLR2004
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
            if all(a is not None for a in alternatives):
                sub = frozenset().union(*alternatives)  # type: ignore[arg-type]
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT) and arg[0] >= 1:
            sub = _required(arg[2])
        elif op is _sre.IN and _is_digit_class(arg):
            sub = frozenset({DIGIT})
        if sub:
            candidates.append(sub)
    close_run()
    return candidates


def _screen(patterns: list[str]) -> frozenset[str] | None:
    """Pieces of which a reply must contain one for any of the patterns to match, or None when some pattern
    has no required piece (then the rule always runs)."""
    pieces: set[str] = set()
    for pattern in patterns:
        try:
            found = _required(_sre_parse.parse(pattern, re.IGNORECASE))
        except Exception:  # noqa: BLE001 - the screen is an optimisation; without it the rule just always runs
            return None
        if found is None:
            return None
        pieces |= found
    return frozenset(pieces)


def _screens(pattern: str) -> tuple[frozenset[str], ...]:
    """Up to three piece sets the reply must each meet (one piece of each) for `pattern` to match."""
    try:
        found = _all_required(_sre_parse.parse(pattern, re.IGNORECASE))
    except Exception:  # noqa: BLE001 - as above: no screen, the pattern always runs
        return ()
    return tuple(sorted(set(found), key=_selectivity, reverse=True)[:3])


class _PieceFinder:
    """Finds, in one pass over the lowercased reply, every screen piece it contains.

    A lookahead alternation (longest pieces first) reports the longest piece starting at each position; the
    pieces that are prefixes of it start there too, so each hit adds its prefix closure. Digits are one
    search of their own.
    """

    def __init__(self, pieces: set[str]) -> None:
        words = sorted(pieces - {DIGIT}, key=len, reverse=True)
        self._finder = re.compile("(?=(" + _trie_regex(words) + "))") if words else None
        self._closure = {w: frozenset(q for q in words if w.startswith(q)) for w in words}

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


# --------------------------------------------------------------------------------------------- schema
class _Sets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: FieldName
    value: StrictStr | StrictBool | None = None


class _Examples(BaseModel):
    model_config = ConfigDict(extra="forbid")

    must_match: list[StrictStr] = Field(min_length=1)
    must_not_match: list[StrictStr] = Field(default_factory=list)


class InboundRuleFile(BaseModel):
    """The strict schema of one ``policies/inbound/*.yaml`` file; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    id: StrictStr
    kind: Literal["inbound_rule"]
    title: StrictStr = Field(min_length=3)
    rationale: StrictStr = Field(min_length=10)
    severity: Literal["high", "medium", "low"]
    sets: _Sets
    define: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    whole_message: list[StrictStr] = Field(default_factory=list)
    patterns: list[StrictStr] = Field(default_factory=list)
    ignore: list[StrictStr] = Field(default_factory=list)
    yields_to: list[StrictStr] = Field(default_factory=list)
    extract: StrictStr | None = None
    unless_settled: Literal[_SETTLEABLE] | None = None  # type: ignore[valid-type]
    examples: _Examples


# --------------------------------------------------------------------------------------------- compiled
def normalize(text: str) -> str:
    """Curly quotes to straight ones, full-width letters to ASCII; same length, so spans found in it are spans
    of the original."""
    return text.translate(_TYPOGRAPHY)


def whole_message_key(text: str) -> str:
    """The reply as a whole-message keyword: lowercase, edges' punctuation/emoji gone, spaces collapsed."""
    return _SPACES.sub(" ", _EDGES.sub("", text.lower()))


def _blank(match: re.Match[str]) -> str:
    return " " * len(match.group())


@dataclass(slots=True)
class _Rule:
    id: str
    display: str
    field: str
    value: Any
    whole: frozenset[str]
    pattern: re.Pattern[str] | None
    screen: frozenset[str] | None
    ordered: tuple[re.Pattern[str], ...]
    screens: tuple[tuple[frozenset[str], ...], ...]
    ignore: re.Pattern[str] | None
    yields_to: frozenset[str]
    extract: str | None
    unless_settled: str | None
    must_match: tuple[str, ...]
    must_not_match: tuple[str, ...]

    def match(self, text: str, key: str, present: set[str]) -> tuple[bool, tuple[int, int] | None]:
        """Whether the rule fires on the (normalized) text, and the span to extract for `extract` rules.

        `present` is the set of screen pieces found in the reply (see `_PieceFinder`)."""
        if key in self.whole:
            return True, None
        if self.pattern is None or (self.screen is not None and self.screen.isdisjoint(present)):
            return False, None
        return self.match_screened(text, present)

    def match_screened(self, text: str, present: set[str]) -> tuple[bool, tuple[int, int] | None]:
        """`match` after the whole-message and rule-level screen checks (the hot path calls this directly)."""
        plain = self.extract is None and self.ignore is None
        candidates = []
        for pattern, screen in zip(self.ordered, self.screens, strict=True):
            for pieces in screen:
                if pieces.isdisjoint(present):
                    break
            else:
                if plain:  # nothing to blank or extract: the first pattern that matches settles it
                    if pattern.search(text) is not None:
                        return True, None
                    continue
                candidates.append(pattern)
        if plain:
            return False, None
        if self.extract is None:
            for pattern in candidates:
                if pattern.search(text) is not None:
                    break
            else:
                return False, None
        if self.ignore is not None:
            text = self.ignore.sub(_blank, text)
        for pattern in candidates:
            found = pattern.search(text)
            if found is not None:
                return True, None if self.extract is None else found.span(self.extract)
        return False, None


@dataclass(slots=True)
class _Outcome:
    fired: list[_Rule] = field(default_factory=list)
    timeline_builtin: list[tuple[str, Timeline]] = field(default_factory=list)
    window: str | None = None
    views: tuple[str, set[str]] = ("", set())


# --------------------------------------------------------------------------------------------- loading
def _schema_error(display: str, exc: ValidationError) -> PolicyError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or None
    kind = err["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = str(err["msg"]).removeprefix("Value error, ")
    return PolicyError(display, loc, message)


def _expand(display: str, where: str, pattern: str, define: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in define:
            raise PolicyError(display, where, f"unknown ${{{name}}}; define it under 'define'")
        return define[name]

    # Definitions may use earlier-looking definitions; two passes are plenty for readable files.
    return _DEFINE_REF.sub(sub, _DEFINE_REF.sub(sub, pattern))


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


def _compile_rule(display: str, spec: InboundRuleFile) -> _Rule:
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
    for i, pattern in enumerate(ignore):
        _compile(display, f"ignore[{i}]", pattern)
    return _Rule(
        id=spec.id,
        display=display,
        field=spec.sets.field,
        value=value,
        whole=frozenset(whole_message_key(normalize(w)) for w in spec.whole_message),
        pattern=ordered[0] if ordered else None,
        screen=_screen(expanded),
        screens=tuple(_screens(p) for p in expanded),
        ordered=ordered,
        ignore=re.compile("|".join(f"(?:{p})" for p in ignore), re.I) if ignore else None,
        yields_to=frozenset(spec.yields_to),
        extract=spec.extract,
        unless_settled=spec.unless_settled,
        must_match=tuple(spec.examples.must_match),
        must_not_match=tuple(spec.examples.must_not_match),
    )


def load_rules(policies_dir: Path) -> RuleSet:
    """Read and compile every ``policies_dir/inbound/*.yaml``; any schema problem raises `PolicyError`."""
    inbound = policies_dir / "inbound"
    files, errors = read_policy_files(policies_dir)
    inbound_errors = [e for e in errors if Path(e.path).parent.name == "inbound"]
    if inbound_errors:
        raise inbound_errors[0]
    ours = sorted((f for f in files if f.header.kind == "inbound_rule"), key=lambda f: f.path.name)
    stray = [
        f for f in files if f.path.parent.resolve() == inbound.resolve() and f.header.kind != "inbound_rule"
    ]
    if stray:
        raise PolicyError(stray[0].display, "kind", "files under policies/inbound/ must be inbound_rule")
    if not ours:
        raise PolicyError(display_path(inbound, policies_dir), None, "no inbound_rule files")
    rules: list[_Rule] = []
    for policy in ours:
        try:
            spec = InboundRuleFile.model_validate(policy.data)
        except ValidationError as exc:
            raise _schema_error(policy.display, exc) from None
        rules.append(_compile_rule(policy.display, spec))
    known = {r.id for r in rules} | set(_timeline.RULE_IDS)
    for rule in rules:
        unknown = sorted(rule.yields_to - known)
        if unknown:
            raise PolicyError(rule.display, "yields_to", f"unknown rule id(s) {unknown}")
    digest = hashlib.sha256()
    for policy in ours:
        digest.update(policy.path.name.encode() + b"\0" + policy.path.read_bytes() + b"\0")
    return RuleSet(
        version=digest.hexdigest()[:12], files=[p.path for p in ours], rules=rules, policies_dir=policies_dir
    )


# --------------------------------------------------------------------------------------------- analysis
class RuleSet:
    """The compiled inbound rules. Build it with `load_rules`; `analyze` is pure and thread-safe."""

    def __init__(self, *, version: str, files: list[Path], rules: list[_Rule], policies_dir: Path) -> None:
        self.version = version
        self.files = files
        self.policies_dir = policies_dir
        self._rules = [r for r in rules if r.unless_settled is None]
        self._hints = [r for r in rules if r.unless_settled is not None]
        self._carrier = [r for r in rules if r.field == "keyword" and r.whole]
        self._yielding = any(r.yields_to for r in rules)
        pieces: set[str] = set()
        for rule in rules:
            pieces |= rule.screen or set()
            for screen in rule.screens:
                for piece_set in screen:
                    pieces |= piece_set
        self._pieces = _PieceFinder(pieces)

    def _views(self, text: str) -> tuple[str, set[str]]:
        """The whole-message key and the screen pieces present in the (normalized) reply."""
        return whole_message_key(text), self._pieces(text.lower())

    # ---- keywords
    def carrier_keyword(self, text: str) -> Keyword | None:
        """The carrier keyword (STOP, START, HELP families) when it is the whole message, else None."""
        key = whole_message_key(normalize(text))
        found = {r.value for r in self._carrier if key in r.whole}
        return next((k for k in _KEYWORD_ORDER if k in found), None)

    # ---- the analysis
    def _run(self, text: str, received_at: datetime) -> _Outcome:
        key, present = self._views(text)
        out = _Outcome(views=(key, present))
        window_span: tuple[int, int] | None = None
        for rule in self._rules:
            if key in rule.whole:
                out.fired.append(rule)
                continue
            screen = rule.screen
            if rule.pattern is None or (screen is not None and screen.isdisjoint(present)):
                continue
            hit, span = rule.match_screened(text, present)
            if hit:
                out.fired.append(rule)
                if span is not None and window_span is None:
                    window_span = span
        out.timeline_builtin = _timeline.parse(text, received_at)
        if self._yielding:
            ids = {r.id for r in out.fired} | {rid for rid, _ in out.timeline_builtin}
            kept = [r for r in out.fired if not (r.yields_to & ids)]
            if len(kept) != len(out.fired):
                out.fired = kept
                if not any(r.field == "callback_window" for r in kept):
                    window_span = None
        if window_span is not None:
            out.window = text[window_span[0] : window_span[1]].strip(" ,.;:!?") or None
        return out

    def analyze(self, text: str, received_at: datetime) -> ReplyAnalysis:
        """Analyse one reply received at `received_at` (timezone-aware). Pure: no I/O, no clock, no LLM.

        ``needs_llm`` is False when the rules settled everything the reply talks about:
          * a keyword fired (STOP/START/HELP or a plain-words opt-out): nothing else matters first;
          * the reply is a trivial acknowledgement ("ok", "thanks", "👍", a bare "yes"/"no" whose meaning
            depends on the question the conversation asked, which the flow knows and the LLM does not);
          * the reply closes the lead (wrong number, not interested) with no disagreement between rules.
        Otherwise ``needs_llm`` is True when
          * no rule at all fired on a non-empty reply (substantive content the rules did not account for);
          * two rules disagreed on a single-valued field (which is then left unknown); or
          * a hint rule fired for a field that is still unsettled (loan words but no loan type, time words but
            no timeline, lender words but no applied_elsewhere, closing-ish words but no handoff).
        The LLM can only fill what the rules left open; it never overrides a field a rule settled.
        """
        norm = normalize(text)
        out = self._run(norm, received_at)
        values: dict[str, set[Any]] = {}
        for rule in out.fired:
            values.setdefault(rule.field, set()).add(rule.value)
        for _, bucket in out.timeline_builtin:
            values.setdefault("timeline", set()).add(bucket)

        conflict = False
        keywords = values.get("keyword", set())
        keyword = next((k for k in _KEYWORD_ORDER if k in keywords), None)

        def single(name: str, unknown: Any) -> Any:
            nonlocal conflict
            found = values.get(name, set())
            if len(found) == 1:
                return next(iter(found))
            conflict = conflict or len(found) > 1
            return unknown

        loan_type = single("loan_type", LoanType.UNKNOWN)
        timeline = single("timeline", Timeline.UNKNOWN)
        applied = single("applied_elsewhere", None)
        reasons = values.get("handoff_reasons", set())
        analysis = ReplyAnalysis(
            keyword=keyword,
            loan_type=loan_type,
            timeline=timeline,
            applied_elsewhere=applied,
            wrong_number=True in values.get("wrong_number", set()),
            not_interested=True in values.get("not_interested", set()),
            handoff_reasons=[r for r in _HANDOFF_ORDER if r in reasons],
            callback_window=out.window,
            source=Source.RULES,
            rules_fired=[r.id for r in out.fired] + [rid for rid, _ in out.timeline_builtin],
        )
        analysis.needs_llm = self._needs_llm(norm, analysis, out, conflict=conflict)
        return analysis

    def _needs_llm(self, text: str, analysis: ReplyAnalysis, out: _Outcome, *, conflict: bool) -> bool:
        if analysis.keyword is not None:
            return False
        if any(r.field == "needs_llm" for r in out.fired):  # trivial acknowledgement
            return False
        if conflict:
            return True
        if analysis.wrong_number or analysis.not_interested:
            return False
        if not analysis.rules_fired:
            return bool(text.strip())
        unsettled = {
            "loan_type": analysis.loan_type is LoanType.UNKNOWN,
            "timeline": analysis.timeline is Timeline.UNKNOWN,
            "applied_elsewhere": analysis.applied_elsewhere is None,
            "handoff_reasons": not analysis.handoff_reasons,
            "callback_window": analysis.callback_window is None,
            "keyword": True,
        }
        return any(unsettled[h.unless_settled] and h.match(text, *out.views)[0] for h in self._hints)

    # ---- the rules' own examples
    def example_findings(self) -> list[str]:
        """One finding per policy example that misbehaves; empty when every example behaves."""
        findings: list[str] = []
        for rule in self._rules + self._hints:
            for example in rule.must_match:
                if not self.example_fires(rule.id, example):
                    findings.append(f"{rule.display}: rule '{rule.id}' must match {example!r} but did not")
            for example in rule.must_not_match:
                if self.example_fires(rule.id, example):
                    findings.append(f"{rule.display}: rule '{rule.id}' must not match {example!r} but did")
        return findings

    def examples(self) -> list[tuple[str, str, str, bool]]:
        """Every policy example as (display path, rule id, text, must_match), in file order."""
        return [
            (rule.display, rule.id, text, expected)
            for rule in self._rules + self._hints
            for expected, texts in ((True, rule.must_match), (False, rule.must_not_match))
            for text in texts
        ]

    def example_fires(self, rule_id: str, text: str) -> bool:
        """Whether rule `rule_id` takes effect on `text` in the full rule set (ignores and yields applied)."""
        norm = normalize(text)
        hint = next((h for h in self._hints if h.id == rule_id), None)
        if hint is not None:
            return hint.match(norm, *self._views(norm))[0]
        out = self._run(norm, EXAMPLES_RECEIVED_AT)
        return any(r.id == rule_id for r in out.fired)


@cache
def _default_rules() -> RuleSet:
    return load_rules(DEFAULT_POLICIES_DIR)


def carrier_keyword(text: str) -> Keyword | None:
    """The whole-message carrier keyword in `text` (vocabulary from ``policies/inbound/keyword-*.yaml``)."""
    return _default_rules().carrier_keyword(text)
