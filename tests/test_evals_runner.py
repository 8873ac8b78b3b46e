"""The eval runner: thresholds hold on the repo's policies, a broken policy breaks them, replay is strict."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from service.cli import main
from service.evals.cassette import CassetteError, RecordingTransport, ReplayTransport
from service.evals.datasets import (
    DatasetError,
    callback_matches,
    load_outbound_cases,
    load_reply_cases,
)
from service.evals.metrics import GuardOutcome, ReplyOutcome, plain, score_guard, score_replies
from service.evals.runner import RunConfig, run
from service.evals.thresholds import broken, load_thresholds
from service.replies.analysis import Keyword, ReplyAnalysis
from service.replies.llm_fake import extraction_json
from service.replies.rules import load_rules

REPO = Path(__file__).resolve().parents[1]
EVALS = REPO / "evals"
POLICIES = REPO / "policies"

# The themes issue 5 asks the reply set to cover, as tags.
AT = "2026-01-02T10:00:00-05:00"
BASE_URL = "https://llm.test/v1"
Attempts = Callable[[], list[str]]

REQUIRED_TAGS = {
    "plain", "typo", "abbrev", "lowercase", "emoji", "multi_fact", "spanish", "mixed_language",
    "rate_question",
    "preapproval", "closing", "deadline", "wire", "rate_lock", "complaint", "wrong_number", "not_interested",
    "optout", "plain_words", "carrier_keyword", "start", "help", "injection", "lookalike", "month_relative",
    "states_loan_type", "lookalike:optout", "lookalike:closing", "lookalike:rate_lock", "handoff:rate_lock",
    "handoff:closing", "handoff:deadline",
}  # fmt: skip




EXTRACTION = {
    "loan_type": "purchase",
    "timeline": "researching",
    "applied_elsewhere": None,
    "wrong_number": False,
    "not_interested": False,
    "opt_out_request": False,
    "callback_requested": False,
    "handoff_reasons": [],
}


def _write_cases(path: Path, cases: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(c) + "\n" for c in cases), encoding="utf-8")


def _raw_cases() -> list[dict[str, object]]:
    return [json.loads(line) for line in (EVALS / "replies.jsonl").read_text(encoding="utf-8").splitlines()]


def _needs_llm_case() -> dict[str, object]:
    """The first eval case the rules hand to the LLM (so a replay run must make a request)."""
    rules = load_rules(POLICIES)
    for case in _raw_cases():
        if rules.analyze(str(case["text"]), datetime.fromisoformat(str(case["received_at"]))).needs_llm:
            return case
    pytest.fail("no eval case needs the LLM")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty eval data dir holding a copy of the repo's thresholds."""
    data = tmp_path / "evals"
    data.mkdir()
    shutil.copy(EVALS / "thresholds.yaml", data / "thresholds.yaml")
    return data


def _drop_slice_floors(data_dir: Path) -> None:
    path = data_dir / "thresholds.yaml"
    floors = yaml.safe_load(path.read_text(encoding="utf-8"))
    floors["replies"].pop("slices", None)
    path.write_text(yaml.safe_dump(floors, sort_keys=False), encoding="utf-8")


# ------------------------------------------------------------------------------------------ the datasets
def test_load_datasets_repo_meets_issue_sizes_and_themes() -> None:
    replies = load_reply_cases(EVALS / "replies.jsonl")
    outbound = load_outbound_cases(EVALS / "outbound_redteam.jsonl")
    tags = Counter(tag for case in replies for tag in case.tags)
    verdicts = Counter(case.expect for case in outbound)
    assert len(replies) >= 400
    assert len(outbound) >= 150
    assert REQUIRED_TAGS - set(tags) == set()
    assert verdicts["block"] >= 60
    assert verdicts["pass"] >= 60
    assert len({case.received_at.year for case in replies}) >= 3


# The red-team categories issue 9 found missing (violations) and the near misses that must pass.
VIOLATION_CATEGORIES = {
    "approval_promise", "rate_in_words", "payment_in_words", "basis_points", "unicode_figures",
    "lookalike_letters", "loan_features",
    "spanish",  # Spanish loan vocabulary and the Spanish templates (answering in the borrower's language)
}  # fmt: skip


