"""`textback policy report`: the review document a compliance officer signs off, and policies/README.md.

The report is built once as a small list of blocks (headings, paragraphs, tables, lists, code) and written
as Markdown or HTML, so both formats always say the same thing. It uses the rules' regex logic (`scan`)
for template verdicts, so it needs no guardrails import; `policy check` runs the real guard.
"""

from __future__ import annotations

import html
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from service.errors import PolicyError
from service.policy.files import PolicyFile, outbound_rules, policy_version, read_policy_files
from service.policy.guard import content_violations, scan

README_COMMAND = "uv run textback policy report --write-readme"
HEADER_KEYS = {"id", "kind", "title", "rationale"}
KIND_TITLES = {
    "outbound_rule": "outbound content rule",
    "outbound_manifest": "required outbound rules (compliance manifest)",
    "inbound_rule": "inbound reply rule",
    "templates": "template set",
    "quiet_hours": "quiet hours",
    "caps": "sending caps",
    "human_texts": "a person's own texts",
}


@dataclass(frozen=True)
class Block:
    kind: str  # h1 h2 h3 p table list code quote
    content: Any


def _md_cell(value: str) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        if block.kind in {"h1", "h2", "h3"}:
            out.append("#" * int(block.kind[1]) + " " + block.content)
        elif block.kind == "p":
            out.append(block.content)
        elif block.kind == "quote":
            out.append("> " + block.content.replace("\n", "\n> "))
        elif block.kind == "code":
            out.append("```\n" + block.content.rstrip("\n") + "\n```")
        elif block.kind == "list":
            out.append("\n".join(f"- {item}" for item in block.content))
        elif block.kind == "table":
            header, *rows = block.content
            lines = ["| " + " | ".join(_md_cell(c) for c in header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[Block], title: str) -> str:
    esc = html.escape
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px;text-align:left}code,pre{background:#f4f4f4}</style>",
        "</head><body>",
    ]
    for block in blocks:
        if block.kind in {"h1", "h2", "h3"}:
            out.append(f"<{block.kind}>{esc(block.content)}</{block.kind}>")
        elif block.kind == "p":
            out.append(f"<p>{esc(block.content)}</p>")
        elif block.kind == "quote":
            out.append(f"<blockquote>{esc(block.content)}</blockquote>")
        elif block.kind == "code":
            out.append(f"<pre><code>{esc(block.content)}</code></pre>")
        elif block.kind == "list":
            out.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in block.content) + "</ul>")
        elif block.kind == "table":
            header, *rows = block.content
            head = "".join(f"<th>{esc(str(c))}</th>" for c in header)
            body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _other_keys(policy: PolicyFile) -> str:
    rest = {k: v for k, v in policy.data.items() if k not in HEADER_KEYS}
    return yaml.safe_dump(rest, sort_keys=False, allow_unicode=True, width=100)


def _template_blocks(policies_dir: Path, rules: list[Any]) -> list[Block]:
    blocks = [Block("h2", "Templates, rendered with sample broker data")]
    try:
        module = importlib.import_module("service.templates")
        template_set = module.load_templates(policies_dir)
        renders = template_set.sample_renders()
    except ModuleNotFoundError:
        missing = "FINDING: service.templates is missing; templates could not be rendered."
        return [*blocks, Block("p", missing)]
    except PolicyError as exc:
        return [*blocks, Block("p", f"FINDING: {exc}")]
    blocks.append(
        Block(
            "p",
            "Borrower texts are checked against the outbound rules and must contain their required values; "
            "broker alerts go only to the broker's own numbers and are not checked by the borrower guard.",
        )
    )
    for rendered in renders:
        language = getattr(rendered, "language", "en")
        heading = f"{rendered.template_id} (to the {rendered.audience}{', in Spanish' if language == 'es' else ''})"
        blocks.append(Block("h3", heading))
        blocks.append(Block("quote", rendered.text))
        if rendered.audience == "borrower":
            found = scan(rendered.text, rules) + content_violations(
                rendered.text, rendered.required, rendered.template_id
            )
            required = ", ".join(f"{k} = {v}" for k, v in sorted(rendered.required.items())) or "none"
            verdict = "passes the outbound rules" if not found else "BLOCKED: " + ", ".join(
                f"{v.rule} ({v.match})" for v in found
            )
            blocks.append(Block("list", [f"Required values: {required}", f"Verdict: {verdict}"]))
    phrases = getattr(template_set, "phrases", {})
    if phrases:
        blocks.append(Block("h3", "Phrases: how each reason for a person reads inside an alert"))
        blocks.append(Block("list", [f"{key}: {text}" for key, text in sorted(phrases.items())]))
    return blocks


