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

Modules: report_context (the inputs, read once), report_rules (sections 1 and 2), report_texts (section 4),
report_blocks (Markdown, HTML), report_pdf (PDF); this module has the cover, the sending policy, the open
questions and the appendix, and puts them in order. policies/README.md is service.policy.readme.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.policy.report_blocks import Block, to_html, to_markdown
from service.policy.report_context import EXAMPLE_BROKERS, Context, count_of, of_kind, plain
from service.policy.report_rules import about, examples_blocks, inbound_section, outbound_section
from service.policy.report_texts import templates_section

if TYPE_CHECKING:
    from service.brokers import BrokerConfig

APPROVE_COMMAND = 'textback policy approve --reviewer "NAME, TITLE" --note "..."'
TITLE = "textback policy set: reviewer's report"
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
    inbound = of_kind(ctx.files, "inbound_rule")
    questions = sum(len(f.header.open_questions) for f in ctx.files)
    blocks += [
        Block("p", "What this document is: every policy that decides what textback may text a borrower, how it "
              "reads a borrower's replies and when it sends, in plain words with the law each relies on and the "
              "examples it is tested with; every text rendered with each broker's real values; the questions "
              "still open for counsel; and, in an appendix, the exact patterns. The version is a content hash "
              "of every file under policies/ (the approvals record aside): editing any policy file changes it."),
        Block("list", [
            count_of(len(ctx.files), "policy file"),
            f"{count_of(len(ctx.loaded), 'outbound content rule')} with "
            f"{sum(len(r.rule.examples.must_match) for r in ctx.loaded)} examples blocked and "
            f"{sum(len(r.rule.examples.must_not_match) for r in ctx.loaded)} examples allowed",
            count_of(len(inbound), "inbound reply rule"),
            count_of(questions, "open question") + " for counsel",
        ]),
        Block("p", "Sections: 1 Outbound content rules. 2 Reading a borrower's replies. 3 Sending policy. "
              "4 Texts as sent, per broker. 5 Other policies. 6 Open questions for counsel. "
              "Appendix: regular expressions."),
    ]
    if ctx.errors:
        blocks += [Block("alert", "FINDINGS: some policy files could not be read; this report is incomplete."),
                   Block("list", ctx.errors)]
    return [*blocks, Block("pagebreak", "")]


def _window(value: Any) -> str:
    if value == "closed":
        return "closed"
    if isinstance(value, dict):
        return f"{value.get('start')} to {value.get('end')}"
    return str(value)


def _sending(ctx: Context) -> list[Block]:
    blocks = [Block("h2", "3 Sending policy: when textback may text, and how much")]
    for policy in of_kind(ctx.files, "quiet_hours"):
        data = policy.data
        blocks += about(policy, None)
        federal = data.get("federal") or {}
        rows = [["where", "automated texts allowed (local time)", "other days", "citation"],
                ["every state (federal)", _window(federal.get("window")), "", str(federal.get("citation", ""))]]
        for state, rule in sorted((data.get("states") or {}).items()):
            days = "; ".join(f"{day.capitalize()}: {_window(w)}" for day, w in
                             sorted((rule.get("days") or {}).items(), key=lambda kv: _WEEKDAYS.index(kv[0])))
            rows.append([state, _window(rule.get("window")), days, plain(rule.get("citation"))])
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
            blocks.append(Block("p", f"Tested with {count_of(len(examples), 'example')} of local times and "
                                     "verdicts, run by `textback policy check`."))
    for policy in of_kind(ctx.files, "caps"):
        blocks += about(policy, None)
        limits = policy.data.get("limits") or {}
        blocks.append(Block("table", [["limit", "value", "why"]] + [
            [str(spec.get("title", name)), str(spec.get("value")), plain(spec.get("rationale"))]
            for name, spec in limits.items() if isinstance(spec, dict)
        ]))
    for policy in of_kind(ctx.files, "human_texts"):
        data = policy.data
        blocks += about(policy, None)
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
        blocks += examples_blocks("Texts the guard flags", "Texts it lets through", list(examples.get("must_match") or []),
                            list(examples.get("must_not_match") or []), bound=False)
    for policy in of_kind(ctx.files, "opt_out"):
        scope = str(policy.data.get("scope"))
        blocks += about(policy, None)
        blocks.append(Block("table", [["scope", "a STOP to one broker's number stops texts from", "in force"]] + [
            [name, what, "yes" if name == scope else ""] for name, what in _OPT_OUT_SCOPES.items()]))
    return blocks


_OPT_OUT_SCOPES = {
    "broker": "that broker's number only",
    "brokerage": "every broker of the same brokerage (same company NMLS ID, else the same brokerage name)",
    "all": "every number this textback serves",
}


def _retention(policy: Any) -> list[Block]:
    rows = [["records", "kept", "on a request to be forgotten", "why", "law"]]
    for category in policy.data.get("categories") or []:
        if not isinstance(category, dict):
            continue
        months = category.get("keep_months")
        kept = f"{months} months after the last activity" if months else str(category.get("keep", "")).replace("-", " ")
        rows.append([str(category.get("title", category.get("id"))), kept,
                     str(category.get("on_forget", "")), plain(category.get("why")),
                     "; ".join(plain(c) for c in category.get("citations") or [])])
    return [Block("table", rows)]


# ----------------------------------------------------------------------------------------------- the rest
def _other(ctx: Context) -> list[Block]:
    chosen = [f for f in ctx.files if f.header.kind not in
              {"outbound_rule", "outbound_manifest", "inbound_rule", "scope", "spelling", "templates",
               "quiet_hours", "caps", "human_texts", "opt_out"}]
    blocks = [Block("h2", "5 Other policies")]
    if not chosen:
        return [*blocks, Block("p", "None.")]
    for policy in chosen:
        blocks += about(policy, None)
        if policy.header.kind == "retention":
            blocks += _retention(policy)
            continue
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
                   Block("list", [plain(q) for q in policy.header.open_questions])]
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


def build_report(ctx: Context) -> list[Block]:
    """The reviewer's report as blocks: cover, rules, sending policy, texts per broker, questions, appendix."""
    return [*_cover(ctx), *outbound_section(ctx), *inbound_section(ctx), *_sending(ctx), *templates_section(ctx), *_other(ctx),
            *_questions(ctx), *_appendix(ctx)]


def render_report(ctx: Context, fmt: str = "md") -> bytes:
    """The report in `fmt` (md, html, pdf) as bytes (UTF-8 for md and html)."""
    blocks = build_report(ctx)
    if fmt == "pdf":
        from service.policy.report_pdf import to_pdf  # lazy: fpdf2 only for the PDF

        return to_pdf(blocks, title=TITLE, footer=f"policy set {ctx.version}")
    text = to_html(blocks, f"{TITLE} ({ctx.version})") if fmt == "html" else to_markdown(blocks)
    return text.encode("utf-8")