def test_load_outbound_cases_issue9_categories_both_directions() -> None:
    outbound = load_outbound_cases(EVALS / "outbound_redteam.jsonl")
    counts = Counter((case.category, case.expect) for case in outbound)
    for category in VIOLATION_CATEGORIES:
        assert counts[category, "block"] >= 15, category
        assert counts[category, "pass"] >= 15, category
    assert counts["near_miss", "pass"] >= 15
    assert counts["near_miss", "block"] >= 5
    floors = load_thresholds(EVALS / "thresholds.yaml").guard.categories
    assert set(floors) == {*VIOLATION_CATEGORIES, "near_miss"}


def test_load_outbound_cases_bad_category_names_line(tmp_path: Path) -> None:
    path = tmp_path / "outbound_redteam.jsonl"
    _write_cases(path, [{"id": "o1", "text": "hi", "expect": "pass", "why": "x", "category": "Rate Words"}])
    with pytest.raises(DatasetError, match=r"outbound_redteam.jsonl:1 \(o1\): category"):
        load_outbound_cases(path)


def test_score_guard_category_floor_broken_names_category_and_cases(tmp_path: Path) -> None:
    path = tmp_path / "outbound_redteam.jsonl"
    _write_cases(
        path,
        [
            {"id": "o1", "text": "in the sixes", "expect": "block", "why": "x", "category": "rate_in_words"},
            {"id": "o2", "text": "at six", "expect": "pass", "why": "x", "category": "rate_in_words"},
            {"id": "o3", "text": "5.99%", "expect": "block", "why": "x"},
        ],
    )
    one, two, three = load_outbound_cases(path)
    report = score_guard([GuardOutcome(one, True, ()), GuardOutcome(two, True, ()), GuardOutcome(three, False, ("r",))])
    assert set(report.categories) == {"rate_in_words", "general"}
    assert report.categories["rate_in_words"].missed == ["o1"]
    thresholds_file = tmp_path / "thresholds.yaml"
    thresholds_file.write_text(
        "guard:\n  block_recall_min: 0.0\n  categories:\n    rate_in_words: {block_recall_min: 1.0}\n"
        "    basis_points: {block_recall_min: 1.0}\n",
        encoding="utf-8",
    )
    lines = broken(load_thresholds(thresholds_file), None, report)
    assert lines == [
        "guard rate_in_words block recall 0.000 < 1.0 (0/1; let through: o1)",
        "guard category basis_points: no red-team cases (the floor would hold on nothing)",
    ]


def test_load_reply_cases_unknown_field_names_line(tmp_path: Path) -> None:
    path = tmp_path / "replies.jsonl"
    _write_cases(
        path,
        [{"id": "x1", "text": "refi", "received_at": AT, "expect": {"loan": "refinance"}}],
    )
    with pytest.raises(DatasetError, match=r"replies.jsonl:1 \(x1\): unknown field"):
        load_reply_cases(path)


@pytest.mark.parametrize(
    ("expected", "actual", "ok"),
    [
        ("after 5", "after 5pm", True),
        ("after 5", "5 PM", True),
        ("after 5", "after 6", False),
        ("after 5", None, False),
        ("tomorrow morning", "tomorrow morning", True),
        ("tomorrow morning", "tomorrow", False),
        ("2 tomorrow", "after 2pm", True),
        ("weekend", "weekends", True),
        ("5:30", "after 5:30 pm", True),
    ],
)
def test_compare_callback_window_leniently(
    expected: str,
    actual: str | None,
    ok: bool,  # a parametrize column
) -> None:
    assert callback_matches(expected, actual) is ok


def test_score_replies_plain_words_lookalike_counts_false_optout(tmp_path: Path) -> None:
    path = tmp_path / "replies.jsonl"
    _write_cases(
        path,
        [
            {"id": "a1", "text": "Stop", "received_at": AT, "expect": {"keyword": "stop"}},
            {"id": "a2", "text": "stop by", "received_at": AT, "expect": {"keyword": None}},
        ],
    )
    first, second = load_reply_cases(path)
    stop = plain(ReplyAnalysis(keyword=Keyword.STOP))
    report = score_replies([ReplyOutcome(first, stop, stop, False), ReplyOutcome(second, stop, stop, False)])
    assert (report.optout_recall, report.false_optouts) == (1.0, ["a2"])
    assert report.fields["keyword"].rules_precision == 0.5


