"""The reviewer's report, sections 1 and 2: every outbound and inbound rule (and the scopes and spelling files
that prepare replies) in plain words: what it blocks or routes, why, the law it cites, its severity in words and
its examples, bounded for inbound rules with many of them."""

from __future__ import annotations

from typing import Any

from service.policy.files import PolicyFile
from service.policy.floor import FLOOR
from service.policy.report_blocks import Block
from service.policy.report_context import Context, count_of, of_kind, plain

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


def about(policy: PolicyFile, severity: str | None) -> list[Block]:
    header = policy.header
    facts: list[tuple[str, str]] = [
        ("What it does", plain(header.summary) or "(no summary: a finding of `textback policy check`)"),
        ("Why", plain(header.rationale)),
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


def examples_blocks(label_match: str, label_not: str, must_match: list[str], must_not: list[str],
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


def outbound_section(ctx: Context) -> list[Block]:
    manifest = {str(r.get("id")): str(r.get("min_severity"))
                for f in of_kind(ctx.files, "outbound_manifest") for r in f.data.get("required") or []
                if isinstance(r, dict)}
    blocks = [
        Block("h2", "1 Outbound content rules: what a text to a borrower must never say"),
        Block("p", "Every text a borrower receives from textback is checked against these rules just before it "
              "is sent; a text a block rule matches is never sent and the broker is alerted. The examples are "
              "the rule's own tests: each blocked example must be stopped by this rule, each allowed example "
              "must pass every rule."),
        Block("table", [["rule", "blocks", "severity", "required by the manifest"]] + [
            [lr.rule.title.strip(), count_of(len(lr.rule.examples.must_match), "example"), lr.rule.severity,
             f"yes, at least {manifest[lr.rule.id]}" if lr.rule.id in manifest else "no"]
            for lr in ctx.loaded
        ]),
    ]
    for lr in ctx.loaded:
        blocks += about(lr.file, lr.rule.severity)
        if lr.rule.id in manifest:
            blocks.append(Block("p", f"Required by the compliance manifest at severity {manifest[lr.rule.id]} "
                                     "or stricter: the service does not start without it."))
        blocks += examples_blocks("Examples it blocks", "Examples it allows", lr.rule.examples.must_match,
                            lr.rule.examples.must_not_match, bound=False)
    for policy in of_kind(ctx.files, "outbound_manifest"):
        required = [r for r in policy.data.get("required") or [] if isinstance(r, dict)]
        blocks += [
            Block("h3", f"The compliance manifest: {policy.header.title.strip()}"),
            *about(policy, None)[1:],
            Block("table", [["required rule", "minimum severity", "examples of the manifest's own"]] + [
                [str(r.get("id")), str(r.get("min_severity")), str(len(r.get("must_match") or []))]
                for r in required
            ]),
        ]
    blocks += [
        Block("h3", "The floor fixed in code"),
        Block("p", "Whatever the files say, the service refuses to start unless rules the manifest requires "
              "block each of these categories:"),
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


def inbound_section(ctx: Context) -> list[Block]:
    rules = of_kind(ctx.files, "inbound_rule")
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
            parts = about(policy, str(policy.data.get("severity", "")))
            blocks += [Block("h4", parts[0].content), *parts[1:]]
            blocks.append(Block("p", f"When it fires, textback {_sets_words(policy.data)}."))
            whole = policy.data.get("whole_message") or []
            if whole:
                blocks.append(Block("p", "Also fires when the whole reply is one of: " + ", ".join(whole) + "."))
            examples = policy.data.get("examples") or {}
            blocks += examples_blocks("Replies that fire it", "Replies that must not", list(examples.get("must_match")
                                or []), list(examples.get("must_not_match") or []), bound=True)
    others = of_kind(ctx.files, "scope", "spelling")
    if others:
        blocks += [
            Block("h3", "How replies are prepared before the rules read them"),
            Block("p", "Scopes keep a word in another sense, negated, in the past or inside an instruction from "
                  "sending a reply to a person (in the scope examples the bracketed word is the one covered); "
                  "spelling files correct typos of the words that matter."),
        ]
        for policy in others:
            parts = about(policy, None)
            blocks += [Block("h4", parts[0].content), *parts[1:]]
            words = policy.data.get("words") or []
            if words:
                blocks.append(Block("p", "Words corrected: " + ", ".join(str(w) for w in words) + "."))
            examples = policy.data.get("examples") or {}
            blocks += examples_blocks("Covered", "Not covered", list(examples.get("must_match") or []),
                                list(examples.get("must_not_match") or []), bound=True)
    return blocks
