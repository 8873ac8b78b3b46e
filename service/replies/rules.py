"""The deterministic rules layer: one borrower SMS reply in, a `ReplyAnalysis` out, no network, no LLM.

Rules live in reviewable files under ``policies/inbound/`` (one rule a file, kind ``inbound_rule``); one
rule's schema, compiled form and matching are `service.replies.rule`, its literal pre-screen
`service.replies.prescreen`, the calendar arithmetic for timelines `service.replies.timeline`. This module
owns the rule set: `load_rules` reads and compiles every file once; `RuleSet.analyze` is pure and fast (see
``benchmarks/bench_rules.py``) and turns the rules that fired into one `ReplyAnalysis`.

How a rule matches (all regexes are case-insensitive, curly quotes are read as straight ones):

- ``whole_message``: the entire reply, lowercased, with surrounding spaces, punctuation and emoji removed and
  inner spaces collapsed, equals one of these words ("Stop!!" → ``stop``; "weekend" is not "end").
- ``patterns``: any regex matches anywhere in the reply.
- ``ignore``: look-alike spans ("stop by the office") are blanked out and ``patterns`` run again, so a
  real match elsewhere in the same reply still counts (a match must exist before and after the blanking).
- ``unless``: scopes (``policies/scopes/``, service.replies.scopes) under which a match does not count:
  negated ("nothing is locked yet"), in the past ("our last closing back in 2017"), other senses; each scope
  is written once, with its own examples, and named by the rules it applies to.
- ``yields_to``: the rule stands down when any of these rule ids fired (e.g. "just looking" yields to an
  explicit date).
- ``extract``: for ``callback_window``, the named group whose text becomes the value; patterns are tried in
  file order and the first match wins.
- ``unless_settled`` (only for ``sets: {field: needs_llm, value: true}``): the rule is a *hint* that asks for
  the LLM when its words appear but the named field is still unsettled ("FHA loan" with no loan type).
- ``define``: named sub-patterns, written ``${name}`` inside patterns, so a long regex stays readable (the same
  mechanism outbound rules have, service.policy.files.expand_defines).
- ``examples``: ``must_match`` texts the rule must fire on, ``must_not_match`` texts it must not (the examples
  vocabulary of every rule kind); `RuleSet.example_findings` runs them.

A rule that fires is final for its field. Multi-valued and boolean fields take the union of what fired.
Single-valued fields (``loan_type``, ``timeline``, ``applied_elsewhere``) take the value when every rule
that fired agrees; when two rules disagree the field stays unknown and ``needs_llm`` is set. ``keyword``
is ordered: stop beats start beats help, so an opt-out is never lost to a conflict.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from service.errors import PolicyError
from service.policy.files import display_path, read_policy_files
from service.replies import timeline as _timeline
from service.replies.analysis import (
    HandoffReason,
    Keyword,
    LoanType,
    ReplyAnalysis,
    Source,
    Timeline,
    Unsure,
    from_rules,
)
from service.replies.prescreen import PieceFinder, ScreenedList
from service.replies.rule import (
    CompiledRule,
    InboundRuleFile,
    blank,
    compile_rule,
    normalize,
    whole_message_key,
)
from service.replies.ruleindex import RuleIndex
from service.replies.scopes import Scope, load_scopes
from service.replies.spelling import Speller, load_speller
from service.resources import shipped

__all__ = ["RuleSet", "carrier_keyword", "load_rules"]

DEFAULT_POLICIES_DIR = shipped("policies")  # the carrier keywords' vocabulary: the policies shipped with textback
# The date the examples in the policy files are checked against (any date works: they pin no timeline).
EXAMPLES_RECEIVED_AT = datetime(2025, 6, 16, 15, 0, tzinfo=UTC)

_KEYWORD_ORDER = (Keyword.STOP, Keyword.START, Keyword.HELP)
_HANDOFF_ORDER = tuple(HandoffReason)
# What a hint (`unless_settled: <field>`) says the rules are unsure about: opt-outs and handoffs are safety.
_HINT_UNSURE = {
    "keyword": Unsure.SAFETY,
    "handoff_reasons": Unsure.SAFETY,
    "loan_type": Unsure.LOAN_TYPE,
    "timeline": Unsure.TIMELINE,
    "applied_elsewhere": Unsure.APPLIED_ELSEWHERE,
}
_UNSURE_ORDER = {kind: index for index, kind in enumerate(Unsure)}  # the order `unsure` is listed in


@dataclass(slots=True)
class _Outcome:
    fired: list[CompiledRule] = field(default_factory=list)
    timeline_builtin: list[tuple[str, Timeline]] = field(default_factory=list)
    window: str | None = None
    views: tuple[str, set[str]] = ("", set())


# --------------------------------------------------------------------------------------------- loading
_LOADED: dict[tuple[object, ...], RuleSet] = {}
_LOADED_LIMIT = 16


def load_rules(policies_dir: Path) -> RuleSet:
    """Read and compile every ``policies_dir/inbound/*.yaml``; any schema problem raises `PolicyError`.

    Compiling takes about a second (hundreds of regexes and their pre-screens); a rule set is immutable and
    pure, so one already compiled from the same files (same paths and bytes) is reused: a
    process that builds several contexts (tests, the eval driver, simulate) compiles once."""
    key = _fingerprint(policies_dir)
    loaded = _LOADED.get(key)
    if loaded is None:
        loaded = _load_rules(policies_dir)
        if len(_LOADED) >= _LOADED_LIMIT:
            _LOADED.clear()
        _LOADED[key] = loaded
    return loaded


def _fingerprint(policies_dir: Path) -> tuple[object, ...]:
    """Which files a rule set was compiled from: every policy file's path and a hash of its bytes (a copy that
    keeps its modification time, or an edit within one clock tick, still counts as a change)."""
    root = policies_dir.resolve()
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".yaml", ".yml") and path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return (str(root), digest.hexdigest())


def _load_rules(policies_dir: Path) -> RuleSet:
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
    rules: list[CompiledRule] = []
    for policy in ours:
        rules.append(compile_rule(policy.display, policy.validate(InboundRuleFile)))
    known = {r.id for r in rules} | set(_timeline.RULE_IDS)
    for rule in rules:
        unknown = sorted(rule.yields_to - known)
        if unknown:
            raise PolicyError(rule.display, "yields_to", f"unknown rule id(s) {unknown}")
    speller = load_speller(policies_dir, (files, errors))
    scopes = load_scopes(policies_dir, (files, errors))
    for rule in rules:
        missing = sorted(set(rule.unless_ids) - set(scopes))
        if missing:
            raise PolicyError(rule.display, "unless", f"unknown scope(s) {missing}; see policies/scopes/")
        rule.scopes = tuple(scopes[name] for name in rule.unless_ids)
    digest = hashlib.sha256()
    for policy in ours:
        digest.update(policy.path.name.encode() + b"\0" + policy.path.read_bytes() + b"\0")
    if speller.words:
        digest.update(b"spelling\0" + speller.version.encode())
    for scope in scopes.values():
        digest.update(b"scope\0" + scope.path.name.encode() + b"\0" + scope.path.read_bytes())
    return RuleSet(
        version=digest.hexdigest()[:12], files=[p.path for p in ours], rules=rules, policies_dir=policies_dir,
        speller=speller, scopes=scopes,
    )


# --------------------------------------------------------------------------------------------- analysis
class RuleSet:
    """The compiled inbound rules. Build it with `load_rules`; `analyze` is pure and thread-safe."""

    def __init__(
        self, *, version: str, files: list[Path], rules: list[CompiledRule], policies_dir: Path,
        speller: Speller | None = None, scopes: dict[str, Scope] | None = None,
    ) -> None:
        self.version = version
        self.speller = speller or Speller()
        self.scopes = scopes or {}
        self.files = files
        self.policies_dir = policies_dir
        self._rules = [r for r in rules if r.unless_settled is None]
        self._hints = [r for r in rules if r.unless_settled is not None]
        self._carrier = [r for r in rules if r.field == "keyword" and r.whole]
        self._yielding = any(r.yields_to for r in rules)
        # What the rules of a field set aside as another sense ("injury settlement", "the store is closing"):
        # a hint standing in for that field does not fire on those spans either (the rules looked and said no).
        ignored: dict[str, list[tuple[re.Pattern[str], tuple[frozenset[str], ...]]]] = {}
        for rule in self._rules:
            ignored.setdefault(rule.field, []).extend(rule.ignores)
        self._ignored = {name: ScreenedList(items) for name, items in ignored.items()}
        pieces: set[str] = set()
        for rule in rules:
            pieces |= rule.screen or set()
            for screen in (*rule.screens, *(ignore_screen for _, ignore_screen in rule.ignores)):
                for piece_set in screen:
                    pieces |= piece_set
        self._pieces = PieceFinder(pieces)
        self._index = RuleIndex(self._rules)
        self._hint_index = RuleIndex(self._hints)

    def _views(self, text: str) -> tuple[str, set[str]]:
        """The whole-message key and the screen pieces present in the (normalized) reply."""
        return whole_message_key(text), self._pieces(text.lower())

    def canonical(self, text: str) -> str:
        """The view every rule reads: typography normalized, then spacing, stretched letters and misspelled
        listed words mended (service.replies.spelling)."""
        return self.speller.correct(normalize(text))

    # ---- keywords
    def carrier_keyword(self, text: str) -> Keyword | None:
        """The carrier keyword (STOP, START, HELP families) when it is the whole message, else None."""
        key = whole_message_key(self.canonical(text))
        found = {r.value for r in self._carrier if key in r.whole}
        return next((k for k in _KEYWORD_ORDER if k in found), None)

    # ---- the analysis
    def _run(self, text: str, received_at: datetime) -> _Outcome:
        key, present = self._views(text)
        out = _Outcome(views=(key, present))
        window_span: tuple[int, int] | None = None
        rules = self._rules
        for position, candidates in self._index.candidates(key, present):
            rule = rules[position]
            if candidates is None:  # the whole message is one of its words
                out.fired.append(rule)
                continue
            hit, span = rule.match_viable(text, present, candidates)
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
        Otherwise ``unsure`` names what is open, and ``needs_llm`` is True, when
          * no rule at all fired on a non-empty reply (``content``: substantive words the rules did not read);
          * two rules disagreed on a single-valued field (that field, which is then left unknown); or
          * a hint rule fired for a field that is still unsettled (loan words but no loan type, time words but
            no timeline, lender words but no applied_elsewhere); a hint standing in for a handoff or an opt-out
            (words near a rate lock, a closing, a deadline or a stop that no rule settled) is ``safety``.
        With no LLM, unsure about safety goes to a person and unsure about anything else asks the next
        question (service.conversation). The LLM can only fill what the rules left open; it never overrides a
        field a rule settled.
        """
        norm = self.canonical(text)
        out = self._run(norm, received_at)
        values: dict[str, set[Any]] = {}
        for rule in out.fired:
            values.setdefault(rule.field, set()).add(rule.value)
        for _, bucket in out.timeline_builtin:
            values.setdefault("timeline", set()).add(bucket)

        conflicts: list[str] = []
        keywords = values.get("keyword", set())
        keyword = next((k for k in _KEYWORD_ORDER if k in keywords), None)

        def single(name: str, unknown: Any) -> Any:
            found = values.get(name, set())
            if len(found) == 1:
                return next(iter(found))
            if len(found) > 1:
                conflicts.append(name)
            return unknown

        loan_type = single("loan_type", LoanType.UNKNOWN)
        timeline = single("timeline", Timeline.UNKNOWN)
        applied = single("applied_elsewhere", None)
        reasons = values.get("handoff_reasons", set())
        fields = {
            "keyword": keyword,
            "loan_type": loan_type,
            "timeline": timeline,
            "applied_elsewhere": applied,
            "wrong_number": True in values.get("wrong_number", ()),
            "not_interested": True in values.get("not_interested", ()),
            "handoff_reasons": [r for r in _HANDOFF_ORDER if r in reasons],
            "callback_window": out.window,
            "source": Source.RULES,
            "rules_fired": [r.id for r in out.fired] + [rid for rid, _ in out.timeline_builtin],
        }
        unsure = self._unsure(norm, fields, out, conflicts)
        # Every value is already of its field's type (the rules' values are the enums, checked at load), so
        # the model is built without validating it again: the same model, ~4 µs less a reply.
        fields["unsure"], fields["needs_llm"] = unsure, bool(unsure)
        return from_rules(fields)

    def _unsure(self, text: str, fields: dict[str, Any], out: _Outcome, conflicts: list[str]) -> list[Unsure]:
        """What the rules could not settle (`fields`: the analysis so far); ``needs_llm`` is whether this is
        non-empty."""
        if fields["keyword"] is not None:
            return []
        if any(r.field == "needs_llm" for r in out.fired):  # trivial acknowledgement
            return []
        unsure = [Unsure(name) for name in conflicts]
        if not conflicts and (fields["wrong_number"] or fields["not_interested"]):
            return []
        if not fields["rules_fired"] and text.strip():
            unsure.append(Unsure.CONTENT)
        unsettled = {
            "loan_type": fields["loan_type"] is LoanType.UNKNOWN,
            "timeline": fields["timeline"] is Timeline.UNKNOWN,
            "applied_elsewhere": fields["applied_elsewhere"] is None,
            "handoff_reasons": not fields["handoff_reasons"],
            "callback_window": fields["callback_window"] is None,
            "keyword": True,
        }
        hints: dict[int, list[re.Pattern[str]] | None] | None = None
        for position, hint in enumerate(self._hints):
            name = hint.unless_settled
            if name is None or not unsettled[name]:
                continue
            kind = _HINT_UNSURE.get(name, Unsure.CONTENT)
            if kind in unsure:
                continue
            if hints is None:
                hints = dict(self._hint_index.candidates(*out.views))
            if position not in hints:
                continue
            candidates = hints[position]
            present = out.views[1]
            if candidates is not None and not hint.match_viable(text, present, candidates)[0]:
                continue
            read = text
            ignored = self._ignored.get(name)
            for pattern in ignored.viable(present) if ignored is not None else ():
                read = pattern.sub(blank, read)
            if read is text or candidates is None or hint.match_viable(read, present, candidates)[0]:
                unsure.append(kind)
        return sorted(set(unsure), key=_UNSURE_ORDER.__getitem__)

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
        norm = self.canonical(text)
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
