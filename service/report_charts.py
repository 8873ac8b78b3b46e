"""The sufficiency report's three charts, drawn on the server by pygal as SVG strings to inline in a page:
missed calls by hour of the week (a 7 x 24 grid of dots, area for the count), the funnel from missed call
to appointment (horizontal bars), and how long a person took to reach a missed-call lead (bars by bucket).

Nothing runs and nothing is fetched: pygal's `js` option (a script from its CDN) is empty, and a filter takes
out the inline config script pygal adds anyway, its tooltip layer (which only a script shows), and its comments.
A hover shows a native <title> instead. Each SVG keeps its own <style>, scoped to its fixed id; a page with a
strict CSP allows it by hash (service.report_render.style_sources). Each chart is role="img" with a <title> and
a <desc> that says in words what it shows; with nothing to show it says so ("No missed calls in this period").
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pygal
from pygal.etree import etree
from pygal.style import Style

from service.report_words import DAY_NAMES, DAYS

# pygal appends to sys.meta_path a finder without find_spec (it aliases pygal.maps.* plugins, which we do not
# use); Python 3.11 then warns (ImportWarning) on every later import that no other finder resolves, an error
# under the tests' filterwarnings. Take it out again.
sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, pygal.PluginImportFixer)]

# The console's ink and lines (service/web/static/console.css) on white; the dots and bars in a light blue, and
# "not reached" in a light orange, that the ink printed on them reads on (contrast above 8:1).
INK, MUTED, LINE = "#16181d", "#4a5160", "#c9ced8"
BLUE, ORANGE = "#8fb3ea", "#f0a35e"
PYGAL_CSS = ("file://style.css", "file://graph.css")  # pygal's own, kept; each chart adds one centring rule
FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'


def _style(colors: tuple[str, ...]) -> Style:
    return Style(
        background="#ffffff", plot_background="#ffffff", foreground=INK, foreground_strong=INK,
        foreground_subtle=MUTED, font_family=FONT, title_font_size=18, label_font_size=13,
        major_label_font_size=13, value_font_size=13, value_label_font_size=13, legend_font_size=13,
        tooltip_font_size=13, no_data_font_size=20, opacity="1", opacity_hover="1", stroke_opacity="1",
        stroke_opacity_hover="1", transition="0ms", guide_stroke_color=LINE, major_guide_stroke_color=LINE,
        colors=colors,
    )


@dataclass(frozen=True)
class Charts:
    """The three charts as SVG markup (safe to inline: pygal escapes every label)."""

    by_hour: str
    funnel: str
    time_to_human: str


def render_charts(report: dict[str, Any]) -> Charts:
    return Charts(by_hour=by_hour_chart(report["by_hour"]), funnel=funnel_chart(report["funnel"]),
                  time_to_human=time_to_human_chart(report["time_to_human_buckets"]))


def hour_label(day: str, hour: int) -> str:
    """("mon", 12) -> "Mon 12:00-13:00", as the verdict's windows are labelled."""
    return f"{DAY_NAMES.get(day, day)} {hour:02d}:00-{(hour + 1) % 24:02d}:00"


def by_hour_chart(rows: Sequence[dict[str, Any]]) -> str:
    """One row per day (Mon at the top), one column per hour; a dot's area is the number of missed calls
    (so 4 calls look twice as big as 2, not four times), the count printed in it; an empty hour has no dot."""
    chart = _chart(pygal.Dot, "by-hour", "Missed calls by hour of the week", width=960, height=400,
                   colors=(BLUE,) * len(DAYS), no_data="No missed calls in this period",
                   x_title="Hour the call came in (the broker's local time)")
    chart.x_labels = [f"{hour:02d}" for hour in range(24)]
    cells = {(row["day"], row["hour"]): row for row in rows}
    for day in DAYS:
        values = []
        for hour in range(24):
            row = cells.get((day, hour), {})
            missed = int(row.get("missed_calls") or 0)
            reached = int(row.get("reached_within_60m") or 0)
            tip = f"{hour_label(day, hour)}: {_count(missed, 'missed call')}, {reached} reached within 60 min"
            values.append({"value": math.sqrt(missed), "formatter": _constant(str(missed)), "tooltip": tip}
                          if missed else None)
        chart.add(DAY_NAMES[day], values)
    total = sum(int(row.get("missed_calls") or 0) for row in rows)
    busiest = max(rows, key=lambda row: int(row.get("missed_calls") or 0), default=None)
    summary = (f"{_count(total, 'missed call')} in all; the busiest hour was "
               f"{hour_label(busiest['day'], busiest['hour'])} with {busiest['missed_calls']}."
               if total and busiest else "No missed calls in this period.")
    return _finish(chart, "Dot chart: one row per day, Monday to Sunday, one column per hour, 00 to 23; "
                          f"a dot's area is the number of missed calls in that hour. {summary}")


