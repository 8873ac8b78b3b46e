"""`textback policy check | report | check-text` through the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from service.cli import main
from service.policy.files import policy_version
from service.policy.readme import readme_text

POLICIES = Path(__file__).resolve().parent.parent / "policies"


def _run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, ["policy", *args], input=stdin, catch_exceptions=False)


@pytest.fixture
def policies_copy(tmp_path: Path) -> Path:
    """A private copy of policies/ to edit."""
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    return copy


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_check_policies_repository_clean() -> None:
    result = _run("check", "--policies", str(POLICIES))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("policy check: ok: ")
    assert f"policy set {policy_version(POLICIES)}" in result.output
    assert "borrower templates through the guard" in result.output


def test_refuse_template_edited_to_contain_rate(policies_copy: Path) -> None:
    borrower = policies_copy / "templates" / "borrower.yaml"
    _edit(borrower, "Sorry I missed your call!", "Sorry I missed your call! Rates from 5.99% this week.")
    result = _run("check", "--policies", str(policies_copy))
    assert result.exit_code == 1
    findings = [line for line in result.output.splitlines() if "no-rate-quotes" in line]
    assert findings, result.output
    assert all(line.startswith("policies/templates/borrower.yaml: template opener") for line in findings)


def test_refuse_example_that_misbehaves(policies_copy: Path) -> None:
    rates = policies_copy / "outbound" / "rates.yaml"
    _edit(rates, "  must_match:\n", '  must_match:\n    - "See you at 3 PM"\n')
    _edit(rates, "  must_not_match:\n", '  must_not_match:\n    - "Rates from 5.9% today"\n')
    result = _run("check", "--policies", str(policies_copy))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert 'policies/outbound/rates.yaml: example must_match "See you at 3 PM" passed' in lines
    assert (
        'policies/outbound/rates.yaml: example must_not_match "Rates from 5.9% today" was blocked by '
        'no-rate-quotes ("Rates from 5.9%")'
    ) in lines


def test_refuse_policy_file_unknown_key(policies_copy: Path) -> None:
    _edit(policies_copy / "outbound" / "fees.yaml", "severity: block", "severity: block\nseverity_note: x")
    result = _run("check", "--policies", str(policies_copy))
    assert result.exit_code == 1
    assert "policies/outbound/fees.yaml:17: severity_note: unknown key" in result.output.splitlines()


def test_report_policies_markdown_sections() -> None:
    """The reviewer's report in its default format; its content is tested in tests/test_policy_report.py."""
    result = _run("report", "--policies", str(POLICIES), "--brokers", "brokers.example.yaml")
    assert result.exit_code == 0
    text = result.output
    assert text.startswith("# textback policy set: reviewer's report")
    assert f"- **Policy-set version:** {policy_version(POLICIES)}" in text
    for heading in [
        "## 1 Outbound content rules: what a text to a borrower must never say",
        "### No interest rates, APRs or rate ranges",
        "## 4 Texts as sent, per broker",
        "#### opener (to the borrower)",
        "## 6 Open questions for counsel",
        "## Appendix: regular expressions",
    ]:
        assert heading in text.splitlines()
    assert "- \u201cRates from 5.9% this week, want to lock one in?\u201d" in text
    assert "BLOCKED" not in text


def test_report_policies_html_to_file(tmp_path: Path) -> None:
    out = tmp_path / "review.html"
    result = _run("report", "--policies", str(POLICIES), "--format", "html", "--output", str(out))
    assert result.exit_code == 0
    assert f"wrote {out}" in result.output
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert "<h2>1 Outbound content rules: what a text to a borrower must never say</h2>" in page
    assert policy_version(POLICIES) in page
    assert "<script" not in page


def test_report_readme_up_to_date() -> None:
    readme = (POLICIES / "README.md").read_text(encoding="utf-8")
    assert readme == readme_text(POLICIES), "policies/README.md is stale: uv run textback policy report --write-readme"


def test_report_check_readme_detects_stale(policies_copy: Path) -> None:
    assert _run("report", "--policies", str(policies_copy), "--write-readme").exit_code == 0
    assert _run("report", "--policies", str(policies_copy), "--check-readme").exit_code == 0
    _edit(policies_copy / "outbound" / "ltv.yaml", "title: No loan-to-value", "title: No LTV")
    result = _run("report", "--policies", str(policies_copy), "--check-readme")
    assert result.exit_code == 1
    assert "--write-readme" in result.output
    assert _run("report", "--policies", str(policies_copy), "--write-readme").exit_code == 0
    assert _run("report", "--policies", str(policies_copy), "--check-readme").exit_code == 0


