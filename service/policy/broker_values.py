"""The brokers file's own values through the output guard: at start-up and in `policy check`.

A broker's name, brokerage, NMLS IDs, Twilio number and booking link are written into borrower texts, so they
are as much a part of what a borrower reads as the templates. Each value is checked alone (so a finding can
name the line that holds it) and then every borrower template is rendered with that broker's values and
checked as it would be sent. The guard decodes links (percent-escapes, path and query words), so
``booking_url: https://book.example.com/?promo=6%25APR`` is a rate quote like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.brokers import TEMPLATE_FIELDS, BrokerConfig, field_lines, template_values


def _describe(violations: list[Any]) -> str:
    return ", ".join(f"{v.rule} (\"{v.match}\")" for v in violations)


def broker_findings(guard: Any, templates: Any, brokers: list[BrokerConfig], path: Path) -> list[str]:
    """One line per problem, each starting `<file>:<line>: brokers[i].<key>:`. `templates` may be None."""
    lines = field_lines(path)
    findings: list[str] = []
    # A template that fails with sample data is the template's problem, reported against the template file.
    broken = {r.template_id for r in _borrower_renders(templates, None) if not _verdict(guard, r).allowed}
    for index, broker in enumerate(brokers):
        at = lines[index] if index < len(lines) else {}
        values = template_values(broker)
        before = len(findings)
        for name, key in TEMPLATE_FIELDS.items():
            if not values[name]:
                continue
            verdict = guard.check(values[name])
            if not verdict.allowed:
                findings.append(
                    f"{path}:{at.get(key, at.get('', 1))}: brokers[{index}].{key}: {values[name]!r} was blocked by "
                    f"the output guard: {_describe(verdict.violations)}"
                )
        if templates is None or len(findings) > before:
            continue  # a blocked value blocks its templates too: one finding, on the value's line
        for rendered in _borrower_renders(templates, values):
            verdict = _verdict(guard, rendered)
            if not verdict.allowed and rendered.template_id not in broken:
                findings.append(
                    f"{path}:{at.get('', 1)}: brokers[{index}] ({broker.name}): template {rendered.template_id} "
                    f"rendered with this broker's values was blocked by {_describe(verdict.violations)}"
                )
    return findings


def _borrower_renders(templates: Any, values: dict[str, str] | None) -> list[Any]:
    if templates is None:
        return []
    return [r for r in templates.sample_renders(values) if r.audience == "borrower"]


def _verdict(guard: Any, rendered: Any) -> Any:
    return guard.check(rendered.text, required=rendered.required, template=rendered.template_id)