def funnel_chart(steps: Sequence[dict[str, Any]]) -> str:
    """Each step's count as a bar, first step at the top; each later step's label has its share of the first."""
    first = int(steps[0]["count"]) if steps else 0
    labels = [f"{step['label']} ({_share(int(step['count']), first)})" if first and i else str(step["label"])
              for i, step in enumerate(steps)]
    chart = _chart(pygal.HorizontalBar, "funnel", "From missed call to appointment", width=720, height=320,
                   colors=(BLUE,), no_data="No missed-call leads in this period", x_title="Leads")
    chart.x_labels = list(reversed(labels))  # pygal draws the first label at the bottom
    counts = [int(step["count"]) for step in steps]
    chart.y_labels, chart.show_x_labels = _ticks(max(counts, default=0)), bool(first)  # x: values, when horizontal
    chart.add("Leads", list(reversed(counts)) if first else [None] * len(steps))
    summary = "; ".join(f"{step['label']}: {step['count']}" for step in steps)
    return _finish(chart, f"Bar chart of missed-call leads at each step. {summary}.")


def time_to_human_chart(buckets: Sequence[dict[str, Any]]) -> str:
    """Leads by how long a person took to reach them; "not reached" in the attention colour, as its own series."""
    reached = [int(b["count"]) if b["label"] != "not reached" else None for b in buckets]
    missing = [int(b["count"]) if b["label"] == "not reached" else None for b in buckets]
    total = sum(int(b["count"]) for b in buckets)
    chart = _chart(pygal.StackedBar, "time-to-human", "Time for a person to reach a missed-call lead", width=760,
                   height=340, colors=(BLUE, ORANGE), no_data="No missed-call leads in this period",
                   y_title="Leads", show_legend=True)
    chart.x_labels = [str(b["label"]) for b in buckets]
    chart.y_labels, chart.show_y_labels = _ticks(max((int(b["count"]) for b in buckets), default=0)), bool(total)
    chart.add("Reached by a person", reached if total else [None] * len(buckets))
    chart.add("Not reached", missing if total else [None] * len(buckets))
    summary = "; ".join(f"{b['label']}: {b['count']}" for b in buckets)
    return _finish(chart, f"Bar chart of {_count(total, 'missed-call lead')} by the time until a person reached "
                          f"them. {summary}.")


def _chart(kind: Callable[..., Any], name: str, title: str, *, width: int, height: int, colors: tuple[str, ...],
           no_data: str, show_legend: bool = False, **titles: str) -> Any:
    chart = kind(title=title, width=width, height=height, explicit_size=True, style=_style(colors), js=(),
                 disable_xml_declaration=True, show_legend=show_legend, legend_at_bottom=True,
                 print_values=True, print_zeroes=False, no_data_text=no_data, margin=16, truncate_label=-1,
                 css=(*PYGAL_CSS, f"inline:#chart-report-{name} .text-overlay text.value{{text-anchor:middle}}"),
                 **titles)
    chart.uuid = f"report-{name}"  # a fixed id (#chart-report-<name>): the same chart has the same <style>
    return chart


def _finish(chart: Any, description: str) -> str:
    chart.add_xml_filter(lambda root: _tidy(root, description))
    return str(chart.render(is_unicode=True))


def _tidy(root: Any, description: str) -> Any:
    """No script, no comments, no tooltip layer; role="img" labelled by its <title> and a <desc>."""
    for parent in list(root.iter()):
        for node in list(parent):
            if node.tag is etree.Comment or node.tag == "script" or "tooltip-overlay" in node.get("class", ""):
                parent.remove(node)
    chart_id = root.get("id")
    title = root.find("title")
    title.set("id", f"{chart_id}-title")
    desc = etree.Element("desc", id=f"{chart_id}-desc")
    desc.text = description
    root.insert(list(root).index(title) + 1, desc)
    root.set("role", "img")
    root.set("aria-labelledby", f"{chart_id}-title {chart_id}-desc")
    return root


def _constant(text: str) -> Callable[[object], str]:
    return lambda _value: text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _share(part: int, whole: int) -> str:
    return f"{round(100 * part / whole)}%"


def _ticks(top: int) -> list[int]:
    """Whole-number axis ticks, at most about 8: 0, 1, 2 ... or 0, 5, 10 ..."""
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 10**9) if top / s <= 8)
    return list(range(0, math.ceil(top / step) * step + 1, step)) if top else [0, 1]
