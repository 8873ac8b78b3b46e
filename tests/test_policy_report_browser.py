"""The reviewer's HTML report in a real browser (Debian's Chromium): nothing runs off the page, the regular
expressions in the appendix wrap, the cover shows the version and the approval state."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.policy.approvals import approve
from service.policy.files import policy_version
from service.policy.report import render_report
from service.policy.report_context import report_context
from tests.browser import CHROMIUM, PHONE_VIEWPORT, require_chromium

POLICIES = Path(__file__).resolve().parent.parent / "policies"
BROKERS = [{"twilio_number": "+14155550100", "name": "Rosalind Okafor", "brokerage": "Harbor Light Mortgage",
            "nmls_id": "2208841", "forward_to": "+14155550111", "timezone": "America/Los_Angeles",
            "booking_url": "https://cal.example.com/rosalind-okafor-harbor-light-mortgage-free-consultation"}]

# Every element whose box reaches past the page's width, and every block whose content is wider than its box
# (a <pre> that would scroll sideways instead of wrapping).
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const out = [];
  for (const el of document.body.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if (box.right > width + 0.5) out.push(`${el.tagName} right ${Math.round(box.right)} > ${width}`);
    if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).display !== 'inline')
      out.push(`${el.tagName} scrolls ${el.scrollWidth} > ${el.clientWidth}: ${el.textContent.slice(0, 60)}`);
  }
  return {page: document.documentElement.scrollWidth, width, out: out.slice(0, 20), pre: document.querySelectorAll('pre').length};
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _report(tmp_path: Path, policies: Path) -> Path:
    brokers = tmp_path / "brokers.yaml"
    brokers.write_text(yaml.safe_dump({"brokers": BROKERS}), encoding="utf-8")
    out = tmp_path / "review.html"
    out.write_bytes(render_report(report_context(policies, brokers), "html"))
    return out


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 900}, PHONE_VIEWPORT], ids=["desktop", "phone"])
def test_report_html_nothing_overflows_the_page(browser: Any, tmp_path: Path, viewport: dict[str, int]) -> None:
    page = browser.new_page(viewport=viewport)
    try:
        page.goto(_report(tmp_path, POLICIES).as_uri())
        found = page.evaluate(OVERFLOW)
        assert found["out"] == [], found
        assert found["page"] <= found["width"], found
        assert found["pre"] > 50  # the appendix's regular expressions are there, and wrap
        cover = page.locator("dl.facts").first
        assert policy_version(POLICIES) in cover.inner_text()
        assert "NOT APPROVED" in cover.inner_text()
        alert = page.get_by_role("alert").first
        assert alert.is_visible()
        assert f"NOT APPROVED: no approval is recorded for policy-set version {policy_version(POLICIES)}" in \
            alert.inner_text()
    finally:
        page.close()


def test_report_html_cover_shows_approval(browser: Any, tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies, ignore=shutil.ignore_patterns("approvals.yaml"))
    approval = approve(policies, reviewer="Dana Whitfield, CCO", note="Reviewed with counsel.",
                       now=datetime(2026, 12, 3, 9, 14, tzinfo=UTC))
    page = browser.new_page()
    try:
        page.goto(_report(tmp_path, policies).as_uri())
        cover = page.locator("dl.facts").first.inner_text()
        assert approval.version in cover
        assert f"APPROVED: policy set {approval.version}: approved by Dana Whitfield, CCO on 2026-12-03 09:14 UTC" in cover
        assert "Reviewed with counsel." in cover
        assert "NOT APPROVED" not in page.locator("body").inner_text()
    finally:
        page.close()