def _lines(result: Result) -> list[dict]:
    return [json.loads(line) for line in result.output.splitlines()]


def test_check_text_all_allowed_exit_zero() -> None:
    stdin = json.dumps({"text": "See you at 3 PM"}) + "\n\n" + json.dumps({"text": "Reply STOP to opt out"}) + "\n"
    result = _run("check-text", "--policies", str(POLICIES), stdin=stdin)
    assert result.exit_code == 0
    assert _lines(result) == [{"allowed": True, "violations": []}] * 2


def test_check_text_blocked_exit_one() -> None:
    stdin = "\n".join(
        json.dumps(line)
        for line in [
            {"text": "Rates from 5.9% today"},
            {"text": "See you at 3 PM", "required": {"nmls_id": "1234567"}},
        ]
    )
    result = _run("check-text", "--policies", str(POLICIES), stdin=stdin)
    assert result.exit_code == 1
    assert _lines(result) == [
        {"allowed": False, "violations": [{"rule": "no-rate-quotes", "match": "Rates from 5.9%"}]},
        {"allowed": False, "violations": [{"rule": "required-nmls_id", "match": "1234567"}]},
    ]


@pytest.mark.parametrize("bad", ["not json", "[1, 2]", '{"txt": "hi"}', '{"text": 5}', '{"text": "a", "x": 1}'])
def test_check_text_malformed_line_exit_two(bad: str) -> None:
    stdin = bad + "\n" + json.dumps({"text": "Rates from 5.9%"}) + "\n"
    result = _run("check-text", "--policies", str(POLICIES), stdin=stdin)
    assert result.exit_code == 2
    first, second = _lines(result)
    assert set(first) == {"error"}
    assert second["allowed"] is False


def test_refuse_check_opener_without_opt_out(policies_copy: Path) -> None:
    borrower = policies_copy / "templates" / "borrower.yaml"
    _edit(borrower, "REFINANCE and I'll follow up. Reply STOP to opt out.", "REFINANCE and I'll follow up.")
    result = _run("check", "--policies", str(policies_copy))
    assert result.exit_code == 1
    assert any(
        "templates/borrower.yaml" in line and "templates.opener" in line and "opt-out instructions" in line
        for line in result.output.splitlines()
    ), result.output


def test_check_text_template_kind_requires_opt_out() -> None:
    opener = "Hi, this is Dana with Summit Home Loans (NMLS #123456). Sorry I missed your call!"
    line = {"text": opener, "template": "opener", "required": {"brokerage": "Summit Home Loans", "nmls_id": "123456"}}
    result = _run("check-text", "--policies", str(POLICIES), stdin=json.dumps(line) + "\n")
    assert result.exit_code == 1
    assert _lines(result) == [
        {"allowed": False, "violations": [{"rule": "required-opt_out", "match": "opt-out instructions"}]}
    ]


TWO_BROKERS = """\
brokers:
  - twilio_number: "+14155550100"
    name: Dana Whitfield
    brokerage: Summit Home Loans
    nmls_id: "123456"
    forward_to: "+14155550111"
    timezone: America/Los_Angeles
  - twilio_number: "+12125550100"
    name: Marcus Chen
    brokerage: Harbor Mortgage
    nmls_id: "2233445"
    forward_to: "+12125550111"
    timezone: America/New_York
"""


# The same two brokers, each with a value that encodes a figure: a booking link (line 8), a brokerage (line 11).
BAD_BROKERS = TWO_BROKERS.replace(
    "timezone: America/Los_Angeles\n", "timezone: America/Los_Angeles\n    booking_url: https://book.example.com/?promo=6%25APR\n",
).replace("brokerage: Harbor Mortgage", "brokerage: Harbor 0% Down Mortgage")


def test_refuse_check_broker_value_with_encoded_figure_names_file_and_line(tmp_path: Path) -> None:
    brokers = tmp_path / "brokers.yaml"
    brokers.write_text(BAD_BROKERS, encoding="utf-8")
    result = CliRunner().invoke(
        main, ["policy", "check", "--policies", str(POLICIES)], env={"TEXTBACK_BROKERS_FILE": str(brokers)},
        catch_exceptions=False,
    )
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert any(line.startswith(f"{brokers}:8: brokers[0].booking_url: ") and "no-rate-quotes" in line
               for line in lines), result.output
    assert any(line.startswith(f"{brokers}:11: brokers[1].brokerage: ") for line in lines), result.output


