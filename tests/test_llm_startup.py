"""Start-up refuses an LLM it cannot bound or a prompt that does not fit the output schema, and every entry
point (the service, `textback classify`, the evals) reads the prompt from TEXTBACK_PROMPTS_DIR and bounds each
call by TEXTBACK_LLM_TIMEOUT_SECONDS."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import respx
from click.testing import CliRunner
from pydantic import ValidationError

from service.errors import ConfigError
from service.prompts import PromptError
from service.replies.cli import classify
from service.replies.extraction import load_extraction_prompt
from service.replies.llm_fake import completion_json, completions_url
from service.settings import Settings
from tests.helpers import BROKERS_YAML, POLICIES, REPO
from tests.llm_helpers import HangingStream
from tests.test_reply_llm import answer

PROMPT = REPO / "prompts" / "reply_extraction.md"
BASE_URL = "https://llm.test/v1"
COMPLETIONS = completions_url(BASE_URL)
MARKER = "You read for the Acme test desk."
UNSETTLED_TEXT = "Bonjour, je voudrais des informations"  # no rule knows these words: the LLM is asked


def prompts_dir(tmp_path: Path, edit: Callable[[str], str] = lambda text: text) -> Path:
    """A prompts directory holding the repository's reply_extraction.md, edited."""
    folder = tmp_path / "my-prompts"
    folder.mkdir(exist_ok=True)
    text = PROMPT.read_text(encoding="utf-8")
    edited = edit(text)
    (folder / "reply_extraction.md").write_text(edited, encoding="utf-8")
    return folder


def custom(text: str) -> str:
    """A valid prompt of our own: another version, and a marker sentence in the system message."""
    return (text.replace("version: 2.1.0", "version: 9.9.9")
            .replace("<!-- role: system -->\n", f"<!-- role: system -->\n{MARKER}\n", 1))


# ----------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("value", [0, -1, -0.5, "nan", "inf"])
def test_create_settings_llm_timeout_not_positive_rejected(value: object) -> None:
    with pytest.raises(ValidationError, match=r"llm_timeout_seconds[\s\S]*positive number of seconds"):
        Settings(_env_file=None, llm_timeout_seconds=value)


def test_create_settings_stale_processing_within_llm_deadline_rejected() -> None:
    with pytest.raises(ValidationError, match=r"stale_processing_seconds .* must exceed twice llm_timeout_seconds"):
        Settings(_env_file=None, llm_timeout_seconds=60, stale_processing_seconds=120)
    assert Settings(_env_file=None, llm_timeout_seconds=60, stale_processing_seconds=125).llm_timeout_seconds == 60


def test_create_settings_llm_concurrency_zero_rejected() -> None:
    with pytest.raises(ValidationError, match="llm_concurrency"):
        Settings(_env_file=None, llm_concurrency=0)


# ------------------------------------------------------------------------------------------ prompt checks
BAD_PROMPTS = [
    pytest.param(lambda t: t.replace("- wrong_number: true only if they say this is the wrong number or they never "
                                     "called.\n", ""), "missing \\['wrong_number'\\]", id="field-missing"),
    pytest.param(lambda t: t.replace("- handoff_reasons:", "- urgency: how soon they need it.\n- handoff_reasons:"),
                 "not in the schema \\['urgency'\\]", id="field-extra"),
    pytest.param(lambda t: t.replace("- opt_out_request:", "- optout_request:"),
                 "missing \\['opt_out_request'\\]; not in the schema \\['optout_request'\\]", id="field-renamed"),
    pytest.param(lambda t: t.replace("- handoff_reasons:", "- loan_type: again.\n- handoff_reasons:"),
                 "listed twice \\['loan_type'\\]", id="field-twice"),
    pytest.param(lambda t: t.replace("Fields:\n", "What to fill in:\n"), "disagrees with LLMExtraction: missing",
                 id="no-fields-list"),
    pytest.param(lambda t: t.replace('"transaction_issue"', "transaction issues"),
                 "never offers handoff_reasons value\\(s\\) \\['transaction_issue'\\]", id="enum-value-missing"),
    pytest.param(lambda t: t.replace("output_schema: LLMExtraction", "output_schema: Other"),
                 "output_schema is 'Other'", id="other-schema"),
    pytest.param(lambda t: t.replace("$reply_text\n", ""), "uses variables", id="reply-text-missing"),
    pytest.param(lambda t: t.replace("You classify one SMS", "You classify $reply_text, one SMS"),
                 "user sections only", id="reply-text-in-system"),
    pytest.param(lambda t: t.replace("temperature: 0", "temperature: [0"), "not valid YAML", id="bad-yaml"),
    pytest.param(lambda t: "", "front matter", id="empty-file"),
]


