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

A diff is a report, not a check: files one side cannot read are listed as problems of that side.
"""

from __future__ import annotations

import difflib
import io
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import yaml

from service.errors import PolicyError, TextbackError
from service.policy.approvals import approval_state
from service.policy.files import (
    OutboundRule,
    PolicyFile,
    expand_defines,
    outbound_rules,
    policy_version,
    read_policy_files,
)
from service.policy.guard import content_violations, scan
from service.policy.manifest import Manifest

GIT_POLICIES = "policies"  # the folder a git revision's policy set is read from
# Settings shown first, in this order, when they change; the rest follow alphabetically.
_FIRST = ("severity", "title", "summary", "rationale", "law", "cites", "citation", "citations")
# Keys compared on their own (patterns, examples, wording) rather than as settings.
_OUTBOUND_OWN = {"id", "kind", "define", "patterns", "allow", "examples"}
_INBOUND_OWN = {"id", "kind", "define", "patterns", "ignore", "whole_message", "examples"}
_NO_VALUE = "(none)"


class DiffError(TextbackError):
    """A side of the diff is neither a policies directory nor a git revision with a policies/ folder."""


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
class OutcomeChange:
    """An example whose outcome under the OLD rules differs from its outcome under the NEW ones."""

    kind: str  # outbound | inbound
    text: str
    source: str  # where the example comes from
    old: str
    new: str


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


# --------------------------------------------------------------------------------------------- the sides
@contextmanager
def policies_side(spec: str, *, cwd: Path | None = None) -> Iterator[tuple[Path, str]]:
    """The policies directory `spec` names (a directory, else a git revision extracted to a temp dir) and how
    to describe it. DiffError when it is neither."""
    path = Path(spec)
    if path.is_dir():
        yield path, f"directory {spec}"
        return
    where = cwd or Path.cwd()
    commit = _git(where, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    if commit is None:
        msg = (f"{spec!r} is neither a policies directory nor a git revision of the repository at {where} "
               "(a branch, tag, commit or HEAD~N)")
        raise DiffError(msg)
    top = _git(where, "rev-parse", "--show-toplevel")
    archive = subprocess.run(  # noqa: S603 - fixed git arguments; the revision was verified above
        ["git", "-C", top or str(where), "archive", "--format=tar", commit.strip(), GIT_POLICIES],  # noqa: S607
        capture_output=True, check=False,
    )
    if archive.returncode != 0:
        msg = f"git revision {spec} ({commit.strip()[:7]}) has no {GIT_POLICIES}/ folder"
        raise DiffError(msg)
    with tempfile.TemporaryDirectory(prefix="textback-policy-diff-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp) / GIT_POLICIES, f"git revision {spec} (commit {commit.strip()[:7]})"


def _git(where: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 - fixed git arguments
            ["git", "-C", str(where), *args], capture_output=True, text=True, check=False,  # noqa: S607
        )
    except FileNotFoundError:
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


@dataclass
class _Loaded:
    """What one side's files say, read leniently (a file that does not read is a problem, not a stop)."""

    dir: Path
    files: dict[str, PolicyFile]  # by path relative to the policies directory
    outbound: dict[str, OutboundRule]
    manifest: Manifest | None
    problems: list[str]


def _load(policies_dir: Path) -> _Loaded:
    files, errors = read_policy_files(policies_dir)
    problems = [str(e) for e in errors]
    rules, rule_errors = outbound_rules(files)
    problems += [str(e) for e in rule_errors]
    manifest = None
    for policy in files:
        if policy.header.kind == "outbound_manifest":
            try:
                manifest = policy.validate(Manifest)
            except PolicyError as exc:
                problems.append(str(exc))
    by_path = {p.path.relative_to(policies_dir).as_posix(): p for p in files}
    return _Loaded(policies_dir, by_path, {lr.rule.id: lr.rule for lr in rules}, manifest, problems)


def _side(name: str, source: str, loaded: _Loaded) -> Side:
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


def _by_id(loaded: _Loaded, kind: str) -> dict[str, PolicyFile]:
    return {f.header.id: f for f in loaded.files.values() if f.header.kind == kind}


