"""Borrower templates: GSM-7 only, at most two segments with realistic names, strict rendering."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from service.errors import PolicyError
from service.sms import is_gsm7, segments
from service.templates import BORROWER_TEMPLATES, load_templates, to_gsm7

POLICIES = Path(__file__).resolve().parent.parent / "policies"
TEMPLATES = load_templates(POLICIES)
BORROWER = sorted(t for t, spec in TEMPLATES.templates.items() if spec.audience == "borrower")

REALISTIC_BROKERS = [
    {"broker_name": "Dana Whitfield", "brokerage": "Summit Home Loans", "nmls_id": "123456"},
    {"broker_name": "Alexandra Montgomery-Ruiz", "brokerage": "Pacific Northwest Home Lending Group", "nmls_id": "1234567"},
    {"broker_name": "José Peña", "brokerage": "Peña & Ortiz Mortgage", "nmls_id": "98765"},
    {"broker_name": "Zoë O\u2019Brien", "brokerage": "O\u2019Brien Family Lending \u2014 Boston", "nmls_id": "2040608"},
    {"broker_name": "Nguyễn Thị Minh Khai", "brokerage": "Golden Gate Mortgage Advisors LLC", "nmls_id": "1999999"},
]


@pytest.mark.parametrize("template_id", BORROWER)
@pytest.mark.parametrize("broker", REALISTIC_BROKERS, ids=lambda b: b["broker_name"])
def test_render_borrower_template_gsm7_within_two_segments(template_id: str, broker: dict[str, str]) -> None:
    values = {"company_nmls_id": "7654321", "booking_url": "https://calendly.com/alexandra-montgomery/15min",
              "broker_phone": "+15035550142", "callback_time": "12:30 PM EDT", "callback_day": "Wednesday, Sep 30",
              **broker}
    text = TEMPLATES.render(template_id, values).text
    assert is_gsm7(text), text
    assert segments(text) <= 2, (segments(text), text)


@pytest.mark.parametrize("template_id", ["opener", "opener_booking", "opener_busy", "opener_busy_booking",
                                         "opener_closed", "opener_closed_booking", "help"])
def test_render_identity_templates_with_brokerage_and_nmls(template_id: str) -> None:
    rendered = TEMPLATES.render(template_id, {"broker_name": "Dana", "brokerage": "Summit Home Loans",
                                              "nmls_id": "123456", "booking_url": "https://x.example/b",
                                              "broker_phone": "+14155550100", "company_nmls_id": "",
                                              "callback_time": "3:30 PM", "callback_day": "tomorrow"})
    assert "Summit Home Loans" in rendered.text
    assert "123456" in rendered.text
    assert "STOP" in rendered.text
    assert rendered.required.items() >= {"brokerage": "Summit Home Loans", "nmls_id": "123456"}.items()


def test_render_template_missing_value_raises() -> None:
    with pytest.raises(KeyError, match="broker_name"):
        TEMPLATES.render("opener", {"brokerage": "X", "nmls_id": "1"})


@pytest.mark.parametrize(
    ("text", "expected_segments"),
    [("a" * 160, 1), ("a" * 161, 2), ("a" * 306, 2), ("a" * 307, 3), ("é" * 160, 1), ("€" * 80, 1),
     ("€" * 81, 2), ("😀" * 35, 1), ("😀" * 36, 2), ("ë" * 70, 1), ("ë" * 71, 2)],
)
def test_count_sms_segments(text: str, expected_segments: int) -> None:
    assert segments(text) == expected_segments


@pytest.mark.parametrize(
    ("value", "expected"),
    [("José Peña", "José Peña"), ("Zoë", "Zoe"), ("O\u2019Brien", "O'Brien"), ("A \u2014 B", "A - B"), ("Nguyễn", "Nguyen")],
)
def test_convert_placeholder_values_to_gsm7(value: str, expected: str) -> None:
    assert to_gsm7(value) == expected


def test_find_no_problems_in_shipped_templates() -> None:
    assert TEMPLATES.findings() == []


def test_reject_template_file_with_unknown_key(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "t.yaml").write_text(
        "id: t\nkind: templates\ntitle: Test templates\nrationale: Templates written by this test.\ntemplates:\n  opener:\n    text: hi\n    audience: borrower\n    colour: red\n"
    )
    with pytest.raises(PolicyError) as info:
        load_templates(tmp_path)
    assert "t.yaml" in str(info.value)
    assert "colour" in str(info.value)


def test_reject_template_with_unknown_placeholder(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "t.yaml").write_text(
        "id: t\nkind: templates\ntitle: Test templates\nrationale: Templates written by this test.\ntemplates:\n  opener:\n    text: hi $rate\n    audience: borrower\n"
    )
    with pytest.raises(PolicyError, match="rate"):
        load_templates(tmp_path)


def test_flag_template_longer_than_two_segments(tmp_path: Path) -> None:
    shutil.copytree(POLICIES / "templates", tmp_path / "templates")
    (tmp_path / "templates" / "t.yaml").write_text(
        "id: t\nkind: templates\ntitle: Test templates\nrationale: Templates written by this test.\ntemplates:\n  long_one:\n    text: " + "word " * 70 + "\n    audience: borrower\n"
    )
    findings = load_templates(tmp_path).findings()
    assert any("segments" in f for f in findings)


# ------------------------------------------------------------- required content by template kind (issue 9)
def _edit_template(policies: Path, template_id: str, old: str, new: str) -> None:
    """Replace text inside one template's block of policies/templates/borrower.yaml."""
    path = policies / "templates" / "borrower.yaml"
    head, sep, rest = path.read_text(encoding="utf-8").partition(f"\n  {template_id}:\n")
    assert sep, template_id
    end = next((m.start() for m in re.finditer(r"\n  \S", rest)), len(rest))
    block, tail = rest[:end], rest[end:]
    assert old in block, (template_id, old)
    path.write_text(head + sep + block.replace(old, new, 1) + tail, encoding="utf-8")


