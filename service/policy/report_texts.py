"""The reviewer's report, section 4: every template rendered with each real broker's values from the brokers
file, with its guard verdict. Verdicts use the rules' regex logic (`scan`) and the required-content check, so
no guardrails import is needed; `policy check` and start-up run the real guard."""

from __future__ import annotations

import importlib
from typing import Any

from service.brokers import template_values
from service.errors import PolicyError
from service.policy.report_blocks import Block
from service.policy.report_context import Context, of_kind
from service.policy.report_rules import about
from service.policy.verdicts import content_violations, scan


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


def templates_section(ctx: Context) -> list[Block]:
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
    for file in of_kind(ctx.files, "templates"):
        blocks += about(file, None)
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