def test_check_policies_reads_brokers_option_and_reports_it(tmp_path: Path) -> None:
    good = tmp_path / "brokers.yaml"
    good.write_text(BAD_BROKERS.replace("?promo=6%25APR", "dana").replace("Harbor 0% Down", "Harbor"), encoding="utf-8")
    result = _run("check", "--policies", str(POLICIES), "--brokers", str(good))
    assert result.exit_code == 0, result.output
    assert f"brokers file {good} (2 brokers)" in result.output


def test_refuse_check_brokers_file_configured_but_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = CliRunner().invoke(
        main, ["policy", "check", "--policies", str(POLICIES)], env={"TEXTBACK_BROKERS_FILE": str(missing)},
        catch_exceptions=False,
    )
    assert result.exit_code == 1
    assert f"{missing}: brokers file not found" in result.output


# --- check-text: a template id it does not know, and identity values it was not given (issue 9, section 2)
OPENER_TEXT = "Hi, this is Dana with Summit Home Loans (NMLS #123456). Sorry I missed your call! Reply STOP to opt out."


@pytest.mark.parametrize(("template", "suggestion"), [("opener_bookin", "opener_booking"), ("Opener", "opener"),
                                                      ("welcome", None)])
def test_check_text_unknown_template_malformed_exit_two(template: str, suggestion: str | None) -> None:
    """A typo in the template id used to skip what code requires for the kind and answer allowed, exit 0."""
    line = {"text": "Hi, sorry I missed your call!", "template": template,
            "required": {"brokerage": "Summit Home Loans", "nmls_id": "123456"}}
    result = _run("check-text", "--policies", str(POLICIES), stdin=json.dumps(line) + "\n")
    assert result.exit_code == 2, result.output
    [answer] = _lines(result)
    assert set(answer) == {"error"}
    assert answer["error"].startswith(f'unknown template "{template}"')
    if suggestion:
        assert f'did you mean "{suggestion}"?' in answer["error"]


def test_check_text_template_values_not_given_says_so() -> None:
    """No "required" values: the brokerage and NMLS ID are not reported as missing from a text that has them."""
    line = {"text": OPENER_TEXT, "template": "opener"}
    result = _run("check-text", "--policies", str(POLICIES), stdin=json.dumps(line) + "\n")
    assert result.exit_code == 2, result.output
    [answer] = _lines(result)
    assert answer["error"] == (
        'template "opener" is checked against the brokerage and NMLS ID it was rendered with, and they were not '
        'given: add "required": {"brokerage": "...", "nmls_id": "..."} or pass --brokers'
    )


def test_check_text_template_values_from_brokers_file(tmp_path: Path) -> None:
    one = tmp_path / "one.yaml"
    one.write_text(TWO_BROKERS.split("  - twilio_number: \"+1212")[0], encoding="utf-8")
    lines = [
        {"text": OPENER_TEXT, "template": "opener"},
        {"text": OPENER_TEXT.replace("Summit Home Loans", "Summit"), "template": "opener"},
    ]
    stdin = "".join(json.dumps(line) + "\n" for line in lines)
    result = _run("check-text", "--policies", str(POLICIES), "--brokers", str(one), stdin=stdin)
    assert result.exit_code == 1, result.output
    assert _lines(result) == [
        {"allowed": True, "violations": []},
        {"allowed": False, "violations": [{"rule": "required-brokerage", "match": "Summit Home Loans"}]},
    ]


def test_check_text_template_values_several_brokers_need_broker_key(tmp_path: Path) -> None:
    brokers = tmp_path / "brokers.yaml"
    brokers.write_text(TWO_BROKERS, encoding="utf-8")
    harbor = OPENER_TEXT.replace("Summit Home Loans", "Harbor Mortgage").replace("123456", "2233445")
    lines = [
        {"text": harbor, "template": "opener"},
        {"text": harbor, "template": "opener", "broker": "+12125550100"},
        {"text": harbor, "template": "opener", "broker": "+19995550100"},
    ]
    stdin = "".join(json.dumps(line) + "\n" for line in lines)
    result = CliRunner().invoke(main, ["policy", "check-text", "--policies", str(POLICIES)], input=stdin,
                                env={"TEXTBACK_BROKERS_FILE": str(brokers)}, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    first, second, third = _lines(result)
    assert first["error"].startswith(f'{brokers} has 2 brokers: say which with "broker"')
    assert second == {"allowed": True, "violations": []}
    assert third["error"] == f'no broker with twilio_number "+19995550100" in {brokers}'