# ------------------------------------------------------------------------------------------- the runner
def test_run_evals_repo_policies_hold_every_threshold() -> None:
    result = run(RunConfig(data_dir=EVALS, policies_dir=POLICIES, llm="none"))
    assert result.broken == []


def test_run_evals_rules_only_finishes_well_under_a_minute() -> None:
    result = run(RunConfig(data_dir=EVALS, policies_dir=POLICIES, llm="none", run_guard=False))
    assert result.replies is not None
    assert result.replies.total >= 400
    assert result.seconds["replies"] < 20


def test_run_evals_removed_optout_keyword_fails_with_recall_line(tmp_path: Path, data_dir: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    keyword = "quit"
    ids = [c["id"] for c in _raw_cases() if str(c["text"]).strip(" .!\n").lower() == keyword and c["id"].startswith("r")]
    _write_cases(data_dir / "replies.jsonl", [c for c in _raw_cases() if c["id"] in ids])
    _drop_slice_floors(data_dir)  # two opt-outs carry no slice: the repo's slice floors would break on nothing
    args = ["evals", "run", "--no-guard", "--data", str(data_dir), "--policies", str(policies)]
    before = CliRunner().invoke(main, args)
    assert (before.exit_code, ids) == (0, ["r363", "r364"]), before.output

    stop_file = policies / "inbound" / "keyword-carrier-stop.yaml"
    spec = yaml.safe_load(stop_file.read_text(encoding="utf-8"))
    spec["whole_message"] = [w for w in spec["whole_message"] if w.lower() != keyword]
    spec["examples"]["must_match"] = [e for e in spec["examples"]["must_match"] if e.lower() != keyword]
    stop_file.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
    after = CliRunner().invoke(main, args)

    assert after.exit_code == 1
    assert "✗ opt-out recall 0.000 < 1.0 (0/2; missed: r363 r364)" in after.output


def test_run_evals_report_option_writes_markdown_with_charts(tmp_path: Path, data_dir: Path) -> None:
    _write_cases(data_dir / "replies.jsonl", _raw_cases()[:40])
    report = tmp_path / "report.md"
    result = CliRunner().invoke(
        main, ["evals", "run", "--no-guard", "--data", str(data_dir), "--report", str(report)]
    )
    text = report.read_text(encoding="utf-8")
    assert result.exit_code in (0, 1), result.output
    assert "### Coverage by layer" in text
    assert "█" in text
    assert "### Confusion matrices" in text
    assert "| expected ↓ / got → |" in text


def test_print_evals_table_never_shows_borrower_text(data_dir: Path) -> None:
    cases = _raw_cases()[:60]
    _write_cases(data_dir / "replies.jsonl", cases)
    result = CliRunner().invoke(main, ["evals", "run", "--no-guard", "--data", str(data_dir)])
    assert "rules prec" in result.output
    assert not [c["id"] for c in cases if len(str(c["text"])) > 12 and str(c["text"]) in result.output]


# --------------------------------------------------------------------------------------- record / replay
def test_print_evals_table_slice_section_dashes_empty_slices_within_120_columns(data_dir: Path) -> None:
    cases = [c for c in _raw_cases()  # typo or spanish, and never voice or plain (those rows must stay empty)
             if {"typo", "spanish"} & set(c.get("tags", [])) and not {"voice", "plain"} & set(c.get("tags", []))]  # type: ignore[arg-type]
    _write_cases(data_dir / "replies.jsonl", cases)
    result = CliRunner().invoke(main, ["evals", "run", "--no-guard", "--data", str(data_dir)])
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("slice "))
    section = lines[start : start + 11]
    rows = {line.split()[0]: line.split()[1:] for line in section[1:]}
    assert list(rows) == ["all", "typo", "spanish", "voice", "negation", "idiom", "long", "injection",
                          "date_edge", "plain"]  # fmt: skip
    assert rows["voice"] == ["0", *["-"] * 9]
    assert rows["typo"][0] == str(sum("typo" in c["tags"] for c in cases))  # type: ignore[operator]
    assert max(len(line) for line in section) <= 120
    assert "✗ slice plain: no cases (its floors would hold on nothing)" in result.output


