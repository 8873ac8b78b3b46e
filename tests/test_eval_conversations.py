"""The conversation eval set: multi-turn scripts through the real, signed webhooks (issue 5)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from service.cli import main
from service.evals.datasets import DatasetError
from service.evals.driver import run_conversations
from service.evals.render import broken_lines, markdown_lines, table_lines
from service.evals.scripts import CONVERSATIONS_DIR, load_scripts

REPO = Path(__file__).resolve().parent.parent
EVALS = REPO / "evals"
POLICIES = REPO / "policies"
SCRIPTS = EVALS / CONVERSATIONS_DIR
THEMES = {
    "purchase", "refinance", "multi_fact", "rate_question", "rate_lock", "closing", "wire", "deadline",
    "human_request", "callback", "complaint", "wrong_number", "not_interested", "optout", "plain_words",
    "start", "help", "after_handoff", "cooldown", "forwarded", "answered", "voicemail_pickup", "anonymous",
    "spanish", "injection", "booking",
}


def _copy(tmp_path: Path, *ids: str) -> Path:
    target = tmp_path / CONVERSATIONS_DIR
    target.mkdir(parents=True)
    for script_id in ids:
        shutil.copy(SCRIPTS / f"{script_id}.yaml", target / f"{script_id}.yaml")
    return target


def _edit(path: Path, change) -> None:  # a callable over the parsed script
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def test_run_conversations_repo_set_passes(output_guard, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_conversations(SCRIPTS, POLICIES, guard=output_guard)
    assert report.total >= 25
    assert report.failed_ids == [], "\n".join(f.line() for f in report.failures)
    assert report.unexpected_pass_ids == []
    assert broken_lines(report, scripts_min=25, failed_max=0) == []
    tags = Counter(tag for r in report.results for tag in r.script.tags)
    assert THEMES - set(tags) == set()
    assert capsys.readouterr().out == ""  # dry-run sends print; the eval keeps stdout for its table


def test_run_conversations_wrong_expectation_reports_script_step_and_template_ids(
    tmp_path: Path, output_guard
) -> None:
    scripts = _copy(tmp_path, "c01_purchase_one_answer_per_text", "c09_rate_lock_expiring")
    # A wrong expectation: after "Buying!" the service asks the timeline, not the loan type again.
    _edit(scripts / "c01_purchase_one_answer_per_text.yaml",
          lambda d: d["steps"][1]["expect"].update(borrower=["ask_loan_type"]))
    report = run_conversations(scripts, POLICIES, guard=output_guard)
    assert (report.passed, report.total) == (1, 2)
    assert report.failed_ids == ["c01_purchase_one_answer_per_text"]
    [failure] = report.failures
    assert (failure.script_id, failure.step, failure.what) == (
        "c01_purchase_one_answer_per_text", "2", "borrower"
    )
    assert (failure.expected, failure.actual) == (["ask_loan_type"], ["ask_timeline"])
    [line] = broken_lines(report, scripts_min=1, failed_max=0)
    assert "c01_purchase_one_answer_per_text" in line
    table = "\n".join(table_lines(report))
    assert "1/2 scripts pass" in table
    expected_line = (
        "c01_purchase_one_answer_per_text step 2 borrower: expected ['ask_loan_type'] got ['ask_timeline']"
    )
    assert expected_line in table
    assert "Buying" not in table  # stdout never carries a borrower's words
    assert "| c01_purchase_one_answer_per_text | 2 | borrower |" in "\n".join(markdown_lines(report))


def test_run_conversations_wrong_alert_and_end_state_are_failures(tmp_path: Path, output_guard) -> None:
    scripts = _copy(tmp_path, "c09_rate_lock_expiring")

    def change(data: dict) -> None:
        data["steps"][1]["expect"]["broker"] = []
        data["end"]["lead"]["state"] = "ready"

    _edit(scripts / "c09_rate_lock_expiring.yaml", change)
    report = run_conversations(scripts, POLICIES, guard=output_guard)
    got = {(f.step, f.what): (f.expected, f.actual) for f in report.failures}
    assert got == {("2", "broker"): ([], ["alert_handoff"]), ("end", "lead.state"): ("ready", "handoff")}


def test_run_conversations_known_issue_that_passes_breaks_threshold(tmp_path: Path, output_guard) -> None:
    scripts = _copy(tmp_path, "c26_answered_screened_call")
    _edit(scripts / "c26_answered_screened_call.yaml", lambda d: d.update(known_issue="pretend it is broken"))
    report = run_conversations(scripts, POLICIES, guard=output_guard)
    assert report.failed_ids == []
    assert report.unexpected_pass_ids == ["c26_answered_screened_call"]
    assert any("now pass" in line for line in broken_lines(report, scripts_min=1, failed_max=0))


def test_evals_run_cli_exits_1_naming_the_failing_script(tmp_path: Path) -> None:
    data = tmp_path / "evals"
    scripts = _copy(data, "c15_wrong_number")
    _edit(scripts / "c15_wrong_number.yaml",
          lambda d: d["steps"][1]["expect"].update(borrower=["closing_not_interested"]))
    replies = (EVALS / "replies.jsonl").read_text(encoding="utf-8").splitlines()[:5]
    (data / "replies.jsonl").write_text("\n".join(replies) + "\n", encoding="utf-8")
    thresholds = "conversations: {scripts_min: 1, failed_max: 0}\n"
    (data / "thresholds.yaml").write_text(thresholds, encoding="utf-8")
    report = tmp_path / "report.md"
    result = CliRunner().invoke(
        main, ["evals", "run", "--no-guard", "--data", str(data), "--report", str(report)]
    )
    assert result.exit_code == 1, result.output
    assert "conversations: 0/1 scripts pass" in result.output
    assert "conversation scripts failing 1 > 0 (c15_wrong_number)" in result.output
    assert "expected ['closing_not_interested'] got ['closing_wrong_number']" in result.output
    assert "## Conversations" in report.read_text(encoding="utf-8")


def test_load_scripts_unknown_template_id_names_file_and_step(tmp_path: Path) -> None:
    scripts = _copy(tmp_path, "c21_help_keyword")
    _edit(scripts / "c21_help_keyword.yaml", lambda d: d["steps"][1]["expect"].update(borrower=["helpp"]))
    match = r"c21_help_keyword.yaml: step 2: unknown template id\(s\) \['helpp'\]"
    with pytest.raises(DatasetError, match=match):
        load_scripts(scripts, {"opener", "help", "ask_timeline"})


def test_load_scripts_step_with_two_actions_is_refused(tmp_path: Path) -> None:
    scripts = _copy(tmp_path, "c21_help_keyword")
    _edit(scripts / "c21_help_keyword.yaml", lambda d: d["steps"][0].update(sms="hi"))
    with pytest.raises(DatasetError, match="exactly one of missed_call, call_answered, sms"):
        load_scripts(scripts)
