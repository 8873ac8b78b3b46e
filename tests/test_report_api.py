"""GET /api/report and `textback report`: who may see which broker's report, bad parameters, and the verdict
against the rule in policies/reporting/sufficiency.yaml once the sample is large enough."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlmodel import Session, select

from service.cli import main
from service.models import Broker
from service.sufficiency import SufficiencyRule, load_sufficiency
from tests.api_helpers import MARCUS_CELL, TEAM_YAML, bearer, signed_in
from tests.helpers import BROKER, BROKER2, POLICIES
from tests.report_history import History

CONTRACT = {"calls", "missed_calls", "missed_share", "openers_sent", "openers_delivered", "replied", "reply_rate",
            "time_to_first_reply_seconds", "handoffs", "handoff_reasons", "reached_by_human",
            "time_to_human_seconds", "reached_within", "repeat_calls_before_contact", "outcomes", "opted_out",
            "no_reply", "by_hour", "verdict"}


@pytest.fixture
def brokers_file(tmp_path):
    path = tmp_path / "brokers.yaml"
    path.write_text(TEAM_YAML)
    return path


def _broker_id(ctx, number: str) -> int:
    with Session(ctx.engine) as session:
        broker = session.exec(select(Broker).where(Broker.twilio_number == number)).one()
    assert broker.id is not None
    return broker.id


def _callers(n: int) -> list[str]:
    return [f"+1415555{3000 + i:04d}" for i in range(n)]


def _leads(history: History, callers: list[str], *, reach_after_minutes: int | None, again: bool = False,
           day: str = "2026-06-08", hour: int = 10) -> None:
    for i, caller in enumerate(callers):
        minute = f"{i:02d}"
        history.at(f"{day}T{hour:02d}:{minute}").call(caller)
        if again:
            history.at(f"{day}T{hour:02d}:{minute}:30").call(caller)
        if reach_after_minutes is not None:
            history.clock.shift(reach_after_minutes * 60)
            history.outcome(caller, "reached")


def test_get_report_contract_keys_signed_in(ctx, client) -> None:
    response = client.get("/api/report", headers=signed_in(ctx))
    assert response.status_code == 200, response.text
    assert CONTRACT <= set(response.json())
    assert set(response.json()["verdict"]) >= {"enough", "reason", "windows"}


@pytest.mark.parametrize(("params", "status", "names"), [
    ({"since": "yesterday"}, 422, "since"),
    ({"until": "2026-13-01"}, 422, "until"),
    ({"since": "2026-06-10", "until": "2026-06-01"}, 422, "since"),
    ({"broker": BROKER2}, 404, "broker"),  # Marcus's: Dana's team may not see it
    ({"broker": "not a number"}, 404, "broker"),
])
def test_get_report_bad_parameters_named(ctx, client, params: dict[str, str], status: int, names: str) -> None:
    response = client.get("/api/report", params=params, headers=signed_in(ctx))
    assert response.status_code == status, response.text
    assert response.json()["error"].startswith(f"{names}:")


def test_get_report_refused_without_sign_in_or_from_alert_link(ctx, client) -> None:
    assert client.get("/api/report").status_code == 401
    link_session = signed_in(ctx, lead_id=1)
    response = client.get("/api/report", headers=link_session)
    assert response.status_code == 403
    assert "one lead" in response.json()["error"]


def test_get_report_bearer_token_sees_its_broker_only(ctx, client, post, clock) -> None:
    history = History(ctx, client, post, clock)
    history.at("2026-06-08T10:00").call("+14155553999")
    marcus = History(ctx, client, post, clock, broker=BROKER2)
    marcus.at("2026-06-08T11:00").call("+12125553999")
    token = bearer(ctx, _broker_id(ctx, BROKER2))
    body = client.get("/api/report", params={"since": "2026-06-01"}, headers=token).json()
    assert [b["number"] for b in body["brokers"]] == [BROKER2]
    assert body["missed_call_leads"] == 1
    marcus_user = client.get("/api/report", params={"since": "2026-06-01"}, headers=signed_in(ctx, MARCUS_CELL))
    assert marcus_user.json()["missed_call_leads"] == 1
    assert client.get("/api/report", params={"broker": BROKER}, headers=token).status_code == 404


def test_get_report_verdict_enough_when_rule_met(ctx, client, post, clock) -> None:
    """20 missed-call leads, 16 reached within the hour (80%), 3 called again (15%): the rule's own boundary."""
    history = History(ctx, client, post, clock)
    callers = _callers(20)
    _leads(history, callers[:3], reach_after_minutes=30, again=True)
    _leads(history, callers[3:16], reach_after_minutes=10, hour=11)
    _leads(history, callers[16:], reach_after_minutes=None, hour=12)
    report = history.at("2026-06-09T10:00").report(since="2026-06-08")
    assert (report["missed_call_leads"], report["called_again_before_contact"]) == (20, 3)
    assert report["reached_within"]["60m"] == 0.8
    verdict = report["verdict"]
    assert verdict["enough"] is True
    assert "16 of 20" in verdict["reason"]
    assert "3 of 20" in verdict["reason"]
    assert verdict["rule"]["min_reached_share"] == 0.8
    assert verdict["windows"] == [{"day": "mon", "hour": 12, "label": "Mon 12:00-13:00", "missed_calls": 4,
                                   "not_reached": 4}]