def _rules(old: _Loaded, new: _Loaded, kind: str, section: str, pattern_keys: tuple[str, ...],
           own: set[str]) -> list[Change]:
    before, after = _by_id(old, kind), _by_id(new, kind)
    changes = [_rule_change(section, rid, before.get(rid), after.get(rid), pattern_keys, own)
               for rid in sorted(set(before) | set(after))]
    return [c for c in changes if c is not None]


def _templates_of(loaded: _Loaded) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, str]]:
    """(template id, language) -> its spec as written, and every phrase."""
    templates: dict[tuple[str, str], dict[str, Any]] = {}
    phrases: dict[str, str] = {}
    for policy in loaded.files.values():
        if policy.header.kind != "templates":
            continue
        language = str(policy.data.get("language") or "en")
        for tid, spec in (policy.data.get("templates") or {}).items():
            if isinstance(spec, dict):
                templates[(str(tid), language)] = spec
        phrases.update({str(k): str(v) for k, v in (policy.data.get("phrases") or {}).items()})
    return templates, phrases


def _templates(old: _Loaded, new: _Loaded) -> list[Change]:
    before, before_phrases = _templates_of(old)
    after, after_phrases = _templates_of(new)
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


def _manifest(old: _Loaded, new: _Loaded) -> list[Change]:
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


def _other_files(old: _Loaded, new: _Loaded) -> list[Change]:
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


# --------------------------------------------------------------------------------------------- outcomes
@dataclass(frozen=True)
class _Example:
    kind: str
    text: str
    source: str
    required: tuple[tuple[str, str], ...] = ()
    template: str | None = None


def _outbound_examples(loaded: _Loaded) -> list[_Example]:
    out: list[_Example] = []
    for rule in loaded.outbound.values():
        out += [_Example("outbound", t, f"{rule.id} must_match") for t in rule.examples.must_match]
        out += [_Example("outbound", t, f"{rule.id} must_not_match") for t in rule.examples.must_not_match]
    if loaded.manifest is not None:
        for required in loaded.manifest.required:
            out += [_Example("outbound", t, f"manifest {required.id}") for t in required.must_match]
    return out


def _rendered_templates(loaded: _Loaded) -> list[_Example]:
    from service.templates import SAMPLE_VALUES, to_gsm7  # the sample data `policy check` renders with

    values = {k: to_gsm7(v) for k, v in SAMPLE_VALUES.items()}
    templates, _ = _templates_of(loaded)
    out: list[_Example] = []
    for (tid, language), spec in sorted(templates.items()):
        if spec.get("audience") != "borrower" or not isinstance(spec.get("text"), str):
            continue
        text = Template(spec["text"]).safe_substitute(values)
        required = tuple((str(n), values[n]) for n in spec.get("requires") or [] if n in values)
        out.append(_Example("outbound", text, f"template {tid} ({language}) rendered", required, tid))
    return out


def _outbound_outcome(example: _Example, rules: list[OutboundRule]) -> str:
    found = scan(example.text, [r for r in rules if r.severity == "block"])
    if example.template is not None:
        found += content_violations(example.text, dict(example.required), example.template)
    warned = scan(example.text, [r for r in rules if r.severity == "warn"], severity="warn")
    blocked = sorted({v.rule for v in found})
    outcome = f"blocked by {', '.join(blocked)}" if blocked else "allowed"
    if warned:
        outcome += f", flagged by {', '.join(sorted({v.rule for v in warned}))} (warn)"
    return outcome


def _inbound_outcome(rule_set: Any, text: str) -> str:
    from service.replies.rules import EXAMPLES_RECEIVED_AT

    analysis = rule_set.analyze(text, EXAMPLES_RECEIVED_AT)
    data = analysis.model_dump(mode="json")
    settled = []
    for name in ("keyword", "loan_type", "timeline", "applied_elsewhere", "wrong_number", "not_interested",
                 "handoff_reasons", "callback_window"):
        value = data.get(name)
        if value in (None, [], "unknown") or (value is False and name != "applied_elsewhere"):
            continue
        shown = ",".join(str(v) for v in value) if isinstance(value, list) else str(value).lower()
        settled.append(f"{name}={shown}")
    outcome = f"sets {', '.join(settled)}" if settled else "nothing"
    if analysis.needs_llm:
        outcome += f", asks the LLM ({', '.join(str(u) for u in data.get('unsure') or [])})"
    return outcome


