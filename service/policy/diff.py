"""`textback policy diff OLD NEW`: what changed between two policy sets, in a reviewer's terms.

Each side is a policies directory or a git revision of the repository the command runs in (its ``policies/``
folder is extracted with ``git archive`` into a temporary directory). The diff lists, by id and title:

- outbound rules, inbound rules and templates added, removed and changed; for a changed one what changed:
  severity, title, summary, rationale, cited law and any other setting (old -> new), patterns added and
  removed (a count; the regexes themselves in an appendix, so a reviewer reads words first), examples added
  and removed, template wording per language (old -> new);
- the compliance manifest (required rules, their minimum severity and examples) and every other policy file
  (scopes, spelling, sending, retention, reporting) setting by setting, old -> new, with the examples added and
  removed (service.policy.diff_values: `scope: brokerage -> broker`, `states.FL.window: 08:00 to 20:00 ->
  08:00 to 21:00`, `categories.communications.keep_months: 25 -> 30`); a scope file's regexes go to the
  appendix; every file's header (summary, cites, open questions) old -> new, internal notes only as changed;
- both sides' policy-set versions (service.policy.files.policy_version) and approval states;
- the examples whose outcome changes: every example of BOTH sets (outbound rules' must_match and
  must_not_match, the manifest's must_match, inbound rules' examples, the borrower templates rendered with
  the sample data `policy check` uses) run under the OLD rules and the NEW rules. Outbound texts go through
  the rules' regex logic (service.policy.guard.scan and the content checks; guardrails is not imported),
  replies through the inbound rule engine (service.replies.rules). Each one whose outcome differs is listed
  ("blocked by no-rate-quotes -> allowed", "sets handoff_reasons=rate_lock -> nothing").

A diff is a report, not a check: files one side cannot read are listed as problems of that side. The sides
are read by service.policy.diff_sides, the examples run by service.policy.diff_outcomes; this module compares
the files and renders the result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.errors import PolicyError
from service.policy.approvals import approval_state
from service.policy.diff_outcomes import OutcomeChange, outcomes
from service.policy.diff_sides import DiffError, LoadedSet, load_set, policies_side, templates_of
from service.policy.diff_values import NO_VALUE as _NO_VALUE
from service.policy.diff_values import example_changes, settings
from service.policy.diff_values import quoted as _quoted
from service.policy.diff_values import text as _text
from service.policy.diff_values import word_changes as _word_changes
from service.policy.files import PolicyFile, expand_defines, policy_version

__all__ = ["Change", "DiffError", "OutcomeChange", "PolicyDiff", "Side", "diff", "diff_dirs", "render_text"]

# Keys compared on their own (patterns, examples, wording) rather than as settings.
_OUTBOUND_OWN = {"id", "kind", "define", "patterns", "allow", "examples"}
_INBOUND_OWN = {"id", "kind", "define", "patterns", "ignore", "whole_message", "examples"}


# --------------------------------------------------------------------------------------------- the model
@dataclass
class Side:
    """One side: what the user named, the policy-set version and its approval state."""

    name: str
    source: str  # "directory DIR" or "git revision REV (commit abc1234)"
    version: str
    approval: str
    problems: list[str] = field(default_factory=list)


@dataclass
class Change:
    """One rule, template or file added, removed or changed; `details` in reviewer terms."""

    section: str
    id: str
    title: str
    status: str  # added | removed | changed
    details: list[str] = field(default_factory=list)
    regexes_added: list[str] = field(default_factory=list)
    regexes_removed: list[str] = field(default_factory=list)


@dataclass
class PolicyDiff:
    old: Side
    new: Side
    changes: list[Change]
    outcomes: list[OutcomeChange]
    examples_run: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


SECTIONS = (
    ("outbound rule", "Outbound rules (what a text to a borrower must never say)"),
    ("inbound rule", "Inbound rules (how a borrower's reply is read)"),
    ("template", "Templates (the only words a borrower or broker receives)"),
    ("manifest", "Compliance manifest (outbound rules that must be in force)"),
    ("policy file", "Other policy files"),
)


def _side(name: str, source: str, loaded: LoadedSet) -> Side:
    try:
        state = approval_state(loaded.dir)
        approval = state.describe().split(": ", 1)[1]
        if len(state.approvals) > 1:
            approval += f" ({len(state.approvals)} sign-offs)"
    except PolicyError as exc:
        approval = f"approvals file unreadable ({exc})"
    return Side(name=name, source=source, version=policy_version(loaded.dir), approval=approval,
                problems=list(loaded.problems))


# --------------------------------------------------------------------------------------------- what changed
def _expanded(data: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    define = data.get("define") or {}
    out: list[str] = []
    for key in keys:
        for pattern in data.get(key) or []:
            try:
                text = expand_defines(pattern, define)
            except ValueError:
                text = pattern
            out.append(text if key == "patterns" else f"[{key}] {text}")
    return out


def _rule_change(section: str, rule_id: str, old: PolicyFile | None, new: PolicyFile | None,
                 pattern_keys: tuple[str, ...], own: set[str]) -> Change | None:
    shown = new or old
    assert shown is not None  # noqa: S101 - one side always has the rule
    title = shown.header.title
    if old is None or new is None:
        status = "added" if old is None else "removed"
        data = shown.data
        count = len(_expanded(data, pattern_keys))
        examples = data.get("examples") or {}
        details = [f"severity: {data.get('severity', _NO_VALUE)}; {count} pattern(s); "
                   f"{sum(len(v or []) for v in examples.values())} example(s)"]
        return Change(section, rule_id, title, status, details)
    if old.data == new.data:
        return None
    details = settings(old.data, new.data, own)
    if "whole_message" in pattern_keys:
        before, after = old.data.get("whole_message") or [], new.data.get("whole_message") or []
        details += [f"whole-message word added: {_quoted(w)}" for w in after if w not in before]
        details += [f"whole-message word removed: {_quoted(w)}" for w in before if w not in after]
    keys = tuple(k for k in pattern_keys if k != "whole_message")
    before_p, after_p = _expanded(old.data, keys), _expanded(new.data, keys)
    added = [p for p in after_p if p not in before_p]
    removed = [p for p in before_p if p not in after_p]
    if added or removed:
        details.append(f"patterns: {len(added)} added, {len(removed)} removed (regexes in the appendix)")
    details += example_changes(old.data.get("examples"), new.data.get("examples"))
    if not details:
        details.append("reformatted (same meaning: no setting, pattern or example changed)")
    return Change(section, rule_id, title, "changed", details, added, removed)


def _by_id(loaded: LoadedSet, kind: str) -> dict[str, PolicyFile]:
    return {f.header.id: f for f in loaded.files.values() if f.header.kind == kind}


def _rules(old: LoadedSet, new: LoadedSet, kind: str, section: str, pattern_keys: tuple[str, ...],
           own: set[str]) -> list[Change]:
    before, after = _by_id(old, kind), _by_id(new, kind)
    changes = [_rule_change(section, rid, before.get(rid), after.get(rid), pattern_keys, own)
               for rid in sorted(set(before) | set(after))]
    return [c for c in changes if c is not None]


def _templates(old: LoadedSet, new: LoadedSet) -> list[Change]:
    before, before_phrases = templates_of(old)
    after, after_phrases = templates_of(new)
    changes: list[Change] = []
    for key in sorted(set(before) | set(after)):
        tid, language = key
        name = f"{tid} ({language})"
        was, now = before.get(key), after.get(key)
        if was is None or now is None:
            spec = now or was or {}
            status = "added" if was is None else "removed"
            changes.append(Change("template", name, str(spec.get("audience", "")) + " text", status,
                                  [f"wording: {_quoted(spec.get('text'))}"]))
            continue
        details = [f"{k}: {_text(was.get(k))} -> {_text(now.get(k))}" for k in ("audience", "requires")
                   if was.get(k) != now.get(k)]
        before_words, after_words = str(was.get("text")).split(), str(now.get("text")).split()
        if before_words != after_words:
            details.append(f"words: {_word_changes(before_words, after_words)}")
            details.append(f"wording: {_quoted(was.get('text'))} -> {_quoted(now.get('text'))}")
        if details:
            changes.append(Change("template", name, str(now.get("audience", "")) + " text", "changed", details))
    for phrase in sorted(set(before_phrases) | set(after_phrases)):
        was_p, now_p = before_phrases.get(phrase), after_phrases.get(phrase)
        if was_p != now_p:
            status = "added" if was_p is None else "removed" if now_p is None else "changed"
            changes.append(Change("template", f"phrase {phrase}", "wording a placeholder is built from", status,
                                  [f"wording: {_quoted(was_p)} -> {_quoted(now_p)}"]))
    return changes


def _manifest(old: LoadedSet, new: LoadedSet) -> list[Change]:
    if old.manifest is None and new.manifest is None:
        return []
    before = {r.id: r for r in old.manifest.required} if old.manifest else {}
    after = {r.id: r for r in new.manifest.required} if new.manifest else {}
    changes: list[Change] = []
    for rid in sorted(set(before) | set(after)):
        was, now = before.get(rid), after.get(rid)
        if was is None and now is not None:
            changes.append(Change("manifest", rid, "required rule", "added",
                                  [f"required at {now.min_severity} or above"]))
        elif now is None and was is not None:
            changes.append(Change("manifest", rid, "required rule", "removed",
                                  ["no longer required: the rule may be deleted or set to warn"]))
        elif was is not None and now is not None and was != now:
            details = ([f"min_severity: {was.min_severity} -> {now.min_severity}"]
                       if was.min_severity != now.min_severity else [])
            details += example_changes({"must_match": was.must_match}, {"must_match": now.must_match})
            changes.append(Change("manifest", rid, "required rule", "changed", details))
    return changes


_HEADER = {"title", "rationale", "summary", "cites", "open_questions", "internal_notes"}
# A scope file's regular expressions: named as changed, the regexes themselves go to the appendix.
_SCOPE_PATTERNS = ("define", "before", "after", "clause", "phrase", "unless")


def _scope_patterns(data: dict[str, Any]) -> list[str]:
    out = [f"[define {k}] {v}" for k, v in (data.get("define") or {}).items()]
    return out + [f"[{k}] {data[k]}" for k in _SCOPE_PATTERNS[1:] if data.get(k)]


def _other_files(old: LoadedSet, new: LoadedSet) -> list[Change]:
    """Every file that is not a rule, by its settings (old -> new) and examples; the templates' and the
    manifest's files by their header (their wording and required rules are compared above)."""
    rules = {"outbound_rule", "inbound_rule"}
    section_of = {"templates": "template", "outbound_manifest": "manifest"}
    before = {p: f for p, f in old.files.items() if f.header.kind not in rules}
    after = {p: f for p, f in new.files.items() if f.header.kind not in rules}
    changes: list[Change] = []
    for path in sorted(set(before) | set(after)):
        was, now = before.get(path), after.get(path)
        shown = now or was
        assert shown is not None  # noqa: S101 - one side always has the file
        kind = shown.header.kind
        section = section_of.get(kind, "policy file")
        if was is None or now is None:
            if section == "policy file":
                status = "added" if was is None else "removed"
                summary = [f"summary: {_text(shown.data['summary'])}"] if shown.data.get("summary") else []
                changes.append(Change(section, path, shown.header.title, status, [f"kind: {kind}", *summary]))
            continue
        if was.data == now.data:
            continue
        if section != "policy file":
            details = settings(was.data, now.data, (set(was.data) | set(now.data)) - _HEADER)
            if details:
                changes.append(Change(section, path, shown.header.title, "changed", details))
            continue
        own = {"id", "kind", "examples", *(_SCOPE_PATTERNS if kind == "scope" else ())}
        details = settings(was.data, now.data, own)
        added = removed = []
        if kind == "scope":
            before_p, after_p = _scope_patterns(was.data), _scope_patterns(now.data)
            added, removed = [x for x in after_p if x not in before_p], [x for x in before_p if x not in after_p]
            if added or removed:
                details.append(f"patterns: {len(added)} added, {len(removed)} removed (regexes in the appendix)")
        details += example_changes(was.data.get("examples"), now.data.get("examples"))
        changes.append(Change(section, path, shown.header.title, "changed",
                              details or ["reformatted (same meaning: no setting or example changed)"],
                              added, removed))
    return changes


