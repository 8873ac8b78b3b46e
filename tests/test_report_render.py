"""The sufficiency report as a broker reads it: the terminal text, the standalone HTML file and the console
fragment, with the real pygal charts and the real Jinja2 templates (report dicts from tests/report_fixtures.py).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import xml.etree.ElementTree as ET

import pygal
import pytest

from service import report_words as say
from service.report_charts import by_hour_chart, funnel_chart, render_charts, time_to_human_chart
from service.report_render import render_html, render_text, report_context, style_sources
from service.web.pages import TEMPLATES
from tests.report_fixtures import empty_report, not_enough_report, sample_report

SVG = "{http://www.w3.org/2000/svg}"
DAY_LABELS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
NAMESPACES = {'xmlns="http://www.w3.org/2000/svg"', 'xmlns:xlink="http://www.w3.org/1999/xlink"'}


def svgs(html: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", html, re.DOTALL)


def texts(svg: str) -> list[str]:
    return [node.text or "" for node in ET.fromstring(svg).iter(f"{SVG}text")]


# ---------------------------------------------------------------------------------------------------------
# Text


def test_render_text_puts_the_verdict_first_then_the_figures_with_units() -> None:
    text = render_text(sample_report())
    lines = text.splitlines()
    assert lines[0] == "Is text-back enough? Yes."
    assert lines[1].startswith("Enough: 32 of 40 missed-call leads (80%)")
    for expected in (
        "Calls in: 120 (74 answered; 46 missed, 38% of calls)",
        "Missed-call leads: 40 (31 in office hours, 9 out of hours)",
        "Openers: 38 sent of 38 queued, 37 delivered, 1 failed",
        "Replies: 22 (reply rate 58%)",
        "Time to first reply: median 3 min, 90th percentile 25 min",
        "Reached by a person: 34 of 40 missed-call leads (85%)",
        "Time to a person: median 9 min, 90th percentile 42 min",
        "Reached within: 5 min: 35%, 15 min: 65%, 60 min: 80%",
        "Handed to a person: 20 (Asked for person 9, Rate lock 8, Complaint 3)",
        "Outcomes recorded: Reached 12, Appointment 5, Not a fit 3, Application 2",
        "Mon 12:00-13:00: 6 missed calls, 4 not reached within 60 min",
        "Nov 1, 2026 to Nov 30, 2026",
        "Dana Broker, (555) 123-0000",
    ):
        assert expected in text
    assert "policy abc123" in text
    assert max(len(line) for line in lines) <= 78


def test_render_text_draws_the_week_as_a_grid_of_counts() -> None:
    text = render_text(sample_report())
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("00 01"))
    header, monday, sunday = lines[at], lines[at + 1], lines[at + 7]
    assert monday.startswith("  Mon")
    assert sunday.startswith("  Sun")
    column = {hour: header.index(f"{hour:02d}") + 1 for hour in (9, 12, 17)}
    assert [monday[column[hour]] for hour in (9, 12, 17)] == ["3", "6", "2"]
    assert monday.count(".") == 21


@pytest.mark.parametrize(
    ("report", "headline"),
    [(sample_report(), "Yes."), (not_enough_report(), "No."), (empty_report(), "Too early to tell.")],
    ids=["enough", "not-enough", "no-calls"],
)
def test_render_text_headline_follows_the_verdict(report, headline) -> None:
    assert render_text(report).splitlines()[0] == f"Is text-back enough? {headline}"


def test_render_text_of_a_period_without_calls_says_no_data_not_zero_percent() -> None:
    text = render_text(empty_report())
    assert "Time to a person: no data" in text
    assert "Reached within: 5 min: no data, 15 min: no data, 60 min: no data" in text
    assert "No hour stands out in this period." in text
    assert "No missed calls in this period." in text
    assert not re.search(r"(?<![\d.])0%", text), "a share of nothing is no data, not 0%"


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(None, "no data"), (0, "0 s"), (45, "45 s"), (190, "3 min"), (540, "9 min"), (3590, "1 h"),
     (4800, "1 h 20 min"), (86400, "1 d"), (183600, "2 d 3 h")],
)
def test_duration_words(seconds, words) -> None:
    assert say.duration(seconds) == words


@pytest.mark.parametrize(
    ("share", "words"), [(None, "no data"), (0.0, "0%"), (0.001, "<1%"), (0.3833, "38%"), (0.8, "80%"), (1.0, "100%")]
)
def test_percent_words(share, words) -> None:
    assert say.percent(share) == words


# ---------------------------------------------------------------------------------------------------------
# HTML


@pytest.mark.parametrize("standalone", [True, False], ids=["standalone", "fragment"])
def test_render_html_inlines_three_labelled_svg_charts(standalone) -> None:
    html = render_html(sample_report(), standalone=standalone)
    charts = svgs(html)
    assert len(charts) == 3
    for svg in charts:
        root = ET.fromstring(svg)
        chart_id = root.get("id")
        assert root.get("role") == "img"
        assert root.get("aria-labelledby") == f"{chart_id}-title {chart_id}-desc"
        assert (root.find(f"{SVG}title[@id='{chart_id}-title']").text or "").strip()
        assert (root.find(f"{SVG}desc[@id='{chart_id}-desc']").text or "").strip()


@pytest.mark.parametrize("standalone", [True, False], ids=["standalone", "fragment"])
@pytest.mark.parametrize("report", [sample_report(), empty_report()], ids=["sample", "no-calls"])
def test_render_html_has_no_script_and_fetches_nothing(report, standalone) -> None:
    html = render_html(report, standalone=standalone)
    assert "<script" not in html.lower()
    assert not re.search(r"\bsrc\s*=", html)
    assert "<link" not in html
    assert "@import" not in html
    assert "url(" not in html
    assert "xml-stylesheet" not in html
    addresses = re.findall(r"[\w:-]+=\"https?://[^\"]*\"|https?://\S+", html)
    assert set(addresses) <= NAMESPACES, "only the SVG namespace names may spell an address"


def test_pygal_by_default_adds_a_cdn_script_our_charts_leave_out() -> None:
    default = pygal.Bar()
    default.add("calls", [1, 2])
    assert re.search(r'<script[^>]+href="(https:)?//kozea.github.io', default.render(is_unicode=True))
    for svg in vars(render_charts(sample_report())).values():
        assert "<script" not in svg
        assert "href=" not in svg
        assert "<!--" not in svg


def test_render_html_standalone_is_one_file_with_the_console_css_inlined() -> None:
    html = render_html(sample_report(), standalone=True)
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert ":root {" in html
    assert ".chart svg" in html
    assert "Content-Security-Policy" in html
    assert "default-src 'none'" in html
    assert "<h1>Is text-back enough?</h1>" in html


def test_render_html_fragment_is_the_report_without_a_page_around_it() -> None:
    html = render_html(sample_report(), standalone=False)
    assert "<html" not in html
    assert "<style>" not in html
    assert "<h1" not in html
    assert html.lstrip().startswith('<div class="report">')


def test_render_html_says_the_verdict_and_how_to_read_it() -> None:
    html = render_html(sample_report(), standalone=False)
    assert '<p class="notice verdict ok" id="verdict">' in html
    assert "<strong class=\"verdict-word\">Yes.</strong> Enough: 32 of 40" in html
    assert "How to read this" in html
    assert "at least 80% of missed-call leads are reached by a person within 60 minutes" in html
    assert "It takes at least 20 missed-call leads to tell; this period had 40." in html
    assert "<th scope=\"row\">Mon 12:00-13:00</th><td>6 missed calls, 4 not reached within 60 min</td>" in html
    assert "Time to a person</dt><dd>median 9 min, 90th percentile 42 min</dd>" in html
    assert 'class="notice verdict error"' in render_html(not_enough_report(), standalone=False)


def test_render_html_escapes_a_broker_name() -> None:
    report = sample_report()
    report["brokers"] = [{"number": "+15551230000", "name": "<b>O'Neil & Co</b>", "timezone": "America/Chicago"}]
    for standalone in (True, False):
        html = render_html(report, standalone=standalone)
        assert "&lt;b&gt;O&#39;Neil &amp; Co&lt;/b&gt;" in html
        assert "<b>O'Neil" not in html
    assert "<b>O'Neil & Co</b>, (555) 123-0000" in render_text(report)


def test_render_html_of_a_period_without_calls_shows_no_data_charts() -> None:
    html = render_html(empty_report(), standalone=True)
    assert len(svgs(html)) == 3
    assert "Too early to tell." in html
    assert "No missed calls in this period" in svgs(html)[0]
    assert "No missed-call leads in this period" in svgs(html)[1]
    assert "No missed-call leads in this period" in svgs(html)[2]


def test_console_page_template_renders_in_litestars_engine() -> None:
    page = TEMPLATES.engine_instance.get_template("report.html").render(
        user=None, csrf="", report=sample_report(), params={"since": "2026-11-01", "until": None, "broker": None},
        error="", download="/console/report/download?since=2026-11-01", **report_context(sample_report())
    )
    assert '<body class="wide">' in page
    assert "<h1>Is text-back enough?</h1>" in page
    assert len(svgs(page)) == 3
    assert '<link rel="stylesheet" href="/console/static/console.css">' in page


# ---------------------------------------------------------------------------------------------------------
# Charts


def test_by_hour_chart_labels_the_days_and_the_hours() -> None:
    labels = texts(by_hour_chart(sample_report()["by_hour"]))
    assert [label for label in labels if label in DAY_LABELS] == DAY_LABELS
    assert {f"{hour:02d}" for hour in range(24)} <= set(labels)
    assert "Hour the call came in (the broker's local time)" in labels


def test_by_hour_chart_draws_a_dot_per_busy_hour_with_area_for_the_count() -> None:
    root = ET.fromstring(by_hour_chart(sample_report()["by_hour"]))
    dots = {}
    for group in root.iter(f"{SVG}g"):
        circle, title = group.find(f"{SVG}circle"), group.find(f"{SVG}title")
        if circle is not None and title is not None:
            dots[title.text] = float(circle.get("r", "0"))
    assert len(dots) == 17  # the fixture's busy hours; an hour with no missed call has no dot
    big = dots["Mon 12:00-13:00: 6 missed calls, 2 reached within 60 min"]
    small = dots["Mon 09:00-10:00: 3 missed calls, 3 reached within 60 min"]
    assert big / small == pytest.approx(math.sqrt(2))  # area, not radius, doubles with the count


def test_funnel_chart_lists_the_steps_top_down_with_their_share() -> None:
    root = ET.fromstring(funnel_chart(sample_report()["funnel"]))
    rows = {node.text: float(node.get("y", "0")) for node in root.iter(f"{SVG}text")}
    order = ["Missed-call leads", "Texted (95%)", "Replied (55%)", "Reached by a person (85%)",
             "Appointment (12%)"]
    assert sorted(order, key=rows.__getitem__) == order
    assert {"40", "38", "22", "34", "5"} <= set(rows)


def test_time_to_human_chart_shows_not_reached_as_its_own_series() -> None:
    svg = time_to_human_chart(sample_report()["time_to_human_buckets"])
    labels = texts(svg)
    assert ["within 5 min", "5-15 min", "15-60 min", "1-4 h", "4-24 h", "over 24 h", "not reached"] == [
        label for label in labels if label in {b["label"] for b in sample_report()["time_to_human_buckets"]}
    ]
    assert "Reached by a person" in labels
    assert "Not reached" in labels


@pytest.mark.parametrize("chart", [by_hour_chart, funnel_chart, time_to_human_chart])
def test_a_chart_without_data_says_so(chart) -> None:
    report = empty_report()
    data = {by_hour_chart: report["by_hour"], funnel_chart: report["funnel"],
            time_to_human_chart: report["time_to_human_buckets"]}[chart]
    root = ET.fromstring(chart(data))
    assert [node.text for node in root.iter(f"{SVG}text") if node.get("class") == "no_data"]
    assert ET.fromstring(chart([])) is not None  # no rows at all draws the empty chart too


def test_charts_are_the_same_for_the_same_report() -> None:
    assert render_charts(sample_report()) == render_charts(sample_report())


# ---------------------------------------------------------------------------------------------------------
# The console's CSP


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_style_sources_hash_the_text_a_browser_parses() -> None:
    page = '<style>a > b { color: red }</style><svg><style>a &gt; b{}</style></svg><style>a &gt; b{}</style>'
    assert style_sources(page) == [sha256_source("a > b { color: red }"), sha256_source("a > b{}"),
                                   sha256_source("a &gt; b{}")]


def test_report_context_lists_the_style_sources_of_the_fragment() -> None:
    context = report_context(sample_report())
    fragment = render_html(sample_report(), standalone=False)
    assert context["style_sources"] == style_sources(fragment)
    assert len(context["style_sources"]) == 3


def test_render_text_widens_the_week_grid_for_three_digit_counts() -> None:
    report = sample_report()
    report["by_hour"][12]["missed_calls"] = 120  # Mon 12:00
    lines = render_text(report).splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("00"))
    assert lines[at + 1].split()[1:14] == [".", ".", ".", ".", ".", ".", ".", ".", ".", "3", ".", ".", "120"]
    assert lines[at].split()[:3] == ["00", "01", "02"]


@pytest.mark.parametrize(("in_hours", "out_hours", "young", "split", "note"), [
    (31, 9, 0, "40 (31 in office hours, 9 out of hours)", ""),
    (8, 0, 0, "40 (8 in office hours, 0 out of hours, 32 for brokers with no hours set)", ""),
    (31, 9, 3, "40 (31 in office hours, 9 out of hours)", " (3 leads missed too recently to judge, left out)"),
])
def test_say_every_lead_in_the_hours_split_and_the_young_ones(in_hours, out_hours, young, split, note) -> None:
    """The split adds up to the leads (brokers without hours are their own part), and leads too recent to judge
    are said to be left out of the shares."""
    report = {**sample_report(), "missed_in_hours": in_hours, "missed_out_of_hours": out_hours,
              "too_recent_to_judge": young}
    lines = dict(row for section in say.figures(report) for row in section.rows)
    assert lines["Missed-call leads"] == split
    assert lines["Reached within"].endswith("60 min: " + say.percent(report["reached_within"]["60m"]) + note)
    assert "Appointments or applications" in lines