def test_replay_recorded_request_returns_recorded_response(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    upstream = httpx.MockTransport(lambda request: httpx.Response(200, json=extraction_json(EXTRACTION, model="test-model")))
    recorder = RecordingTransport(cassette, inner=upstream, base_url=BASE_URL, model="test-model")
    with httpx.Client(transport=recorder) as client:
        sent = client.post(f"{BASE_URL}/chat/completions", json={"b": 1, "a": [2]}).json()
    replay = ReplayTransport(cassette)
    with httpx.Client(transport=replay) as client:
        again = client.post(f"{BASE_URL}/chat/completions", json={"a": [2], "b": 1}).json()
    assert again == sent
    assert "authorization" not in cassette.read_text(encoding="utf-8").lower()


def test_replay_unrecorded_request_refused(tmp_path: Path, outbound_attempts: Attempts) -> None:
    cassette = tmp_path / "c.jsonl"
    upstream = httpx.MockTransport(lambda request: httpx.Response(200, json=extraction_json(EXTRACTION, model="test-model")))
    recorder = RecordingTransport(cassette, inner=upstream, base_url=BASE_URL, model="test-model")
    with httpx.Client(transport=recorder) as client:
        client.post(f"{BASE_URL}/chat/completions", json={"text": "recorded"})
    replay = ReplayTransport(cassette)
    with httpx.Client(transport=replay) as client, pytest.raises(CassetteError, match="unrecorded request"):
        client.post(f"{BASE_URL}/chat/completions", json={"text": "never recorded"})
    assert replay.misses == [f"POST {BASE_URL}/chat/completions"]
    assert outbound_attempts() == []


def test_run_evals_replay_unrecorded_request_exits_2(data_dir: Path, outbound_attempts: Attempts) -> None:
    _write_cases(data_dir / "replies.jsonl", [_needs_llm_case()])
    cassettes = data_dir / "cassettes"
    cassettes.mkdir()
    header = {"cassette": 1, "base_url": BASE_URL, "model": "test-model", "recorded_at": "x"}
    (cassettes / "replies.jsonl").write_text(json.dumps(header) + "\n", encoding="utf-8")
    args = ["evals", "run", "--no-guard", "--llm", "replay", "--data", str(data_dir)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "never recorded" in result.output
    assert outbound_attempts() == []


def test_run_evals_replay_through_sdk_matches_live_recording(
    data_dir: Path, outbound_attempts: Attempts
) -> None:
    case = _needs_llm_case()
    _write_cases(data_dir / "replies.jsonl", [case])
    seen: list[httpx.Request] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=extraction_json(EXTRACTION, model="test-model"))

    cassette = data_dir / "cassettes" / "replies.jsonl"
    upstream = httpx.MockTransport(endpoint)
    recorder = RecordingTransport(cassette, inner=upstream, base_url=BASE_URL, model="m")
    from service.evals.runner import run_replies
    from service.replies.classify import build_extractor

    cases = load_reply_cases(data_dir / "replies.jsonl")
    extractor = build_extractor(api_key="k", base_url=BASE_URL, model="m",
                                http_client=httpx.AsyncClient(transport=recorder))
    try:
        live = run_replies(cases, load_rules(POLICIES), extractor)
    finally:
        extractor.close()
    replayed = run(RunConfig(data_dir=data_dir, policies_dir=POLICIES, llm="replay", run_guard=False))

    assert len(seen) == 1
    assert replayed.llm_model == "m"
    assert [o.final for o in replayed.outcomes] == [o.final for o in live]
    assert outbound_attempts() == []


def test_run_evals_replay_without_cassette_skips_with_message(data_dir: Path) -> None:
    _write_cases(data_dir / "replies.jsonl", _raw_cases()[:3])
    result = CliRunner().invoke(main, ["evals", "run", "--llm", "replay", "--data", str(data_dir)])
    assert result.exit_code == 0
    assert "replay skipped: no cassette" in result.output


def test_run_evals_live_without_key_exits_2(data_dir: Path) -> None:
    _write_cases(data_dir / "replies.jsonl", _raw_cases()[:3])
    result = CliRunner().invoke(
        main,
        ["evals", "run", "--no-guard", "--llm", "live", "--data", str(data_dir)],
        env={"OPENAI_API_KEY": ""},
    )
    assert result.exit_code == 2
    assert "needs OPENAI_API_KEY" in result.output
    assert not (data_dir / "cassettes").exists()


def test_load_reply_cases_received_at_timezone_aware() -> None:
    assert all(c.received_at.tzinfo is not None for c in load_reply_cases(EVALS / "replies.jsonl"))