# --------------------------------------------------------------------------------------------- the diff
def diff_dirs(old_dir: Path, new_dir: Path, *, old_name: str = "OLD", new_name: str = "NEW",
              old_source: str | None = None, new_source: str | None = None) -> PolicyDiff:
    """Everything `policy diff` reports about two policies directories."""
    old, new = load_set(old_dir), load_set(new_dir)
    old_side = _side(old_name, old_source or f"directory {old_dir}", old)
    new_side = _side(new_name, new_source or f"directory {new_dir}", new)
    changes = [
        *_rules(old, new, "outbound_rule", "outbound rule", ("patterns", "allow"), _OUTBOUND_OWN),
        *_rules(old, new, "inbound_rule", "inbound rule", ("whole_message", "patterns", "ignore"), _INBOUND_OWN),
        *_templates(old, new),
        *_manifest(old, new),
        *_other_files(old, new),
    ]
    found, examples = outcomes(old, new, old_side.problems, new_side.problems)
    return PolicyDiff(old_side, new_side, changes, found, examples)


def diff(old_spec: str, new_spec: str, *, cwd: Path | None = None) -> PolicyDiff:
    """`policy diff OLD NEW`: each a policies directory or a git revision (DiffError when neither)."""
    with policies_side(old_spec, cwd=cwd) as (old_dir, old_source), \
            policies_side(new_spec, cwd=cwd) as (new_dir, new_source):
        return diff_dirs(old_dir, new_dir, old_name=old_spec, new_name=new_spec,
                         old_source=old_source, new_source=new_source)


