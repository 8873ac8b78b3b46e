"""`textback policy report`: the reviewer's report a compliance officer signs off, and policies/README.md.

The report is built once as blocks (service.policy.report_blocks) and written as Markdown, HTML or PDF
(service.policy.report_pdf), so every format says the same things. In order:

- a cover page: the policy-set version (service.policy.files.policy_version), its approval state
  (service.policy.approvals), when the report was made, and the brokers whose values fill the templates;
- per rule, in plain words: what it blocks or routes (`summary`), why (`rationale`), the law it cites
  (`cites`), its severity in words and its examples (inbound rules with many examples show the first few and
  the count of the rest);
- the sending policy (quiet hours per state with citations, caps, a person's own texts) as tables;
- every template rendered with each real broker's values from the brokers file, with its guard verdict;
- the open questions for counsel (`open_questions` of every file), in their own section;
- regular expressions only in the appendix. `internal_notes` are never shown.

Template verdicts use the rules' regex logic (`scan`) and the required-content check, so the report needs no
guardrails import; `policy check` and start-up run the real guard.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.brokers import BrokerConfig, load_brokers, template_values
from service.errors import ConfigError, PolicyError
from service.policy.approvals import ApprovalState, approval_state
from service.policy.files import LoadedRule, PolicyFile, outbound_rules, policy_version, read_policy_files
from service.policy.floor import FLOOR
from service.policy.guard import content_violations, scan
from service.policy.report_blocks import Block, to_html, to_markdown

README_COMMAND = "uv run textback policy report --write-readme"
APPROVE_COMMAND = 'textback policy approve --reviewer "NAME, TITLE" --note "..."'
EXAMPLE_BROKERS = "brokers.example.yaml"
TITLE = "textback policy set: reviewer's report"
# Inbound rules list hundreds of examples; the report shows the first few of each side and counts the rest
# (all of them are in the rule's file and run by `textback policy check`).
SHOWN_MATCH = 8
SHOWN_NOT_MATCH = 4

SEVERITY_WORDS = {
    "block": "block: a text that matches is never sent",
    "warn": "warn: a match is flagged and recorded, the text is not stopped",
    "high": "high: safety-critical (an opt-out, a wrong number, a topic that needs a person at once)",
    "medium": "medium: decides what the broker is told or what the conversation asks next",
    "low": "low: a hint or a convenience for reading replies",
}
# What an inbound rule does when it fires, by the field it sets (service.replies.analysis).
INBOUND_GROUPS: tuple[tuple[str, str, set[str]], ...] = (
    ("Opt-outs and carrier keywords", "keyword", {"keyword"}),
    ("Replies that go to a person", "handoff", {"handoff_reasons"}),
    ("Replies that close the lead", "close", {"wrong_number", "not_interested"}),
    ("What the broker is told", "facts", {"loan_type", "timeline", "applied_elsewhere", "callback_window"}),
    ("When the language model reads a reply", "llm", {"needs_llm"}),
)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_REGEX_KEYS = {
    "outbound_rule": (("patterns", "Blocked when any of these matches"),
                      ("allow", "Spans blanked out first (allowed)"),
                      ("define", "Named fragments, written ${name} above")),
    "inbound_rule": (("patterns", "Fires when any of these matches"),
                     ("ignore", "Spans blanked out first"),
                     ("define", "Named fragments, written ${name} above"),
                     ("extract", "The part copied to the broker")),
    "scope": (("define", "Named fragments, written ${name} below"),
              ("before", "Words before the match that put it in this scope"),
              ("after", "Words after the match that put it in this scope"),
              ("clause", "A clause that puts the match in this scope"),
              ("phrase", "A phrase that puts the match in this scope"),
              ("unless", "Unless the clause also says")),
}


@dataclass(frozen=True)
class BrokerSource:
    """The brokers file the templates are rendered with: its path, brokers, or why it could not be read."""

    path: Path
    brokers: tuple[BrokerConfig, ...]
    error: str | None = None

    @property
    def is_example(self) -> bool:
        return self.path.name == EXAMPLE_BROKERS

    @classmethod
    def read(cls, path: Path) -> BrokerSource:
        try:
            return cls(path, tuple(load_brokers(path)))
        except ConfigError as exc:
            return cls(path, (), str(exc))


@dataclass(frozen=True)
class Context:
    policies_dir: Path
    files: list[PolicyFile]
    loaded: list[LoadedRule]
    errors: list[str]
    version: str
    approval: ApprovalState | None
    approval_error: str | None
    brokers: BrokerSource
    generated: datetime


def _approval(policies_dir: Path) -> tuple[ApprovalState | None, str | None]:
    try:
        return approval_state(policies_dir), None
    except PolicyError as exc:
        return None, str(exc)


def _strip(text: str | None) -> str:
    return " ".join((text or "").split())


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _of_kind(files: Iterable[PolicyFile], *kinds: str) -> list[PolicyFile]:
    return [f for f in files if f.header.kind in kinds]


# ----------------------------------------------------------------------------------------------- cover
def _broker_line(broker: BrokerConfig) -> str:
    company = f", company NMLS {broker.company_nmls_id}" if broker.company_nmls_id else ""
    return f"{broker.name}, {broker.brokerage} (NMLS {broker.nmls_id}{company}), texting from {broker.twilio_number}"


def _cover(ctx: Context) -> list[Block]:
    blocks = [Block("h1", TITLE)]
    facts: list[tuple[str, str]] = [("Policy-set version", ctx.version)]
    state = ctx.approval
    if state is not None and state.latest is not None:
        latest = state.latest
        facts += [
            ("Approval state", f"APPROVED: {state.describe()}"),
            ("Approved by", latest.reviewer),
            ("Approved at", latest.approved_at.strftime("%Y-%m-%d %H:%M UTC")),
            ("Approval note", latest.note or "(none)"),
        ]
        if len(state.approvals) > 1:
            facts.append(("Approvals of this version", str(len(state.approvals))))
    else:
        facts.append(("Approval state", "NOT APPROVED"))
    facts.append(("Generated", ctx.generated.strftime("%Y-%m-%d %H:%M UTC")))
    source = ctx.brokers
    shipped = " (the shipped example file: sample brokers, not the brokerage's own)" if source.is_example else ""
    facts.append(("Brokers file", f"{source.path}{shipped}"))
    if source.error:
        facts.append(("Brokers covered", f"none: the brokers file could not be read ({source.error})"))
    else:
        facts.append(("Brokers covered", "; ".join(_broker_line(b) for b in source.brokers)))
    blocks.append(Block("facts", facts))
    if state is None or state.latest is None:
        why = f" ({ctx.approval_error})" if ctx.approval_error else ""
        blocks.append(Block(
            "alert",
            f"NOT APPROVED: no approval is recorded for policy-set version {ctx.version}{why}. After review, "
            f"record the sign-off of this exact version with `{APPROVE_COMMAND}`; any later change to a policy "
            "file makes a new version that needs its own approval.",
        ))
    if source.is_example:
        blocks.append(Block(
            "alert",
            f"The templates below are rendered with the shipped example brokers file ({EXAMPLE_BROKERS}), not a "
            "brokerage's own: run the report with --brokers (or TEXTBACK_BROKERS_FILE) before signing off.",
        ))
    inbound = _of_kind(ctx.files, "inbound_rule")
    questions = sum(len(f.header.open_questions) for f in ctx.files)
    blocks += [
        Block("p", "What this document is: every policy that decides what textback may text a borrower, how it "
              "reads a borrower's replies and when it sends, in plain words with the law each relies on and the "
              "examples it is tested with; every text rendered with each broker's real values; the questions "
              "still open for counsel; and, in an appendix, the exact patterns. The version is a content hash "
              "of every file under policies/ (the approvals record aside): editing any policy file changes it."),
        Block("list", [
            _count(len(ctx.files), "policy file"),
            f"{_count(len(ctx.loaded), 'outbound content rule')} with "
            f"{sum(len(r.rule.examples.must_match) for r in ctx.loaded)} examples blocked and "
            f"{sum(len(r.rule.examples.must_not_match) for r in ctx.loaded)} examples allowed",
            _count(len(inbound), "inbound reply rule"),
            _count(questions, "open question") + " for counsel",
        ]),
        Block("p", "Sections: 1 Outbound content rules. 2 Reading a borrower's replies. 3 Sending policy. "
              "4 Texts as sent, per broker. 5 Other policies. 6 Open questions for counsel. "
              "Appendix: regular expressions."),
    ]
    if ctx.errors:
        blocks += [Block("alert", "FINDINGS: some policy files could not be read; this report is incomplete."),
                   Block("list", ctx.errors)]
    return [*blocks, Block("pagebreak", "")]


# ----------------------------------------------------------------------------------------------- rules
def _about(policy: PolicyFile, severity: str | None) -> list[Block]:
    header = policy.header
    facts: list[tuple[str, str]] = [
        ("What it does", _strip(header.summary) or "(no summary: a finding of `textback policy check`)"),
        ("Why", _strip(header.rationale)),
    ]
    if header.cites:
        facts.append(("Law cited", "; ".join(header.cites)))
    if severity:
        facts.append(("Severity", SEVERITY_WORDS.get(severity, severity)))
    facts.append(("File", f"{policy.display} (id {header.id})"))
    blocks = [Block("h3", header.title.strip()), Block("facts", facts)]
    if header.open_questions:
        blocks.append(Block("p", f"Open questions for counsel on this policy: {len(header.open_questions)} "
                                 "(section 6)."))
    return blocks


def _examples(label_match: str, label_not: str, must_match: list[str], must_not: list[str],
              bound: bool) -> list[Block]:
    blocks: list[Block] = []
    for label, items, limit in ((label_match, must_match, SHOWN_MATCH), (label_not, must_not, SHOWN_NOT_MATCH)):
        if not items:
            continue
        shown = items[:limit] if bound else items
        rest = len(items) - len(shown)
        more = f" (first {len(shown)} of {len(items)} shown; all are in the file and run by `textback policy " \
               "check`)" if rest else ""
        blocks += [Block("p", f"{label}{more}:"), Block("list", [f"\u201c{t}\u201d" for t in shown])]
        if rest:
            blocks.append(Block("p", f"... and {rest} more."))
    return blocks


def _outbound(ctx: Context) -> list[Block]:
    manifest = {str(r.get("id")): str(r.get("min_severity"))
                for f in _of_kind(ctx.files, "outbound_manifest") for r in f.data.get("required") or []
                if isinstance(r, dict)}
    blocks = [
        Block("h2", "1 Outbound content rules: what a text to a borrower must never say"),
        Block("p", "Every text a borrower receives from textback is checked against these rules just before it "
              "is sent; a text a block rule matches is never sent and the broker is alerted. The examples are "
              "the rule's own tests: each blocked example must be stopped by this rule, each allowed example "
              "must pass every rule."),
        Block("table", [["rule", "blocks", "severity", "required by the manifest"]] + [
            [lr.rule.title.strip(), _count(len(lr.rule.examples.must_match), "example"), lr.rule.severity,
             f"yes, at least {manifest[lr.rule.id]}" if lr.rule.id in manifest else "no"]
            for lr in ctx.loaded
        ]),
    ]
    for lr in ctx.loaded:
        blocks += _about(lr.file, lr.rule.severity)
        if lr.rule.id in manifest:
            blocks.append(Block("p", f"Required by the compliance manifest at severity {manifest[lr.rule.id]} "
                                     "or stricter: the service does not start without it."))
        blocks += _examples("Examples it blocks", "Examples it allows", lr.rule.examples.must_match,
                            lr.rule.examples.must_not_match, bound=False)
    for policy in _of_kind(ctx.files, "outbound_manifest"):
        required = [r for r in policy.data.get("required") or [] if isinstance(r, dict)]
        blocks += [
            Block("h3", f"The compliance manifest: {policy.header.title.strip()}"),
            *_about(policy, None)[1:],
            Block("table", [["required rule", "minimum severity", "examples of the manifest's own"]] + [
                [str(r.get("id")), str(r.get("min_severity")), str(len(r.get("must_match") or []))]
                for r in required
            ]),
        ]
    blocks += [
        Block("h3", "The floor fixed in code"),
        Block("p", "Whatever the files say, the service refuses to start unless rules the manifest requires "
              "block each of these categories (service/policy/floor.py):"),
        Block("list", [f"{c.what} (for example \u201c{c.must_block[0]}\u201d)" for c in FLOOR]),
    ]
    return blocks


def _sets_words(data: dict[str, Any]) -> str:
    sets = data.get("sets") or {}
    field, value = sets.get("field"), sets.get("value")
    words: dict[tuple[Any, Any], str] = {
        ("keyword", "stop"): "stops all texting to the number (opt-out)",
        ("keyword", "start"): "resumes texting a number that opted out (opt-in)",
        ("keyword", "help"): "answers with the help text",
        ("wrong_number", True): "closes the lead as a wrong number",
        ("not_interested", True): "closes the lead as not interested",
        ("needs_llm", True): "asks the language model (with none, a person) to read the reply",
        ("needs_llm", False): "marks the reply as needing no further reading",
        ("applied_elsewhere", True): "tells the broker the borrower applied elsewhere",
        ("applied_elsewhere", False): "tells the broker the borrower has not applied elsewhere",
        ("callback_window", None): "tells the broker when to call, in the borrower's words",
    }
    if (field, value) in words:
        return words[(field, value)]
    if field == "handoff_reasons":
        return f"hands the conversation to a person (reason: {str(value).replace('_', ' ')})"
    return f"sets {str(field).replace('_', ' ')} to {str(value).replace('_', ' ')}"


def _inbound(ctx: Context) -> list[Block]:
    rules = _of_kind(ctx.files, "inbound_rule")
    blocks = [
        Block("h2", "2 Reading a borrower's replies"),
        Block("p", "textback reads each reply with these rules first; a language model, when one is configured, "
              "may only fill in what the rules left open, and never decides an opt-out, a rate lock, a closing "
              "or a deadline on its own. Inbound rules with many examples show the first "
              f"{SHOWN_MATCH} replies that fire the rule and the first {SHOWN_NOT_MATCH} that must not, with the "
              "count of the rest."),
    ]
    for heading, _key, fields in INBOUND_GROUPS:
        chosen = [f for f in rules if (f.data.get("sets") or {}).get("field") in fields]
        if not chosen:
            continue
        blocks += [Block("h3", heading), Block("table", [["rule", "when it fires, textback", "severity"]] + [
            [f.header.title.strip(), _sets_words(f.data), str(f.data.get("severity", ""))] for f in chosen
        ])]
        for policy in chosen:
            about = _about(policy, str(policy.data.get("severity", "")))
            blocks += [Block("h4", about[0].content), *about[1:]]
            blocks.append(Block("p", f"When it fires, textback {_sets_words(policy.data)}."))
            whole = policy.data.get("whole_message") or []
            if whole:
                blocks.append(Block("p", "Also fires when the whole reply is one of: " + ", ".join(whole) + "."))
            examples = policy.data.get("examples") or {}
            blocks += _examples("Replies that fire it", "Replies that must not", list(examples.get("must_match")
                                or []), list(examples.get("must_not_match") or []), bound=True)
    others = _of_kind(ctx.files, "scope", "spelling")
    if others:
        blocks += [
            Block("h3", "How replies are prepared before the rules read them"),
            Block("p", "Scopes keep a word in another sense, negated, in the past or inside an instruction from "
                  "sending a reply to a person (in the scope examples the bracketed word is the one covered); "
                  "spelling files correct typos of the words that matter."),
        ]
        for policy in others:
            about = _about(policy, None)
            blocks += [Block("h4", about[0].content), *about[1:]]
            words = policy.data.get("words") or []
            if words:
                blocks.append(Block("p", "Words corrected: " + ", ".join(str(w) for w in words) + "."))
            examples = policy.data.get("examples") or {}
            blocks += _examples("Covered", "Not covered", list(examples.get("must_match") or []),
                                list(examples.get("must_not_match") or []), bound=True)
    return blocks


def _window(value: Any) -> str:
    if value == "closed":
        return "closed"
    if isinstance(value, dict):
        return f"{value.get('start')} to {value.get('end')}"
    return str(value)


def _sending(ctx: Context) -> list[Block]:
    blocks = [Block("h2", "3 Sending policy: when textback may text, and how much")]
    for policy in _of_kind(ctx.files, "quiet_hours"):
        data = policy.data
        blocks += _about(policy, None)
        federal = data.get("federal") or {}
        rows = [["where", "automated texts allowed (local time)", "other days", "citation"],
                ["every state (federal)", _window(federal.get("window")), "", str(federal.get("citation", ""))]]
        for state, rule in sorted((data.get("states") or {}).items()):
            days = "; ".join(f"{day.capitalize()}: {_window(w)}" for day, w in
                             sorted((rule.get("days") or {}).items(), key=lambda kv: _WEEKDAYS.index(kv[0])))
            rows.append([state, _window(rule.get("window")), days, _strip(rule.get("citation"))])
        opener = ("The opener that answers a caller's own missed call is sent at once, even outside these hours, "
                  "as a reply to the caller's inquiry; every later automated text waits for the window."
                  if data.get("opener_is_reply") else
                  "Every automated text, the opener included, waits for the recipient's window.")
        blocks += [
            Block("p", "The window used is the narrowest of the federal and the state window, in the recipient's "
                  "local time (from the number's area code; the broker's time zone for a number without one). "
                  "An end time is exclusive: until 20:00 means the last text at 19:59."),
            Block("table", rows),
            Block("p", opener),
        ]
        examples = data.get("examples") or []
        if examples:
            blocks.append(Block("p", f"Tested with {_count(len(examples), 'example')} of local times and "
                                     "verdicts, run by `textback policy check`."))
    for policy in _of_kind(ctx.files, "caps"):
        blocks += _about(policy, None)
        limits = policy.data.get("limits") or {}
        blocks.append(Block("table", [["limit", "value", "why"]] + [
            [str(spec.get("title", name)), str(spec.get("value")), _strip(spec.get("rationale"))]
            for name, spec in limits.items() if isinstance(spec, dict)
        ]))
    for policy in _of_kind(ctx.files, "human_texts"):
        data = policy.data
        blocks += _about(policy, None)
        guard = {"block": "a text the output guard flags is never sent",
                 "warn": "the person sees what the guard found and must confirm; the override is recorded",
                 "off": "sent unchecked, still stored and audited"}
        quiet = {"hold": "the text is stored and sent when the borrower's window opens",
                 "refuse": "nothing is sent; the person is told when the window opens"}
        blocks.append(Block("table", [["setting", "value", "what it means"],
                                      ["output guard", str(data.get("guard")), guard.get(str(data.get("guard")), "")],
                                      ["quiet hours", str(data.get("quiet_hours")),
                                       quiet.get(str(data.get("quiet_hours")), "")]]))
        examples = data.get("examples") or {}
        blocks += _examples("Texts the guard flags", "Texts it lets through", list(examples.get("must_match") or []),
                            list(examples.get("must_not_match") or []), bound=False)
    return blocks


# ----------------------------------------------------------------------------------------------- templates
def _verdict(rendered: Any, rules: list[Any]) -> str:
    if rendered.audience != "borrower":
        return "Goes only to the broker's own team (never to a borrower); not checked by the borrower guard."
    found = scan(rendered.text, rules) + content_violations(rendered.text, rendered.required, rendered.template_id)
    if found:
        return "Guard verdict: BLOCKED by " + ", ".join(f"{v.rule} (\u201c{v.match}\u201d)" for v in found) + \
            ". This text would not be sent."
    required = "; ".join(f"{k.removesuffix('_es').replace('_', ' ')} \u201c{v}\u201d"
                         for k, v in sorted(rendered.required.items()))
    return "Guard verdict: allowed" + (f"; it says the required {required}" if required else "") + "."


def _templates(ctx: Context) -> list[Block]:
    blocks = [Block("h2", "4 Texts as sent, per broker")]
    try:
        template_set = importlib.import_module("service.templates").load_templates(ctx.policies_dir)
    except PolicyError as exc:
        return [*blocks, Block("alert", f"FINDING: the templates could not be loaded: {exc}")]
    source = ctx.brokers
    if source.error or not source.brokers:
        why = source.error or "it lists no brokers"
        return [*blocks, Block("alert", f"FINDING: no broker's values to render the templates with: {why}.")]
    rules = [lr.rule for lr in ctx.loaded]
    blocks.append(Block(
        "p", f"Every template, rendered with each broker's values from {source.path} (name, brokerage, NMLS IDs, "
        "number, booking link). Values that depend on the caller or the moment (the caller's number, the "
        "callback time and day, the borrower's words quoted in alerts, counts) are illustrative. Texts to a "
        "borrower are shown after conversion to the SMS character set, as they are sent.",
    ))
    for file in _of_kind(ctx.files, "templates"):
        blocks += _about(file, None)
    for broker in source.brokers:
        values = template_values(broker)
        blocks.append(Block("h3", f"{broker.name}, {broker.brokerage} (NMLS {broker.nmls_id})"))
        skipped: list[str] = []
        for rendered in template_set.sample_renders(values):
            if not broker.booking_url and "$booking_url" in _spec_text(template_set, rendered):
                skipped.append(rendered.template_id)
                continue
            audience = "to the borrower" if rendered.audience == "borrower" else "to the broker's team"
            language = ", in Spanish" if rendered.language == "es" else ""
            blocks += [Block("h4", f"{rendered.template_id} ({audience}{language})"),
                       Block("quote", rendered.text), Block("p", _verdict(rendered, rules))]
        if skipped:
            blocks.append(Block("p", f"Not sent for this broker (no booking link in the brokers file): "
                                     f"{', '.join(sorted(set(skipped)))}."))
    phrases = getattr(template_set, "phrases", {})
    if phrases:
        blocks += [Block("h3", "How each reason for a person reads inside an alert"),
                   Block("table", [["reason", "words in the alert"]] + [[k.replace("_", " "), v]
                                                                        for k, v in sorted(phrases.items())])]
    return blocks


def _spec_text(template_set: Any, rendered: Any) -> str:
    variant = template_set.variants.get(rendered.language, {}).get(rendered.template_id)
    spec = variant or template_set.templates[rendered.template_id]
    return str(spec.text)


# ----------------------------------------------------------------------------------------------- the rest
def _other(ctx: Context) -> list[Block]:
    chosen = [f for f in ctx.files if f.header.kind not in
              {"outbound_rule", "outbound_manifest", "inbound_rule", "scope", "spelling", "templates",
               "quiet_hours", "caps", "human_texts"}]
    blocks = [Block("h2", "5 Other policies")]
    if not chosen:
        return [*blocks, Block("p", "None.")]
    for policy in chosen:
        blocks += _about(policy, None)
        scalars = [[k.replace("_", " "), str(v)] for k, v in policy.data.items()
                   if k not in {"id", "kind", "title", "rationale", "summary", "cites", "open_questions",
                                "internal_notes", "examples"} and isinstance(v, str | int | float | bool)]
        if scalars:
            blocks.append(Block("table", [["setting", "value"], *scalars]))
    return blocks


def _questions(ctx: Context) -> list[Block]:
    blocks = [Block("h2", "6 Open questions for counsel"),
              Block("p", "What the policies do not yet decide, or decide provisionally, pending counsel's "
                    "answer. Each is recorded in its policy file (`open_questions`).")]
    asked = [f for f in ctx.files if f.header.open_questions]
    if not asked:
        return [*blocks, Block("p", "None recorded.")]
    for policy in asked:
        blocks += [Block("h3", f"{policy.header.title.strip()} ({policy.display})"),
                   Block("list", [_strip(q) for q in policy.header.open_questions])]
    return blocks


def _appendix(ctx: Context) -> list[Block]:
    blocks = [
        Block("pagebreak", ""),
        Block("h2", "Appendix: regular expressions"),
        Block("p", "The exact patterns behind the rules above, for the engineer or examiner who needs them. "
              "Patterns are case-insensitive Python regular expressions; ${name} stands for the named "
              "fragment listed with them."),
    ]
    order = list(_REGEX_KEYS)  # the report's order: outbound rules, inbound rules, scopes
    for policy in sorted((f for f in ctx.files if f.header.kind in _REGEX_KEYS),
                         key=lambda f: order.index(f.header.kind)):
        keys = _REGEX_KEYS.get(policy.header.kind)
        if not keys:
            continue
        parts: list[Block] = []
        for key, label in keys:
            value = policy.data.get(key)
            if not value:
                continue
            if isinstance(value, dict):
                text = "\n".join(f"{name}: {fragment}" for name, fragment in value.items())
            elif isinstance(value, list):
                text = "\n".join(f"{n}) {v}" for n, v in enumerate(value, 1))
            else:
                text = str(value)
            parts += [Block("p", f"{label}:"), Block("code", text)]
        if parts:
            blocks += [Block("h3", f"{policy.header.title.strip()} ({policy.display})"), *parts]
    return blocks


def report_context(policies_dir: Path, brokers_file: Path, *, now: datetime | None = None) -> Context:
    files, errors = read_policy_files(policies_dir)
    loaded, rule_errors = outbound_rules(files)
    approval, approval_error = _approval(policies_dir)
    return Context(
        policies_dir=policies_dir, files=files, loaded=loaded, errors=[str(e) for e in [*errors, *rule_errors]],
        version=policy_version(policies_dir), approval=approval, approval_error=approval_error,
        brokers=BrokerSource.read(brokers_file), generated=(now or datetime.now(UTC)).astimezone(UTC),
    )


def build_report(ctx: Context) -> list[Block]:
    """The reviewer's report as blocks: cover, rules, sending policy, texts per broker, questions, appendix."""
    return [*_cover(ctx), *_outbound(ctx), *_inbound(ctx), *_sending(ctx), *_templates(ctx), *_other(ctx),
            *_questions(ctx), *_appendix(ctx)]


