"""Prompt files: strict front matter, strict rendering, a content hash to record with every decision."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from service.errors import ConfigError
from service.prompts import PROMPTS_DIR, PromptError, load_prompt

GOOD = """\
---
name: greeting
version: 1.2.3
description: A test prompt.
temperature: 0
output_schema: Greeting
---
<!-- role: system -->
Say hello to $who. Costs $$0.
<!-- role: user -->
Between $begin and $end.
"""


def write(tmp_path: Path, text: str, name: str = "greeting") -> Path:
    """Write a prompt file and return its directory."""
    (tmp_path / f"{name}.md").write_text(text, encoding="utf-8")
    return tmp_path


def test_load_prompt_good_file_exposes_metadata(tmp_path: Path) -> None:
    prompt = load_prompt("greeting", prompts_dir=write(tmp_path, GOOD))

    assert prompt.name == "greeting"
    assert prompt.version == "1.2.3"
    assert prompt.temperature == 0
    assert prompt.output_schema == "Greeting"
    assert prompt.variables == {"who", "begin", "end"}
    assert prompt.content_hash == hashlib.sha256(GOOD.encode()).hexdigest()
    assert prompt.version_tag == f"1.2.3+{prompt.content_hash[:12]}"


def test_render_prompt_all_variables_gives_messages(tmp_path: Path) -> None:
    prompt = load_prompt("greeting", prompts_dir=write(tmp_path, GOOD))

    messages = prompt.render(who="Ana", begin="<a>", end="</a>")

    assert messages == [
        {"role": "system", "content": "Say hello to Ana. Costs $0."},
        {"role": "user", "content": "Between <a> and </a>."},
    ]


def test_render_prompt_value_with_dollar_is_not_expanded(tmp_path: Path) -> None:
    prompt = load_prompt("greeting", prompts_dir=write(tmp_path, GOOD))

    messages = prompt.render(who="$begin ${end}", begin="B", end="E")

    assert messages[0]["content"] == "Say hello to $begin ${end}. Costs $0."


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param({"who": "Ana", "begin": "<a>"}, "missing ['end']", id="missing"),
        pytest.param({"who": "Ana", "begin": "<a>", "end": "</a>", "rate": "6%"}, "unknown ['rate']", id="unknown"),
    ],
)
def test_render_prompt_wrong_variables_raises(tmp_path: Path, values: dict[str, str], message: str) -> None:
    prompt = load_prompt("greeting", prompts_dir=write(tmp_path, GOOD))

    with pytest.raises(PromptError, match=message.replace("[", r"\[").replace("]", r"\]")):
        prompt.render(**values)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(GOOD.replace("temperature: 0\n", "temperature: 0\nmodel: gpt-4o\n"), "model", id="unknown-key"),
        pytest.param(GOOD.replace("description: A test prompt.\n", ""), "description", id="missing-key"),
        pytest.param(GOOD.replace("version: 1.2.3", "version: 1.2"), "version", id="version-not-semver"),
        pytest.param(GOOD.replace("version: 1.2.3", "version: v1"), "version", id="version-pattern"),
        pytest.param(GOOD.replace("temperature: 0", "temperature: 3"), "temperature", id="temperature-range"),
        pytest.param(GOOD.replace("name: greeting", "name: other"), "does not match the file name", id="name"),
        pytest.param(GOOD.split("---\n", 2)[2], "front matter", id="no-front-matter"),
        pytest.param(GOOD.replace("temperature: 0", "temperature: [0"), "not valid YAML", id="bad-yaml"),
        pytest.param(GOOD.replace("<!-- role: system -->\n", ""), "must start with", id="no-first-role"),
        pytest.param(GOOD.replace("role: user", "role: tool"), "unknown role 'tool'", id="unknown-role"),
        pytest.param(GOOD.replace("Costs $$0", "Costs $0"), "invalid '\\$' placeholder", id="bad-placeholder"),
        pytest.param(GOOD.replace("Between $begin and $end.", ""), "empty", id="empty-section"),
    ],
)
def test_load_prompt_invalid_file_raises(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        load_prompt("greeting", prompts_dir=write(tmp_path, text))


def test_load_prompt_missing_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read prompt file"):
        load_prompt("nowhere", prompts_dir=tmp_path)


def test_load_prompt_edited_body_changes_hash_not_version(tmp_path: Path) -> None:
    first = load_prompt("greeting", prompts_dir=write(tmp_path, GOOD))
    second = load_prompt("greeting", prompts_dir=write(tmp_path, GOOD.replace("hello", "hi")))

    assert first.version == second.version
    assert first.version_tag != second.version_tag


def test_load_prompt_reply_extraction_file_is_valid() -> None:
    prompt = load_prompt("reply_extraction", prompts_dir=PROMPTS_DIR)

    assert prompt.output_schema == "LLMExtraction"
    assert prompt.temperature == 0
    assert prompt.variables == {"begin", "end", "received_date", "reply_text"}
    assert [section.role for section in prompt.sections] == ["system", "user"]
    assert "$reply_text" not in prompt.sections[0].template.template