# --------------------------------------------------------------------------------------------- rendering
def _side_line(label: str, side: Side) -> str:
    return f"{label}: {side.source}: policy set {side.version}, {side.approval}"


def render_text(result: PolicyDiff, *, markdown: bool = False) -> str:
    """The diff as plain text (or Markdown): sides, changes by section, outcomes, then the regexes."""
    head = "## " if markdown else ""
    item = "- " if markdown else "  "
    sub = "  - " if markdown else "      "
    gap = [""] if markdown else []  # Markdown wants a blank line between a heading and its list
    lines = [("# " if markdown else "") + "Policy diff", ""]
    lines += [item + _side_line("OLD", result.old), item + _side_line("NEW", result.new)]
    for label, side in (("OLD", result.old), ("NEW", result.new)):
        lines += [f"{item}{label} problem: {problem}" for problem in side.problems]
    if result.old.version == result.new.version:
        lines.append(f"{item}the two sides are the same policy set")
    for section, heading in SECTIONS:
        changes = [c for c in result.changes if c.section == section]
        if not changes:
            continue
        lines += ["", f"{head}{heading}", *gap]
        for change in changes:
            lines.append(f"{item}{change.status} {change.id}: {change.title}")
            lines += [f"{sub}{detail}" for detail in change.details]
    if not result.changes:
        lines += ["", f"{head}No rule, template or policy file changed"]
    lines += ["", f"{head}Examples whose outcome changes ({len(result.outcomes)} of {result.examples_run} run "
              "under both sets)", *gap]
    for outcome in result.outcomes:
        lines.append(f"{item}{outcome.kind} {_quoted(outcome.text)} ({outcome.source}): {outcome.old} -> {outcome.new}")
    if not result.outcomes:
        lines.append(f"{item}none")
    with_regexes = [c for c in result.changes if c.regexes_added or c.regexes_removed]
    if with_regexes:
        lines += ["", f"{head}Appendix: patterns (regular expressions) added and removed", *gap]
        for change in with_regexes:
            lines.append(f"{item}{change.section} {change.id}")
            fence = "`" if markdown else ""
            lines += [f"{sub}+ {fence}{p}{fence}" for p in change.regexes_added]
            lines += [f"{sub}- {fence}{p}{fence}" for p in change.regexes_removed]
    return "\n".join(lines) + "\n"
