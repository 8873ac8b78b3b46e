"""Spanish borrower templates: one for every text a reply can lead to, held to the English ones' rules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.errors import PolicyError
from service.sms import is_gsm7, segments
from service.templates import SAMPLE_VALUES, SPANISH_TEMPLATES, load_templates

POLICIES = Path(__file__).resolve().parent.parent / "policies"
TEMPLATES = load_templates(POLICIES)
SPANISH_FILE = "borrower.es.yaml"
BROKERS = [
    {"broker_name": "Alexandra Montgomery-Ruiz", "brokerage": "Pacific Northwest Home Lending Group", "nmls_id": "1234567"},
    {"broker_name": "José Peña", "brokerage": "Peña & Ortiz Mortgage", "nmls_id": "98765"},
    {"broker_name": "Zoë O\u2019Brien", "brokerage": "O\u2019Brien Family Lending \u2014 Boston", "nmls_id": "2040608"},
]


@pytest.mark.parametrize("template_id", sorted(SPANISH_TEMPLATES))
@pytest.mark.parametrize("broker", BROKERS, ids=lambda b: b["broker_name"])
def test_render_spanish_template_gsm7_within_two_segments(template_id: str, broker: dict[str, str]) -> None:
    rendered = TEMPLATES.render(template_id, {**SAMPLE_VALUES, **broker}, "es")
    assert rendered.language == "es"
    assert rendered.text != TEMPLATES.render(template_id, {**SAMPLE_VALUES, **broker}).text
    assert is_gsm7(rendered.text), rendered.text
    assert segments(rendered.text) <= 2, (segments(rendered.text), rendered.text)


def test_render_spanish_help_with_nmls_brokerage_and_carrier_keywords() -> None:
    text = TEMPLATES.render("help", SAMPLE_VALUES, "es").text
    assert "NMLS #1234567" in text
    assert SAMPLE_VALUES["brokerage"] in text
    assert "Responda BAJA o STOP para no recibir mas mensajes" in text


@pytest.mark.parametrize("template_id", ["opener", "opener_booking", "opener_busy", "opener_closed_booking"])
def test_render_opener_in_english_for_spanish_lead(template_id: str) -> None:
    """The opener goes before any reply: it has no Spanish variant and renders in English."""
    rendered = TEMPLATES.render(template_id, SAMPLE_VALUES, "es")
    assert rendered.language == "en"
    assert "Reply STOP to opt out" in rendered.text


def test_sample_renders_include_spanish_variants() -> None:
    spanish = {r.template_id for r in TEMPLATES.sample_renders() if r.language == "es"}
    assert spanish == set(SPANISH_TEMPLATES)


def _edit_spanish(policies: Path, template_id: str, old: str, new: str) -> None:
    path = policies / "templates" / SPANISH_FILE
    head, sep, rest = path.read_text(encoding="utf-8").partition(f"\n  {template_id}:\n")
    assert sep, template_id
    assert old in rest, (template_id, old)
    path.write_text(head + sep + rest.replace(old, new, 1), encoding="utf-8")


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy)
    return copy


def test_refuse_load_templates_spanish_variant_missing(policies: Path) -> None:
    _edit_spanish(policies, "ask_timeline", "", "")
    path = policies / "templates" / SPANISH_FILE
    path.write_text(path.read_text(encoding="utf-8").replace("\n  ask_timeline:\n", "\n  ask_timeline_old:\n"))
    with pytest.raises(PolicyError, match="ask_timeline"):
        load_templates(policies)


@pytest.mark.parametrize(
    ("template_id", "old", "new", "message"),
    [
        ("help", " Responda BAJA o STOP para no recibir mas\n      mensajes.", "", "opt-out"),
        ("optin_confirm", "BAJA o STOP para no\n      recibir mas mensajes", "nada mas", "opt-out"),
        ("help", " (NMLS #$nmls_id)", "", "nmls_id"),
        ("optout_confirm", "de $brokerage", "de nosotros", "brokerage"),
        ("ready_closed", "$callback_day_es", "pronto", "callback_day_es"),
        ("ask_loan_type", "audience: borrower", "audience: broker", "borrower"),
        ("ask_timeline", "en 1-3 meses", "en 1-3 meses, pronto sí", "GSM-7"),
    ],
)
def test_refuse_spanish_template_weaker_than_english(policies: Path, template_id: str, old: str, new: str,
                                                     message: str) -> None:
    _edit_spanish(policies, template_id, old, new)
    problems: list[str] = []
    try:
        problems = load_templates(policies).findings()
    except PolicyError as exc:
        problems = [str(exc)]
    assert any(message in p and SPANISH_FILE in p for p in problems), problems


def test_refuse_spanish_variant_of_unknown_template(policies: Path) -> None:
    path = policies / "templates" / SPANISH_FILE
    path.write_text(path.read_text(encoding="utf-8") + "  made_up:\n    audience: borrower\n    text: hola\n")
    with pytest.raises(PolicyError, match="variant"):
        load_templates(policies)