def _inbound_rule_set(loaded: _Loaded, side: Side) -> Any:
    from service.replies.rules import load_rules  # compiles hundreds of regexes: only when diffing

    if not any(f.header.kind == "inbound_rule" for f in loaded.files.values()):
        return None
    try:
        return load_rules(loaded.dir)
    except PolicyError as exc:
        side.problems.append(f"inbound examples not run on this side: {exc}")
        return None


def _outcomes(old: _Loaded, new: _Loaded, old_side: Side, new_side: Side) -> tuple[list[OutcomeChange], int]:
    outbound: dict[str, _Example] = {}
    for example in [*_outbound_examples(old), *_outbound_examples(new), *_rendered_templates(old),
                    *_rendered_templates(new)]:
        outbound.setdefault(f"{example.template}\0{example.text}\0{example.required}", example)
    changes: list[OutcomeChange] = []
    old_rules, new_rules = list(old.outbound.values()), list(new.outbound.values())
    for example in outbound.values():
        before, after = _outbound_outcome(example, old_rules), _outbound_outcome(example, new_rules)
        if before != after:
            changes.append(OutcomeChange("outbound", example.text, example.source, before, after))
    old_set, new_set = _inbound_rule_set(old, old_side), _inbound_rule_set(new, new_side)
    replies: dict[str, str] = {}
    for rule_set in (old_set, new_set):
        for _, rule_id, text, expected in rule_set.examples() if rule_set is not None else []:
            replies.setdefault(text, f"{rule_id} {'must_match' if expected else 'must_not_match'}")
    if old_set is not None and new_set is not None:
        for text, source in replies.items():
            before, after = _inbound_outcome(old_set, text), _inbound_outcome(new_set, text)
            if before != after:
                changes.append(OutcomeChange("inbound", text, source, before, after))
    return changes, len(outbound) + len(replies)


# --------------------------------------------------------------------------------------------- the diff
def diff_dirs(old_dir: Path, new_dir: Path, *, old_name: str = "OLD", new_name: str = "NEW",
              old_source: str | None = None, new_source: str | None = None) -> PolicyDiff:
    """Everything `policy diff` reports about two policies directories."""
    old, new = _load(old_dir), _load(new_dir)
    old_side = _side(old_name, old_source or f"directory {old_dir}", old)
    new_side = _side(new_name, new_source or f"directory {new_dir}", new)
    changes = [
        *_rules(old, new, "outbound_rule", "outbound rule", ("patterns", "allow"), _OUTBOUND_OWN),
        *_rules(old, new, "inbound_rule", "inbound rule", ("whole_message", "patterns", "ignore"), _INBOUND_OWN),
        *_templates(old, new),
        *_manifest(old, new),
        *_other_files(old, new),
    ]
    outcomes, examples = _outcomes(old, new, old_side, new_side)
    return PolicyDiff(old_side, new_side, changes, outcomes, examples)


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
        lines += ["", f"{head}{heading}"]
        for change in changes:
            lines.append(f"{item}{change.status} {change.id}: {change.title}")
            lines += [f"{sub}{detail}" for detail in change.details]
    if not result.changes:
        lines += ["", f"{head}No rule, template or policy file changed"]
    lines += ["", f"{head}Examples whose outcome changes ({len(result.outcomes)} of {result.examples_run} run "
              "under both sets)"]
    for outcome in result.outcomes:
        lines.append(f"{item}{outcome.kind} {_quoted(outcome.text)} ({outcome.source}): {outcome.old} -> {outcome.new}")
    if not result.outcomes:
        lines.append(f"{item}none")
    with_regexes = [c for c in result.changes if c.regexes_added or c.regexes_removed]
    if with_regexes:
        lines += ["", f"{head}Appendix: patterns (regular expressions) added and removed"]
        for change in with_regexes:
            lines.append(f"{item}{change.section} {change.id}")
            fence = "`" if markdown else ""
            lines += [f"{sub}+ {fence}{p}{fence}" for p in change.regexes_added]
            lines += [f"{sub}- {fence}{p}{fence}" for p in change.regexes_removed]
    return "\n".join(lines) + "\n"