def render_report(ctx: Context, fmt: str = "md") -> bytes:
    """The report in `fmt` (md, html, pdf) as bytes (UTF-8 for md and html)."""
    blocks = build_report(ctx)
    if fmt == "pdf":
        from service.policy.report_pdf import to_pdf  # lazy: fpdf2 only for the PDF

        return to_pdf(blocks, title=TITLE, footer=f"policy set {ctx.version}")
    text = to_html(blocks, f"{TITLE} ({ctx.version})") if fmt == "html" else to_markdown(blocks)
    return text.encode("utf-8")


def readme_text(policies_dir: Path) -> str:
    """policies/README.md: one table of every policy file, generated; what a reviewer reads first.

    Example counts are shown for outbound rules only, so editing another kind's examples does not make the
    table stale; the review report (`policy report`) has everything.
    """
    files, errors = read_policy_files(policies_dir)
    loaded, _ = outbound_rules(files)
    counts = {lr.rule.id: (lr.rule.severity, lr.rule.examples) for lr in loaded}
    rows = [["file", "id", "kind", "title", "severity", "examples"]]
    for policy in sorted(files, key=lambda f: f.display):
        severity, examples = "", ""
        if policy.header.id in counts:
            sev, ex = counts[policy.header.id]
            severity, examples = sev, f"{len(ex.must_match)} must_match, {len(ex.must_not_match)} must_not_match"
        else:
            data_severity = policy.data.get("severity")
            severity = str(data_severity) if isinstance(data_severity, str) else ""
        rows.append([policy.display.removeprefix("policies/"), policy.header.id, policy.header.kind,
                     policy.header.title.strip(), severity, examples])
    blocks = [
        Block("h1", "Policies"),
        Block(
            "p",
            "Everything textback may say or do is decided by the files in this folder. Each file has a "
            "plain-English title, a `summary` of what it blocks, routes or allows, a rationale, the laws it "
            "`cites`, any `open_questions` for counsel, and examples that CI runs (`uv run textback policy "
            "check`). The reviewer's report, with every rule in plain words, every template rendered with "
            "each broker's values and the patterns in an appendix, is `uv run textback policy report "
            "--format md|html|pdf --output review.pdf`.",
        ),
        Block(
            "p",
            "`outbound/required.yaml` is the compliance manifest: the outbound rules that must be in force, "
            "their minimum severity, and examples of its own that each rule must block. A required rule that "
            "is missing, renamed, downgraded or no longer blocks those examples, or a missing or empty "
            "manifest, fails `policy check` and stops the service from starting. At start-up the service also "
            "runs every example of every rule through its output guard (once per policy version, recorded "
            "under `TEXTBACK_GUARD_CACHE_DIR`) and refuses to start on any failure. The manifest is part of "
            "the policy-set version; changing it needs compliance sign-off.",
        ),
        Block(
            "p",
            "Whatever these files say, the guard must also block a floor of texts fixed in code "
            "(`service/policy/floor.py`: rate or APR quotes, payment amounts, repayment terms, loan "
            "products, approval promises, points and fees, down payments), each by a rule the manifest requires at "
            "`block`: deleting a rule file together with its manifest entry fails `policy check`, naming the "
            "category the policy set no longer covers.",
        ),
        Block("p", f"This table is generated; do not edit it by hand. Regenerate with `{README_COMMAND}`."),
        Block("table", rows),
    ]
    if errors:
        blocks += [Block("h2", "Files with errors"), Block("list", [str(e) for e in errors])]
    return to_markdown(blocks)
