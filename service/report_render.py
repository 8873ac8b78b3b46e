"""The sufficiency report ("Is text-back enough?") as a broker reads it: plain text for the terminal, one
standalone HTML file to forward (its CSS inlined, charts inline SVG, nothing fetched, no script), or a fragment
for the console's report page. Renders a report dict (service.report.build_report); computes no figure.

Templates (service/web/templates, autoescaped): `_report.html` is the fragment, `report_standalone.html` the
file, `report.html` the console page (base.html around the fragment; context: report_context()). The charts
carry their own <style>: a page whose CSP allows only 'self' styles must list style_sources() in style-src.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import textwrap
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from service import report_words as say
from service.report_words import DAY_NAMES, DAYS

WEB = Path(__file__).resolve().parent / "web"
WIDTH = 78
_STYLE = re.compile(r"<style\b[^>]*>(.*?)</style>", re.DOTALL | re.IGNORECASE)


def render_text(report: dict[str, Any]) -> str:
    """The verdict first, then the hours to cover, every figure with its unit, and the week as a grid."""
    lines = [f"Is text-back enough? {say.headline(report)}.", *_wrap(report["verdict"]["reason"]), ""]
    lines += [say.period(report), *say.brokers(report), f"Generated {say.generated(report)}", ""]
    lines += [*_wrap("How to read this: " + say.rule_sentence(report)), ""]
    lines.append("Hours to cover")
    for label, words in say.windows(report):
        lines += _wrap(f"{label}: {words}", indent="  ")
    if not report["verdict"]["windows"]:
        lines.append("  No hour stands out in this period.")
    for section in say.figures(report):
        lines += ["", section.title]
        for label, words in section.rows:
            lines += _wrap(f"{label}: {words}", indent="  ")
    lines += ["", f"Missed calls by hour of the week. {say.zone_note(report)}"]
    lines += week_grid(report["by_hour"]) if report["missed_calls"] else ["  No missed calls in this period."]
    return "\n".join(lines) + "\n"


def week_grid(rows: list[dict[str, Any]]) -> list[str]:
    """Seven lines, Mon to Sun, of 24 counts ("." for none) under an hour header: 77 characters wide while
    no hour has 100 missed calls, wider after."""
    cells = {(row["day"], row["hour"]): int(row.get("missed_calls") or 0) for row in rows}
    width = max([2, *(len(str(n)) for n in cells.values())]) + 1
    header = "     " + "".join(f"{hour:02d}".rjust(width) for hour in range(24))
    return [header] + [
        f"  {DAY_NAMES[day]}" + "".join(str(cells.get((day, hour)) or ".").rjust(width) for hour in range(24))
        for day in DAYS
    ]


def render_html(report: dict[str, Any], *, standalone: bool) -> str:
    """One HTML file to forward (standalone), or the fragment for a console page."""
    context = report_context(report)
    if standalone:
        css = (WEB / "static" / "console.css").read_text(encoding="utf-8")
        context["css"] = Markup(css)  # noqa: S704 - our own stylesheet, inlined as it is (no "</style" in it)
    return _env().get_template("report_standalone.html" if standalone else "_report.html").render(**context)


def report_context(report: dict[str, Any]) -> dict[str, Any]:
    """What _report.html (and report.html, report_standalone.html) needs, worded; the charts as Markup."""
    from service.report_charts import render_charts  # lazy: pygal and lxml (~0.17 s) load on the first report

    charts = render_charts(report)
    svgs = {"by_hour": charts.by_hour, "funnel": charts.funnel, "time_to_human": charts.time_to_human}
    verdict = report["verdict"]
    return {
        "enough": verdict.get("enough"),
        "headline": say.headline(report),
        "reason": verdict["reason"],
        "how_to_read": say.rule_sentence(report),
        "policy_version": verdict.get("policy_version") or "",
        "period": say.period(report),
        "generated": say.generated(report),
        "brokers": say.brokers(report),
        "zone_note": say.zone_note(report),
        "windows": say.windows(report),
        "sections": say.figures(report),
        "charts": {name: Markup(svg) for name, svg in svgs.items()},  # noqa: S704 - lxml escaped every label
        "style_sources": style_sources("".join(svgs.values())),
    }


def style_sources(markup: str) -> list[str]:
    """CSP hash sources ("'sha256-...'") for each <style> in an HTML page or fragment, to add to style-src.

    A browser hashes the text it parsed: inside an inline <svg> the HTML parser decodes entities (pygal writes
    `>` as `&gt;`), while a <style> in the head is raw text. Hashes of the same text are listed once.
    """
    sources: list[str] = []
    for match in _STYLE.finditer(markup):
        before = markup[: match.start()].lower()
        in_svg = before.rfind("<svg") > before.rfind("</svg")
        text = html.unescape(match.group(1)) if in_svg else match.group(1)
        digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
        if f"'sha256-{digest}'" not in sources:
            sources.append(f"'sha256-{digest}'")
    return sources


@cache
def _env() -> Environment:
    return Environment(loader=FileSystemLoader(WEB / "templates"), autoescape=True, undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True)


def _wrap(text: str, *, indent: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ") or [indent]