@pytest.mark.parametrize(("edit", "message"), BAD_PROMPTS)
def test_load_extraction_prompt_disagreeing_with_schema_rejected(
    tmp_path: Path, edit: Callable[[str], str], message: str
) -> None:
    folder = prompts_dir(tmp_path, edit)

    with pytest.raises(PromptError, match=message) as caught:
        load_extraction_prompt(folder)

    assert str(folder / "reply_extraction.md") in str(caught.value)
    assert "\n" not in str(caught.value)


def test_load_extraction_prompt_repo_file_matches_schema() -> None:
    prompt = load_extraction_prompt(REPO / "prompts")

    assert prompt.listed_fields == (
        "loan_type", "timeline", "applied_elsewhere", "wrong_number", "not_interested", "opt_out_request",
        "callback_requested", "handoff_reasons",
    )


def test_load_extraction_prompt_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read prompt file"):
        load_extraction_prompt(tmp_path)


# ----------------------------------------------------------------------------------------- the service
# Each fixture below edits `settings_env` before `ctx` (listed after it) builds the context from it.
@pytest.fixture
def llm_env(settings_env: dict[str, object]) -> dict[str, object]:
    settings_env.update({"openai_api_key": "sk-test-not-real", "openai_base_url": BASE_URL,
                         "llm_timeout_seconds": 2.0})
    return settings_env


@pytest.fixture
def disagreeing_prompt(tmp_path: Path, llm_env: dict[str, object]) -> Path:
    llm_env["prompts_dir"] = prompts_dir(tmp_path, lambda t: t.replace("- opt_out_request:", "- stop:"))
    return llm_env["prompts_dir"]  # type: ignore[return-value]


@pytest.fixture
def custom_prompt(tmp_path: Path, llm_env: dict[str, object]) -> Path:
    llm_env["prompts_dir"] = prompts_dir(tmp_path, custom)
    return llm_env["prompts_dir"]  # type: ignore[return-value]


@pytest.fixture
def no_prompt_no_key(tmp_path: Path, settings_env: dict[str, object]) -> None:
    settings_env["prompts_dir"] = tmp_path / "nowhere"  # rules only: the prompt is never read


def test_warm_up_prompt_disagreeing_with_schema_refuses_to_start(disagreeing_prompt: Path, ctx) -> None:
    with pytest.raises(ConfigError, match=re.escape("reply_extraction.md: the 'Fields:' list disagrees")) as caught:
        ctx.warm_up()

    assert str(disagreeing_prompt) in str(caught.value)


def test_warm_up_bad_prompt_without_llm_key_starts(no_prompt_no_key: None, ctx) -> None:
    ctx.warm_up()

    assert ctx.extractor is None


def test_handle_reply_uses_prompt_from_prompts_dir(custom_prompt: Path, ctx, client, post, twilio_api) -> None:
    from tests.test_conversation import missed, reply

    route = twilio_api.post(COMPLETIONS).respond(200, json=completion_json(answer()))

    missed(client, post)
    reply(client, post, UNSETTLED_TEXT)

    assert route.call_count == 1
    system = json.loads(route.calls.last.request.content)["messages"][0]["content"]
    assert system.startswith(MARKER)
    assert ctx.extractor.prompt_version.startswith("9.9.9+")


# -------------------------------------------------------------------------------------- textback classify
def classify_env(**extra: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": BASE_URL, "TEXTBACK_LLM_MODEL": "m",
            "TEXTBACK_LLM_TIMEOUT_SECONDS": "", "TEXTBACK_PROMPTS_DIR": "", **extra}


def run_classify(env: dict[str, str]) -> tuple[int, list[dict], str]:
    env = {key: value for key, value in env.items() if value != ""} | {
        key: None for key, value in env.items() if value == ""}  # type: ignore[dict-item]
    result = CliRunner().invoke(classify, ["--policies", str(POLICIES)],
                                input=json.dumps({"text": UNSETTLED_TEXT}) + "\n", env=env)
    return result.exit_code, [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def test_classify_cli_reads_prompt_from_prompts_dir(tmp_path: Path, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(COMPLETIONS).respond(200, json=completion_json(answer()))

    code, out, _ = run_classify(classify_env(TEXTBACK_PROMPTS_DIR=str(prompts_dir(tmp_path, custom))))

    assert code == 0
    assert out[0]["llm_prompt_version"].startswith("9.9.9+")
    assert json.loads(route.calls.last.request.content)["messages"][0]["content"].startswith(MARKER)


def test_classify_cli_bounds_each_call_by_timeout_setting(respx_mock: respx.MockRouter) -> None:
    release = threading.Event()
    respx_mock.post(COMPLETIONS).mock(side_effect=lambda request: httpx.Response(
        200, headers={"content-type": "application/json"}, stream=HangingStream(release, limit=6)))
    started = time.monotonic()
    try:
        code, out, _ = run_classify(classify_env(TEXTBACK_LLM_TIMEOUT_SECONDS="1"))
    finally:
        release.set()

    assert code == 0
    assert out[0]["llm_error"] == "timeout"
    assert time.monotonic() - started < 1 + 2.5  # generous slack: a bound, not a performance claim


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"TEXTBACK_LLM_TIMEOUT_SECONDS": "0"}, "llm_timeout_seconds", id="zero-timeout"),
        pytest.param({"TEXTBACK_PROMPTS_DIR": "/nonexistent/prompts"}, "cannot read prompt file", id="no-prompt"),
    ],
)
def test_classify_cli_bad_llm_setting_exits_with_message(env: dict[str, str], message: str) -> None:
    code, out, err = run_classify(classify_env(**env))

    assert code == 1
    assert out == []
    assert message in err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------------ textback serve
def serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    brokers = tmp_path / "brokers.yaml"
    brokers.write_text(BROKERS_YAML)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TEXTBACK_", "TWILIO_", "OPENAI_"))}
    base.update({"TEXTBACK_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}", "TEXTBACK_BROKERS_FILE": str(brokers),
                 "TEXTBACK_POLICIES_DIR": str(POLICIES), "TEXTBACK_PROMPTS_DIR": str(REPO / "prompts"), **env})
    script = Path(sys.executable).with_name("textback")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from service.cli import main; main()"]
    try:
        return subprocess.run([*command, "serve", "--port", "0"], env=base, cwd=tmp_path, capture_output=True,
                              text=True, timeout=90, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("textback serve started instead of refusing")


@pytest.mark.slow
def test_serve_zero_llm_timeout_refuses_to_start(tmp_path: Path) -> None:
    result = serve(tmp_path, TEXTBACK_LLM_TIMEOUT_SECONDS="0")

    assert result.returncode == 1
    assert "llm_timeout_seconds (TEXTBACK_LLM_TIMEOUT_SECONDS): must be a positive number" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_serve_prompt_disagreeing_with_schema_refuses_to_start(tmp_path: Path) -> None:
    folder = prompts_dir(tmp_path, lambda t: t.replace("- callback_requested:", "- call_me:"))

    result = serve(tmp_path, OPENAI_API_KEY="sk-test", TEXTBACK_PROMPTS_DIR=str(folder))

    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert str(folder / "reply_extraction.md") in line
    assert "missing ['callback_requested']; not in the schema ['call_me']" in line
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------- the evals
def test_run_evals_replay_uses_prompt_from_prompts_dir(tmp_path: Path) -> None:
    from service.evals.cassette import CassetteError, RecordingTransport
    from service.evals.datasets import load_reply_cases
    from service.evals.runner import RunConfig, run, run_replies
    from service.replies.classify import build_extractor
    from service.replies.rules import load_rules

    data = tmp_path / "evals"
    data.mkdir()
    shutil.copy(REPO / "evals" / "thresholds.yaml", data / "thresholds.yaml")
    rules = load_rules(POLICIES)
    case = next(line for line in (REPO / "evals" / "replies.jsonl").read_text(encoding="utf-8").splitlines()
                if rules.analyze(json.loads(line)["text"], time_of(json.loads(line))).needs_llm)
    (data / "replies.jsonl").write_text(case + "\n", encoding="utf-8")
    folder = prompts_dir(tmp_path, custom)
    upstream = httpx.MockTransport(lambda request: httpx.Response(200, json=completion_json(answer())))
    recorder = RecordingTransport(data / "cassettes" / "replies.jsonl", inner=upstream, base_url=BASE_URL, model="m")
    extractor = build_extractor(api_key="k", base_url=BASE_URL, model="m", prompts_dir=folder,
                                http_client=httpx.AsyncClient(transport=recorder))
    try:
        run_replies(load_reply_cases(data / "replies.jsonl"), rules, extractor)
    finally:
        extractor.close()

    replayed = run(RunConfig(data_dir=data, policies_dir=POLICIES, llm="replay", run_guard=False,
                             environ={"TEXTBACK_PROMPTS_DIR": str(folder)}))

    assert len(replayed.outcomes) == 1
    assert replayed.outcomes[0].llm_error is None
    with pytest.raises(CassetteError, match="never recorded"):  # the repository's prompt is another request
        run(RunConfig(data_dir=data, policies_dir=POLICIES, llm="replay", run_guard=False, environ={}))


def time_of(case: dict) -> object:
    from datetime import datetime

    return datetime.fromisoformat(case["received_at"])
