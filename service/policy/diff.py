"""`textback policy diff OLD NEW`: what changed between two policy sets, in a reviewer's terms.

Each side is a policies directory or a git revision of the repository the command runs in (its ``policies/``
folder is extracted with ``git archive`` into a temporary directory). The diff lists, by id and title:

- outbound rules, inbound rules and templates added, removed and changed; for a changed one what changed:
  severity, title, summary, rationale, cited law and any other setting (old -> new), patterns added and
  removed (a count; the regexes themselves in an appendix, so a reviewer reads words first), examples added
  and removed, template wording per language (old -> new);
- the compliance manifest (required rules, their minimum severity and examples) and every other policy file
  (scopes, spelling, sending, reporting) by the settings that changed;
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

import difflib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from service.errors import PolicyError
from service.policy.approvals import approval_state
from service.policy.diff_outcomes import OutcomeChange, outcomes
from service.policy.diff_sides import DiffError, LoadedSet, load_set, policies_side, templates_of
from service.policy.files import PolicyFile, expand_defines, policy_version

__all__ = ["Change", "DiffError", "OutcomeChange", "PolicyDiff", "Side", "diff", "diff_dirs", "render_text"]

# Settings shown first, in this order, when they change; the rest follow alphabetically.
_FIRST = ("severity", "title", "summary", "rationale", "law", "cites", "citation", "citations")
# Keys compared on their own (patterns, examples, wording) rather than as settings.
_OUTBOUND_OWN = {"id", "kind", "define", "patterns", "allow", "examples"}
_INBOUND_OWN = {"id", "kind", "define", "patterns", "ignore", "whole_message", "examples"}
_NO_VALUE = "(none)"


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
def _text(value: Any) -> str:
    if value is None:
        return _NO_VALUE
    if isinstance(value, str):
        words = value.split()
        return words[0] if len(words) == 1 and len(value) <= 40 and '"' not in value else '"' + " ".join(words) + '"'
    return yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True).strip()


def _quoted(value: Any) -> str:
    """Wording, always in quotes (a one-word text still reads as a text)."""
    return _NO_VALUE if value is None else '"' + " ".join(str(value).split()) + '"'


def _word_changes(before: list[str], after: list[str]) -> str:
    """The words that changed, as `"I" -> "we"`; several changes separated by `; `."""
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    parts = []
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op == "equal":
            continue
        old, new = " ".join(before[a1:a2]), " ".join(after[b1:b2])
        parts.append(f'"{old}" -> "{new}"' if old and new else f'added "{new}"' if new else f'removed "{old}"')
    return "; ".join(parts)


def _settings(old: dict[str, Any], new: dict[str, Any], own: set[str]) -> list[str]:
    keys = (set(old) | set(new)) - own
    ordered = [k for k in _FIRST if k in keys] + sorted(keys - set(_FIRST))
    return [f"{k}: {_text(old.get(k))} -> {_text(new.get(k))}" for k in ordered if old.get(k) != new.get(k)]


def _examples(old: dict[str, Any], new: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    lines: list[str] = []
    for name in names:
        before, after = list(old.get(name) or []), list(new.get(name) or [])
        lines += [f"example added ({name}): {_quoted(t)}" for t in after if t not in before]
        lines += [f"example removed ({name}): {_quoted(t)}" for t in before if t not in after]
    return lines


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
    details = _settings(old.data, new.data, own)
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
    details += _examples(old.data.get("examples") or {}, new.data.get("examples") or {},
                         ("must_match", "must_not_match"))
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
            details += _examples({"must_match": was.must_match}, {"must_match": now.must_match}, ("must_match",))
            changes.append(Change("manifest", rid, "required rule", "changed", details))
    return changes


def _other_files(old: LoadedSet, new: LoadedSet) -> list[Change]:
    handled = {"outbound_rule", "inbound_rule", "templates", "outbound_manifest"}
    before = {p: f for p, f in old.files.items() if f.header.kind not in handled}
    after = {p: f for p, f in new.files.items() if f.header.kind not in handled}
    changes: list[Change] = []
    for path in sorted(set(before) | set(after)):
        was, now = before.get(path), after.get(path)
        shown = now or was
        assert shown is not None  # noqa: S101 - one side always has the file
        if was is None or now is None:
            status = "added" if was is None else "removed"
            changes.append(Change("policy file", path, shown.header.title, status, [f"kind: {shown.header.kind}"]))
            continue
        if was.data == now.data:
            continue
        details = [line for line in _settings(was.data, now.data, {"id", "kind", "examples"})
                   if line.split(":", 1)[0] in _FIRST]
        changed = sorted(k for k in set(was.data) | set(now.data)
                         if k not in _FIRST and k not in {"id", "kind"} and was.data.get(k) != now.data.get(k))
        if changed:
            details.append(f"settings changed: {', '.join(changed)}")
        changes.append(Change("policy file", path, shown.header.title, "changed", details))
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
