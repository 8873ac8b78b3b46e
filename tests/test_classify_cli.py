"""`textback classify`: JSON lines in, one ReplyAnalysis JSON line out per input line, errors in place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import respx
from click.testing import CliRunner

from service.replies.analysis import ReplyAnalysis
from service.replies.cli import InputLineError, classify, parse_line
from service.replies.llm_fake import completions_url, extraction_json

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "policies"
LLM_URL = "https://llm.test/v1"
NO_LLM_ENV = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", "TEXTBACK_LLM_MODEL": ""}
# Words no rule knows: the rules leave the reply open and ask for the LLM.
UNSETTLED_TEXT = "Bonjour, je voudrais des informations"


def run(lines: list[str], *args: str, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, Any]], str]:
    """Invoke the command in-process; returns (exit code, parsed stdout lines, stderr)."""
    result = CliRunner().invoke(
        classify, ["--policies", str(POLICIES), *args], input="".join(f"{line}\n" for line in lines),
        env=env if env is not None else NO_LLM_ENV,
    )
    return result.exit_code, [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def test_classify_cli_good_lines_write_every_field() -> None:
    code, out, _ = run([
        json.dumps({"text": "STOP"}),
        json.dumps({"text": "looking to refi, maybe next spring", "received_at": "2025-11-14T17:05:00Z"}),
    ])

    assert code == 0
    assert len(out) == 2
    for line in out:
        assert set(line) == set(ReplyAnalysis.model_fields)
        ReplyAnalysis.model_validate(line)
    assert out[0]["keyword"] == "stop"
    assert out[1]["loan_type"] == "refinance"
    assert out[1]["source"] == "rules"


def test_classify_cli_bad_lines_answered_in_place_and_exit_1() -> None:
    secret = "my ssn is 123-45-6789"
    code, out, err = run([
        json.dumps({"text": "STOP"}),
        "{not json " + secret,
        json.dumps({"received_at": "2025-11-14T17:05:00Z"}),
        json.dumps({"text": secret, "received_at": "last tuesday"}),
        json.dumps({"text": 42}),
        json.dumps({"text": secret, "recieved_at": "2025-11-14"}),
        json.dumps([secret]),
        "",
        json.dumps({"text": "START"}),
    ])

    assert code == 1
    assert [line.get("error", "").split(":", 1)[0] for line in out] == [
        "", "line 2", "line 3", "line 4", "line 5", "line 6", "line 7", "line 8", ""
    ]
    assert out[0]["keyword"] == "stop"
    assert out[-1]["keyword"] == "start"
    assert "123-45" not in json.dumps(out)
    assert "7 line(s) could not be read" in err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param("{", "invalid JSON", id="invalid-json"),
        pytest.param("[]", "expected a JSON object", id="not-object"),
        pytest.param("{}", "missing 'text'", id="missing-text"),
        pytest.param('{"text": null}', "'text' must be a string", id="null-text"),
        pytest.param('{"text": "hi", "received_at": 1731600000}', "must be an ISO-8601 string", id="number-date"),
        pytest.param('{"text": "hi", "received_at": "14/11/2025"}', "not an ISO-8601", id="bad-date"),
        pytest.param('{"text": "hi", "id": 7}', "unknown key(s) ['id']", id="unknown-key"),
        pytest.param("   ", "empty line", id="blank"),
    ],
)
def test_parse_line_bad_input_raises(line: str, message: str) -> None:
    with pytest.raises(InputLineError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_line(line, now=datetime(2025, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param('{"text": "hi"}', datetime(2025, 1, 1, 12, tzinfo=UTC), id="default-now"),
        pytest.param('{"text": "hi", "received_at": null}', datetime(2025, 1, 1, 12, tzinfo=UTC), id="null-now"),
        pytest.param('{"text": "hi", "received_at": "2025-11-14T17:05:00Z"}',
                     datetime(2025, 11, 14, 17, 5, tzinfo=UTC), id="zulu"),
        pytest.param('{"text": "hi", "received_at": "2025-11-14T12:05:00-05:00"}',
                     datetime(2025, 11, 14, 17, 5, tzinfo=UTC), id="offset"),
        pytest.param('{"text": "hi", "received_at": "2025-11-14T17:05:00"}',
                     datetime(2025, 11, 14, 17, 5, tzinfo=UTC), id="naive-is-utc"),
    ],
)
def test_parse_line_received_at_is_aware(line: str, expected: datetime) -> None:
    text, received_at = parse_line(line, now=datetime(2025, 1, 1, 12, tzinfo=UTC))

    assert text == "hi"
    assert received_at == expected
    assert received_at.tzinfo is not None


def test_classify_cli_no_llm_flag_never_calls_llm(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(completions_url(LLM_URL))
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": LLM_URL, "TEXTBACK_LLM_MODEL": "m"}
    respx_mock.assert_all_called = False

    code, out, _ = run([json.dumps({"text": UNSETTLED_TEXT})], "--no-llm", env=env)

    assert code == 0
    assert route.call_count == 0
    assert out[0]["needs_llm"] is True
    assert out[0]["llm_model"] is None


def test_classify_cli_no_key_runs_rules_only() -> None:
    code, out, _ = run([json.dumps({"text": UNSETTLED_TEXT})])

    assert code == 0
    assert out[0]["needs_llm"] is True
    assert out[0]["source"] == "rules"
    assert out[0]["llm_error"] is None


def test_classify_cli_llm_env_configures_endpoint_and_model(respx_mock: respx.MockRouter) -> None:
    content = {
        "loan_type": "purchase", "timeline": "unknown", "applied_elsewhere": None, "wrong_number": False,
        "not_interested": False, "opt_out_request": False, "callback_requested": False, "handoff_reasons": [],
    }
    route = respx_mock.post(completions_url(LLM_URL)).respond(200, json=extraction_json(content, model="my-model-2025"))
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": LLM_URL, "TEXTBACK_LLM_MODEL": "my-model"}

    code, out, _ = run([json.dumps({"text": UNSETTLED_TEXT})], env=env)

    assert code == 0
    assert route.call_count == 1
    assert json.loads(route.calls.last.request.content)["model"] == "my-model"
    assert out[0]["loan_type"] == "purchase"
    assert out[0]["source"] == "llm"
    assert out[0]["llm_model"] == "my-model"
    assert out[0]["llm_prompt"] == "reply_extraction"


def test_classify_cli_llm_down_hands_off_without_failing(respx_mock: respx.MockRouter) -> None:
    respx_mock.post(completions_url(LLM_URL)).respond(503, json={"error": {"message": "down"}},
                                              headers={"retry-after-ms": "5"})
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": LLM_URL, "TEXTBACK_LLM_MODEL": ""}

    code, out, _ = run([json.dumps({"text": UNSETTLED_TEXT})], env=env)

    assert code == 0
    assert out[0]["llm_error"] == "api_error"
    assert out[0]["llm_model"] == "gpt-4o-mini"


def test_classify_cli_missing_policies_dir_is_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(classify, ["--policies", str(tmp_path / "nope")], input="", env=NO_LLM_ENV)

    assert result.exit_code == 2


def _subprocess_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OPENAI_", "TEXTBACK_"))}
    return env


@pytest.mark.slow
def test_classify_cli_through_textback_entry_point() -> None:
    lines = [json.dumps({"text": "stop texting me please"}), json.dumps({"text": "refi", "received_at": "x"})]

    result = subprocess.run(
        ["uv", "run", "--frozen", "textback", "classify", "--no-llm"],  # uv from PATH, as developers run it
        input="\n".join(lines) + "\n", capture_output=True, text=True, cwd=REPO, env=_subprocess_env(),
        timeout=60, check=False,
    )

    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 1, result.stderr
    assert out[0]["keyword"] == "stop"
    assert out[1] == {"error": "line 2: 'received_at' is not an ISO-8601 date-time"}


@pytest.mark.slow
def test_classify_cli_rules_only_imports_no_guardrails_or_openai() -> None:
    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from service.cli import main\n"
        "r = CliRunner().invoke(main, ['classify', '--no-llm'], input='{\"text\": \"refi\"}\\n')\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in ('guardrails', 'openai') if m in sys.modules))\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=_subprocess_env(),
        timeout=60, check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
