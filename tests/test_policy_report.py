"""The reviewer's report (`textback policy report --format md|html|pdf`): cover page and approval state, rules
in plain words, every template rendered with each real broker, open questions, regular expressions only in
the appendix, internal notes nowhere, the same content in every format, and the PDF rendered to images."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pypdfium2 as pdfium
import pytest
import yaml
from click.testing import CliRunner, Result

from service.cli import main
from service.policy.approvals import approve
from service.policy.files import policy_version, read_policy_files
from service.policy.report import build_report, render_report
from service.policy.report_blocks import Block
from service.policy.report_context import report_context
from service.policy.report_pdf import find_fonts, font_coverage, marker, to_pdf

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
NOW = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
BROKERS = [
    {"twilio_number": "+14155550100", "name": "Rosalind Okafor", "brokerage": "Harbor Light Mortgage",
     "nmls_id": "2208841", "company_nmls_id": "1984402", "forward_to": "+14155550111",
     "timezone": "America/Los_Angeles", "booking_url": "https://cal.example.com/rosalind"},
    {"twilio_number": "+12125550100", "name": "Tomás Ybarra", "brokerage": "Five Boroughs Home Finance",
     "nmls_id": "3310927", "forward_to": "+12125550111", "timezone": "America/New_York"},
]


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, ["policy", *args], catch_exceptions=False)


@pytest.fixture
def policies_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy, ignore=shutil.ignore_patterns("approvals.yaml"))
    return copy


@pytest.fixture
def brokers(tmp_path: Path) -> Path:
    path = tmp_path / "brokers.yaml"
    path.write_text(yaml.safe_dump({"brokers": BROKERS}, allow_unicode=True), encoding="utf-8")
    return path


def _md(policies: Path, brokers: Path) -> str:
    return render_report(report_context(policies, brokers, now=NOW), "md").decode("utf-8")


def _section(text: str, start: str, end: str | None) -> str:
    """The text from the line `start` up to the line `end` (exclusive)."""
    begin = text.index("\n" + start + "\n")
    return text[begin: text.index("\n" + end + "\n", begin)] if end else text[begin:]


def _flat(text: str) -> str:
    """Whitespace collapsed and inline-code marks dropped: what every format says, compared as words."""
    return " ".join(text.replace("`", "").split())


def _words(text: str) -> str:
    return " ".join(text.split())


def _html_text(page: str) -> str:
    body = page.split("<body>")[1].replace("<code>", "").replace("</code>", "")
    return _flat(html.unescape(re.sub(r"<[^>]+>", " ", body)))


def _pdf_text(data: bytes) -> tuple[int, str]:
    pdf = pdfium.PdfDocument(data)
    try:
        pages = [pdf[i].get_textpage().get_text_range() for i in range(len(pdf))]
    finally:
        pdf.close()
    # The running footer interrupts a paragraph that crosses a page; it is layout, not content.
    footer = re.compile(r"policy set [0-9a-f]{12} - page \d+ of \d+|\bf - page \d+ of \d+")
    return len(pages), _flat(" ".join(footer.sub(" ", page) for page in pages))


def test_report_cover_unapproved_names_version_and_approve_command(policies_copy: Path, brokers: Path) -> None:
    text = _md(policies_copy, brokers)
    cover = text[: text.index("\n---\n")]
    version = policy_version(policies_copy)
    assert f"- **Policy-set version:** {version}" in cover
    assert "- **Approval state:** NOT APPROVED" in cover
    assert f"**NOT APPROVED: no approval is recorded for policy-set version {version}." in cover
    assert "textback policy approve --reviewer" in cover
    assert "- **Generated:** 2026-12-03 09:30 UTC" in cover
    assert f"- **Brokers file:** {brokers}\n" in cover
    assert "shipped example" not in cover
    assert "Rosalind Okafor, Harbor Light Mortgage (NMLS 2208841, company NMLS 1984402)" in cover
    assert "Tomás Ybarra, Five Boroughs Home Finance (NMLS 3310927)" in cover


def test_report_cover_approved_shows_reviewer_time_and_note(policies_copy: Path, brokers: Path) -> None:
    approved = approve(policies_copy, reviewer="Dana Whitfield, CCO", note="Reviewed with counsel; quiet hours as filed.",
                       now=datetime(2026, 12, 3, 9, 14, 2, tzinfo=UTC))
    cover = _md(policies_copy, brokers).split("\n---\n")[0]
    assert approved.version == policy_version(policies_copy)
    assert (f"- **Approval state:** APPROVED: policy set {approved.version}: approved by Dana Whitfield, CCO on "
            "2026-12-03 09:14 UTC") in cover
    assert "- **Approved by:** Dana Whitfield, CCO" in cover
    assert "- **Approved at:** 2026-12-03 09:14 UTC" in cover
    assert "- **Approval note:** Reviewed with counsel; quiet hours as filed." in cover
    assert "NOT APPROVED" not in cover


def test_report_cover_edit_after_approval_is_not_approved(policies_copy: Path, brokers: Path) -> None:
    approve(policies_copy, reviewer="Dana Whitfield, CCO", note=None, now=NOW)
    ltv = policies_copy / "outbound" / "ltv.yaml"
    ltv.write_text(ltv.read_text(encoding="utf-8").replace("title: No loan-to-value", "title: No LTV"), encoding="utf-8")
    cover = _md(policies_copy, brokers).split("\n---\n")[0]
    assert "- **Approval state:** NOT APPROVED" in cover
    assert policy_version(policies_copy) in cover


def test_report_cover_shipped_example_brokers_says_so() -> None:
    cover = _md(POLICIES, ROOT / "brokers.example.yaml").split("\n---\n")[0]
    assert "(the shipped example file: sample brokers, not the brokerage's own)" in cover
    assert "rendered with the shipped example brokers file (brokers.example.yaml)" in cover


def test_report_templates_rendered_for_every_real_broker(brokers: Path) -> None:
    text = _md(POLICIES, brokers)
    renders = _section(text, "## 4 Texts as sent, per broker", "## 5 Other policies")
    assert "Alexandra Montgomery-Ruiz" not in text  # the made-up sample broker is gone
    template_ids = {tid for f in read_policy_files(POLICIES)[0] if f.header.kind == "templates"
                    for tid in f.data["templates"]}
    for broker in BROKERS:
        heading = f"### {broker['name']}, {broker['brokerage']} (NMLS {broker['nmls_id']})"
        assert heading in renders.splitlines()
        part = renders.split(heading)[1].split("\n### ")[0]
        opener = part.split("#### opener (to the borrower)\n\n")[1].split("\n\n")[0]
        assert broker["brokerage"] in opener
        assert broker["nmls_id"] in opener
        shown = set(re.findall(r"^#### (\w+) \(", part, flags=re.M))
        assert shown <= template_ids
        assert {"help", "handoff_ack", "alert_handoff", "ready"} <= shown
        assert "BLOCKED" not in part
        assert part.count("Guard verdict: allowed") >= 30
    tomas = renders.split("### Tomás Ybarra")[1]
    assert "#### opener_booking" not in tomas  # no booking link: those texts are never sent for him
    assert "Not sent for this broker (no booking link in the brokers file): " in tomas
    assert "#### opener_booking (to the borrower)" in renders.split("### Rosalind Okafor")[1].split("### Tomás")[0]
    # Spanish texts go out in GSM-7: the broker's name as sent ("Tomas"), not as written.
    spanish_help = tomas.split("#### help (to the borrower, in Spanish)\n\n")[1].split("\n\n")[0]
    assert "mensajes de Tomas Ybarra" in spanish_help


def test_report_never_shows_internal_notes(policies_copy: Path, brokers: Path) -> None:
    rates = policies_copy / "outbound" / "rates.yaml"
    text = rates.read_text(encoding="utf-8")
    rates.write_text(text.replace("\nseverity: block", "\ninternal_notes: SECRET-ENGINEERING-NOTE-42\nseverity: block", 1),
                     encoding="utf-8")
    notes = [f.header.internal_notes for f in read_policy_files(policies_copy)[0] if f.header.internal_notes]
    assert len(notes) >= 5
    ctx = report_context(policies_copy, brokers, now=NOW)
    md = render_report(ctx, "md").decode()
    page = _html_text(render_report(ctx, "html").decode())
    for output in (md, page):
        assert "SECRET-ENGINEERING-NOTE-42" not in output
        for note in notes:
            assert _flat(note) not in _flat(output)
        assert not re.search(r"\bTODO\b", output)  # case-sensitive: Spanish "todo" is a word
        assert not re.search(r"design card|issue 6\b", output, flags=re.IGNORECASE)
        assert not re.search(r"\bservice/[a-z_/]+\.py\b", output)  # engineering references stay in the files


def test_report_open_questions_in_their_own_section(brokers: Path) -> None:
    text = _md(POLICIES, brokers)
    questions = _section(text, "## 6 Open questions for counsel", "## Appendix: regular expressions")
    files = read_policy_files(POLICIES)[0]
    asked = [q for f in files for q in f.header.open_questions]
    assert len(asked) >= 5
    for question in asked:
        assert f"- {_words(question)}" in questions.splitlines()
    assert "### No automated text outside the recipient's calling hours (policies/sending/quiet_hours.yaml)" in questions
    rest = text.replace(questions, "")
    for question in asked:
        assert _words(question) not in _words(rest)


def test_report_regexes_only_in_appendix(brokers: Path) -> None:
    text = _md(POLICIES, brokers)
    body, appendix = text.split("\n## Appendix: regular expressions\n")
    patterns = [p for f in read_policy_files(POLICIES)[0] if f.header.kind in {"outbound_rule", "inbound_rule"}
                for p in f.data.get("patterns") or [] if len(p) > 12]
    assert len(patterns) > 100
    for pattern in patterns:
        assert pattern in appendix
        assert pattern not in body
    assert "```" not in body


def test_report_every_rule_in_plain_words(brokers: Path) -> None:
    text = _md(POLICIES, brokers)
    body = text.split("\n## Appendix")[0]
    files = read_policy_files(POLICIES)[0]
    for policy in files:
        assert policy.header.summary, policy.display
        assert f"- **What it does:** {_words(policy.header.summary)}" in body, policy.display
        if policy.header.cites:
            assert f"- **Law cited:** {'; '.join(policy.header.cites)}" in body, policy.display
    assert "- **Severity:** block: a text that matches is never sent" in body
    rates = body.split("### No interest rates, APRs or rate ranges\n")[1].split("\n### ")[0]
    assert "- **Law cited:** 12 CFR 1026.24(c)" in rates
    assert "- \u201cRates from 5.9% this week, want to lock one in?\u201d" in rates
    # An inbound rule with many examples shows the first few and counts the rest.
    optout = body.split("#### Opt-out requests in plain words end all texting\n")[1].split("\n#### ")[0]
    assert "Replies that fire it (first 8 of " in optout
    assert re.search(r"^\.\.\. and \d+ more\.$", optout, flags=re.M)


def test_report_formats_say_the_same(brokers: Path) -> None:
    ctx = report_context(POLICIES, brokers, now=NOW)
    md = _flat(render_report(ctx, "md").decode().replace("**", "").replace("\\", ""))
    page = _html_text(render_report(ctx, "html").decode())
    _, pdf = _pdf_text(render_report(ctx, "pdf"))
    files = read_policy_files(POLICIES)[0]
    facts = [
        ctx.version, "NOT APPROVED", "2026-12-03 09:30 UTC", "Rosalind Okafor", "Tomás Ybarra",
        "Five Boroughs Home Finance", "Open questions for counsel", "Appendix: regular expressions",
        *(f.header.title.strip() for f in files),
        *(_flat(q) for f in files for q in f.header.open_questions),
        *(c for f in files for c in f.header.cites),
    ]
    for fact in facts:
        assert fact in md, fact
        assert fact in page, fact
        assert fact in pdf, fact
    for phrase in ("Guard verdict: allowed", "What it does", "Law cited"):
        assert md.count(phrase) == page.count(phrase) == pdf.count(phrase), phrase


def test_report_pdf_renders_pages_with_text(brokers: Path) -> None:
    data = render_report(report_context(POLICIES, brokers, now=NOW), "pdf")
    assert data.startswith(b"%PDF-")
    pdf = pdfium.PdfDocument(data)
    try:
        assert len(pdf) > 20
        for index in range(len(pdf)):
            image = pdf[index].render(scale=0.4).to_pil().convert("L")
            dark = sum(image.histogram()[:200])  # pixels clearly darker than the white page
            assert dark > 150, f"page {index + 1} is blank"
        outline = [item.get_title() for item in pdf.get_toc()]
        assert "1 Outbound content rules: what a text to a borrower must never say" in outline
        assert "No interest rates, APRs or rate ranges" in outline
        assert "Appendix: regular expressions" in outline
        first = pdf[0].get_textpage().get_text_range()
        assert policy_version(POLICIES) in first
        assert "NOT APPROVED" in first
        assert "Rosalind Okafor" in first
    finally:
        pdf.close()
    _, text = _pdf_text(data)
    assert "No interest rates, APRs or rate ranges" in text
    assert "Guard verdict: allowed" in text


@pytest.mark.parametrize("fonts", ["system", "builtin"])
def test_report_pdf_characters_outside_latin1(fonts: str) -> None:
    blocks = [Block("h1", "Émoji 🏠🔑 and “curly” quotes"), Block("p", "rates ≤ 3 — café 停止 😀"),
              Block("list", ["🏠", "Dừng lại"]), Block("table", [["a", "b"], ["≤", "🔑"]]),
              Block("code", "\\bstop\\b|停止")]
    data = to_pdf(blocks, title="t", footer="f", fonts=fonts)  # type: ignore[arg-type]
    _, text = _pdf_text(data)
    assert "café" in text
    if fonts == "builtin":
        for shown in ("[U+1F3E0]", "[U+1F511]", "[U+1F600]", "[U+505C][U+6B62]", '"curly"', "rates <= 3 - café"):
            assert shown in text  # typography as ASCII, the rest as visible markers: never dropped
    else:
        found = find_fonts()
        assert found is not None, "no Unicode TTF on this machine (apt-get install fonts-dejavu-core)"
        covered = font_coverage(found.regular)
        for char in "🏠🔑😀停":  # each shown as itself when the font has it, else as a visible marker
            assert (char if ord(char) in covered else marker(char)) in text
        for shown in ("\u201ccurly\u201d", "rates \u2264 3 \u2014 café", "Dừng lại"):
            assert shown in text


def test_report_pdf_cli_to_stdout_and_file(tmp_path: Path, brokers: Path) -> None:
    piped = CliRunner().invoke(main, ["policy", "report", "--format", "pdf", "--brokers", str(brokers)],
                               catch_exceptions=False)
    assert piped.exit_code == 0
    assert piped.stdout_bytes.startswith(b"%PDF-")
    out = tmp_path / "review.pdf"
    result = _run("report", "--format", "pdf", "--brokers", str(brokers), "--output", str(out))
    assert result.exit_code == 0
    assert out.read_bytes().startswith(b"%PDF-")
    assert f"wrote {out}" in result.output


@pytest.mark.slow
def test_report_pdf_refused_on_a_terminal(tmp_path: Path, brokers: Path) -> None:
    """Binary on a terminal helps nobody: without --output and with stdout a terminal, it refuses and says how."""
    main_fd, terminal_fd = os.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", "from service.cli import main; main()", "policy", "report", "--format", "pdf",
             "--brokers", str(brokers)],
            cwd=ROOT, stdout=terminal_fd, stderr=subprocess.PIPE, timeout=60, check=False,
        )
    finally:
        os.close(terminal_fd)
        os.close(main_fd)
    assert proc.returncode == 2
    assert b"a PDF is binary: pass --output FILE (or redirect stdout to a file)" in proc.stderr


def test_report_html_is_standalone(brokers: Path) -> None:
    page = render_report(report_context(POLICIES, brokers, now=NOW), "html").decode()
    head = page.split("<body>")[0]
    assert "<style>" in head
    for external in ("<link", "<script", "src=", "@import", "url("):
        assert external not in page


def test_report_unreadable_brokers_file_is_a_finding(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    text = _md(POLICIES, missing)
    assert "- **Brokers covered:** none: the brokers file could not be read" in text
    assert "FINDING: no broker's values to render the templates with" in text


def test_report_build_blocks_code_only_in_appendix(brokers: Path) -> None:
    blocks = build_report(report_context(POLICIES, brokers, now=NOW))
    appendix = next(i for i, b in enumerate(blocks) if b.kind == "h2" and b.content.startswith("Appendix"))
    assert all(b.kind != "code" for b in blocks[:appendix])
    assert any(b.kind == "code" for b in blocks[appendix:])


# ------------------------------------------------------------------------------------- policy check
def test_check_policy_file_without_summary_or_cites(policies_copy: Path) -> None:
    rates = policies_copy / "outbound" / "rates.yaml"
    data = rates.read_text(encoding="utf-8")
    start = data.index("summary: >-")
    end = data.index("severity: block")
    rates.write_text(data[:start] + data[end:], encoding="utf-8")
    result = _run("check", "--policies", str(policies_copy))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any(line.startswith("policies/outbound/rates.yaml:1: summary: missing") for line in lines), lines
    assert any(line.startswith("policies/outbound/rates.yaml:1: cites: missing: the rationale cites law") for line in lines)


def test_check_internal_note_left_in_rationale(policies_copy: Path) -> None:
    caps = policies_copy / "sending" / "caps.yaml"
    data = caps.read_text(encoding="utf-8")
    caps.write_text(data.replace("These are starting values", "TODO ask counsel. These are starting values", 1),
                    encoding="utf-8")
    result = _run("check", "--policies", str(policies_copy))
    assert result.exit_code == 1
    assert ("policies/sending/caps.yaml:4: rationale: 'TODO' is an internal note or a question for counsel: move "
            "it to internal_notes or open_questions (the report shows this text)") in result.output.splitlines()