# (template, what is removed: [(old, new), ...], the requirement the error must name)
REMOVALS = [
    ("opener", [(" Reply STOP to opt out.", "")], "opt-out instructions"),
    ("opener", [(" (NMLS #$nmls_id)", ""), ("requires: [brokerage, nmls_id]", "requires: [brokerage]")], "NMLS ID"),
    ("opener", [(" with $brokerage", ""), ("requires: [brokerage, nmls_id]", "requires: [nmls_id]")], "brokerage"),
    ("opener", [("Reply STOP to opt out.", "Reply STOP to stop the music.")], "opt-out instructions"),
    ("opener", [("(NMLS #$nmls_id)", "(NMLS #$company_nmls_id)"), ("requires: [brokerage, nmls_id]", "requires: []")],
     "NMLS ID"),
    ("opener_booking", [(" Reply STOP to opt out.", "")], "opt-out instructions"),
    ("opener_booking", [(" (NMLS #$nmls_id)", ""), ("requires: [brokerage, nmls_id]", "requires: [brokerage]")], "NMLS ID"),
    ("help", [(" (NMLS #$nmls_id)", ""), ("requires: [brokerage, nmls_id]", "requires: [brokerage]")], "NMLS ID"),
    # The openers that say when a person will call (with a client, out of hours) must say the same.
    ("opener_busy", [(" Reply STOP to opt out.", "")], "opt-out instructions"),
    ("opener_busy_booking", [(" Reply STOP to\n      opt out.", "")], "opt-out instructions"),
    ("opener_closed", [(" (NMLS #$nmls_id)", ""), ("requires: [brokerage, nmls_id, callback_day, callback_time]",
                                                  "requires: [brokerage, callback_day, callback_time]")], "NMLS ID"),
    ("opener_closed_booking", [(" with $brokerage", ""), ("requires: [brokerage, nmls_id, callback_day, callback_time]",
                                                          "requires: [nmls_id, callback_day, callback_time]")],
     "brokerage"),
    ("help", [(" Reply here or call\n      $broker_phone.", "")], "how to get help"),
]


@pytest.mark.parametrize(("template_id", "edits", "requirement"), REMOVALS)
def test_refuse_load_templates_required_content_removed(
    tmp_path: Path, template_id: str, edits: list[tuple[str, str]], requirement: str
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    for old, new in edits:
        _edit_template(policies, template_id, old, new)
    with pytest.raises(PolicyError) as info:
        load_templates(policies)
    assert info.value.path.endswith("templates/borrower.yaml")
    assert info.value.field == f"templates.{template_id}"
    assert requirement in info.value.message


@pytest.mark.parametrize(
    "wording",
    ["Reply STOP to opt out.", "Text STOP to unsubscribe.", "To opt out, reply STOP.", "Reply HELP for help, STOP to opt out.",
     "Reply STOP to end texts.", "Responda STOP para cancelar."],
)
def test_load_templates_opener_opt_out_wordings_accepted(tmp_path: Path, wording: str) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    _edit_template(policies, "opener", "Reply STOP to opt out.", wording)
    assert "opener" in load_templates(policies).templates


def test_refuse_load_templates_identity_template_missing_or_sent_to_broker(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    _edit_template(policies, "help", "audience: borrower", "audience: broker")
    with pytest.raises(PolicyError) as info:
        load_templates(policies)
    assert info.value.field == "templates.help.audience"
    path = policies / "templates" / "borrower.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("\n  help:\n", "\n  help_text:\n").replace("audience: broker", "audience: borrower"))
    with pytest.raises(PolicyError, match="help"):
        load_templates(policies)


@pytest.mark.parametrize("template_id", sorted(BORROWER_TEMPLATES))
def test_refuse_load_templates_borrower_template_marked_broker(tmp_path: Path, template_id: str) -> None:
    """`audience: broker` would skip the output guard and the opt-out checks: no template the service sends to
    a caller may carry it, whatever its file says."""
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    _edit_template(policies, template_id, "audience: borrower", "audience: broker")
    with pytest.raises(PolicyError) as info:
        load_templates(policies)
    assert info.value.field == f"templates.{template_id}.audience"