def test_get_report_verdict_not_enough_names_windows(ctx, client, post, clock) -> None:
    history = History(ctx, client, post, clock)
    callers = _callers(24)
    _leads(history, callers[:12], reach_after_minutes=5)
    _leads(history, callers[12:18], reach_after_minutes=None, day="2026-06-09", hour=18)  # Tue evening
    _leads(history, callers[18:], reach_after_minutes=120, day="2026-06-13", hour=9)  # Sat morning, slow
    report = history.at("2026-06-15T10:00").report(since="2026-06-08", until="2026-06-14")
    verdict = report["verdict"]
    assert verdict["enough"] is False
    assert verdict["reason"].startswith("Not enough: 12 of 24 missed-call leads (50%) reached a person within 60")
    assert [(w["label"], w["not_reached"]) for w in verdict["windows"]] == [
        ("Tue 18:00-19:00", 6), ("Sat 09:00-10:00", 6)]


@pytest.mark.parametrize(("leads", "reached", "again", "enough"), [
    (0, 0, 0, None),
    (19, 19, 0, None),
    (20, 16, 3, True),
    (20, 15, 0, False),
    (20, 20, 4, False),
    (100, 80, 15, True),
    (100, 79, 0, False),
])
def test_verdict_rule_truth_table(leads: int, reached: int, again: int, enough: bool | None) -> None:
    assert SufficiencyRule().verdict(leads, reached, again)[0] is enough


def test_load_sufficiency_examples_agree_and_a_wrong_one_is_found(tmp_path) -> None:
    assert load_sufficiency(POLICIES).example_findings() == []
    text = (POLICIES / "reporting" / "sufficiency.yaml").read_text()
    (tmp_path / "reporting").mkdir()
    (tmp_path / "reporting" / "sufficiency.yaml").write_text(text.replace("min_reached_share: 0.80",
                                                                          "min_reached_share: 0.90"))
    findings = load_sufficiency(tmp_path).example_findings()
    assert findings
    assert "listed under enough but the rule says not_enough" in findings[0]


def test_report_cli_json_matches_api(ctx, client, post, clock, settings, monkeypatch) -> None:
    history = History(ctx, client, post, clock)
    history.at("2026-06-08T10:00").call("+14155553999")
    history.at("2026-06-08T10:05").outcome("+14155553999", "reached")
    history.at("2026-06-09T12:00")  # clear of the 24 h no-reply boundary: both reads see the same "now" side
    monkeypatch.setenv("TEXTBACK_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TEXTBACK_POLICIES_DIR", str(POLICIES))
    params = ["--since", "2026-06-08", "--until", "2026-06-08", "--broker", BROKER]
    result = CliRunner().invoke(main, ["report", *params, "--format", "json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    api = history.report(since="2026-06-08", until="2026-06-08", broker=BROKER)
    figures.pop("generated_at"), api.pop("generated_at")
    assert figures == api
    assert figures["time_to_human_seconds"] == {"p50": 300, "p90": 300}


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "June"], "--since"),
    (["--broker", "+19995550000"], "--broker"),
])
def test_report_cli_bad_option_exits_2_naming_it(settings, monkeypatch, ctx, args: list[str], message: str) -> None:
    monkeypatch.setenv("TEXTBACK_DATABASE_URL", settings.database_url)
    result = CliRunner().invoke(main, ["report", *args])
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize(("fmt", "expected"), [
    ("text", "Is text-back enough? Too early to tell."),
    ("html", "<svg"),
])
def test_report_cli_text_and_html_to_file(ctx, client, post, clock, settings, monkeypatch, tmp_path, fmt: str,
                                         expected: str) -> None:
    History(ctx, client, post, clock).at("2026-06-08T10:00").call("+14155553999")
    monkeypatch.setenv("TEXTBACK_DATABASE_URL", settings.database_url)
    out = tmp_path / f"report.{fmt}"
    result = CliRunner().invoke(main, ["report", "--since", "2026-06-01", "--format", fmt, "--output", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert expected in text
    assert "1 missed-call lead" in text