def _manifest_blocks(files: list[PolicyFile]) -> list[Block]:
    blocks = [Block("h2", "Required outbound rules (compliance manifest)")]
    manifests = [f for f in files if f.header.kind == "outbound_manifest"]
    if not manifests:
        return [*blocks, Block("p", "FINDING: policies/outbound/required.yaml is missing; the service will not start.")]
    for policy in manifests:
        required = policy.data.get("required") or []
        blocks += [
            Block("p", f"File: {policy.display}. Owner: {policy.data.get('owner', '?')}."),
            Block("p", f"Rationale: {policy.header.rationale.strip()}"),
            Block("table", [["rule", "minimum severity", "manifest examples"]] + [
                [str(r.get("id")), str(r.get("min_severity")), len(r.get("must_match") or [])]
                for r in required if isinstance(r, dict)
            ]),
        ]
    return blocks


def build_report(policies_dir: Path) -> list[Block]:
    """The review document as blocks: version, outbound rules, templates, inbound rules, sending policy."""
    files, errors = read_policy_files(policies_dir)
    loaded, rule_errors = outbound_rules(files)
    rules = [lr.rule for lr in loaded]
    version = policy_version(policies_dir)
    blocks = [
        Block("h1", "textback policy set: review for sign-off"),
        Block("p", f"Policy set version: {version} (a content hash of every file under policies/)."),
        Block(
            "p",
            f"{len(files)} policy files; {len(loaded)} outbound content rules with "
            f"{sum(len(r.examples.must_match) for r in rules)} must_match and "
            f"{sum(len(r.examples.must_not_match) for r in rules)} must_not_match examples. Every text a borrower "
            "receives passes the output guard built from these rules; a blocked text is never sent.",
        ),
    ]
    if errors or rule_errors:
        blocks += [Block("h2", "Findings"), Block("list", [str(e) for e in [*errors, *rule_errors]])]

    blocks.append(Block("h2", "Outbound content rules"))
    table: list[list[object]] = [["id", "title", "severity", "patterns", "must_match", "must_not_match", "file"]]
    table += [
        [r.rule.id, r.rule.title, r.rule.severity, len(r.rule.patterns), len(r.rule.examples.must_match),
         len(r.rule.examples.must_not_match), r.file.display]
        for r in loaded
    ]
    blocks.append(Block("table", table))
    for lr in loaded:
        rule = lr.rule
        blocks += [
            Block("h3", f"{rule.title} ({rule.id})"),
            Block("p", f"Severity: {rule.severity}. File: {lr.file.display}."),
            Block("p", f"Rationale: {rule.rationale.strip()}"),
            Block("p", "Patterns (case-insensitive regular expressions):"),
            Block("code", "\n".join(rule.patterns)),
        ]
        if rule.allow:
            blocks += [
                Block("p", "Allowed spans (ignored before matching):"),
                Block("code", "\n".join(rule.allow)),
            ]
        if rule.define:
            blocks += [
                Block("p", "Named fragments (written ${name} in the patterns above):"),
                Block("code", "\n".join(f"{name}: {fragment}" for name, fragment in rule.define.items())),
            ]
        blocks += [
            Block("p", "Must match (blocked by this rule):"),
            Block("list", rule.examples.must_match),
            Block("p", "Must not match (passes the whole guard):"),
            Block("list", rule.examples.must_not_match),
        ]

    blocks += _manifest_blocks(files)
    blocks += _template_blocks(policies_dir, rules)

    others = (("Inbound reply rules", {"inbound_rule"}), ("Sending policy", {"quiet_hours", "caps", "human_texts"}))
    for heading, kinds in others:
        chosen = [f for f in files if f.header.kind in kinds]
        blocks.append(Block("h2", heading))
        if not chosen:
            blocks.append(Block("p", "No files of this kind."))
        for policy in chosen:
            blocks += [
                Block("h3", f"{policy.header.title} ({policy.header.id})"),
                Block("p", f"Kind: {KIND_TITLES[policy.header.kind]}. File: {policy.display}."),
                Block("p", f"Rationale: {policy.header.rationale.strip()}"),
                Block("code", _other_keys(policy)),
            ]
    return blocks


def render_report(policies_dir: Path, fmt: str = "md") -> str:
    blocks = build_report(policies_dir)
    if fmt == "html":
        return to_html(blocks, "textback policy set review")
    return to_markdown(blocks)


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
            "plain-English title, a rationale citing the rule it serves, and examples that CI runs "
            "(`uv run textback policy check`). The full review document, with every pattern, example and "
            "rendered template, is `uv run textback policy report --output review.md`.",
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
