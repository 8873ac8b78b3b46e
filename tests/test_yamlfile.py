"""The one strict YAML reader: duplicate keys refused and file:line:field in every error, for every YAML file
the service reads (policy files, brokers file, prompt front matter, eval thresholds, conversation scripts)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from service import yamlfile
from service.brokers import load_brokers
from service.errors import ConfigError, PolicyError
from service.evals.datasets import DatasetError
from service.evals.scripts import load_scripts
from service.evals.thresholds import ThresholdError, load_thresholds
from service.policy.files import load_outbound_rules
from service.prompts import PromptError, load_prompt
from service.replies.rules import load_rules
from service.sending.policy import load_sending_policy
from service.templates import load_templates
from service.yamlfile import YamlFileError, read_yaml

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"


class _Window(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str
    end: str


class _Day(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: dict[str, _Window | Literal["closed"]]
    items: list[int]


def _doc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "f.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nb:\n  c: 1\n  c: 2\n", "4: duplicate key 'c'"),
        ("base: &b\n  tz: UTC\nother:\n  <<: *b\n  ring: 1\n  ring: 2\n", "6: duplicate key 'ring'"),
    ],
    ids=["nested", "next-to-a-merge"],
)
def test_read_yaml_refuses_duplicate_key_at_its_line(tmp_path: Path, text: str, expected: str) -> None:
    path = _doc(tmp_path, text)
    with pytest.raises(YamlFileError) as info:
        read_yaml(path)
    assert str(info.value) == f"{path}:{expected}"


def test_read_yaml_merge_key_shares_fields_and_allows_override(tmp_path: Path) -> None:
    """`<<: *anchor` is how operators share fields between brokers: it is not a duplicate key."""
    path = _doc(tmp_path, "base: &b\n  tz: UTC\n  ring: 18\nother:\n  <<: *b\n  ring: 25\n")
    assert read_yaml(path).data["other"] == {"tz": "UTC", "ring": 25}


def test_brokers_file_with_shared_fields_loads(tmp_path: Path) -> None:
    path = tmp_path / "brokers.yaml"
    path.write_text(
        "brokers:\n"
        "  - &dana\n    twilio_number: \"+14155550100\"\n    name: Dana Whitfield\n"
        "    brokerage: Summit Home Loans\n    nmls_id: \"123456\"\n    forward_to: \"+14155550111\"\n"
        "    timezone: America/Los_Angeles\n"
        "  - <<: *dana\n    twilio_number: \"+14155550101\"\n    name: Sam Lee\n    nmls_id: \"223344\"\n"
        "    timezone: America/Denver\n",
        encoding="utf-8",
    )
    brokers = load_brokers(path)
    assert [(b.name, b.timezone) for b in brokers] == [
        ("Dana Whitfield", "America/Los_Angeles"), ("Sam Lee", "America/Denver"),
    ]


def test_read_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = _doc(tmp_path, "a: 1\nb: [1,\n")
    with pytest.raises(YamlFileError) as info:
        read_yaml(path)
    problem = info.value.first
    assert (problem.path, problem.field) == (str(path), None)
    assert problem.line is not None
    assert problem.message.startswith("not valid YAML: ")


def test_validate_locates_nested_error_and_drops_pydantic_labels(tmp_path: Path) -> None:
    path = _doc(tmp_path, "days:\n  sunday: closed\n  monday:\n    start: '08:00'\n    until: '20:00'\nitems: [1, x]\n")
    with pytest.raises(YamlFileError) as info:
        read_yaml(path).validate(_Day)
    shown = [str(p) for p in info.value.problems]
    # The unknown key comes first (the misspelling is the mistake, not the "missing" key it causes).
    assert shown[0] == f"{path}:5: days.monday.until: unknown key"
    assert f"{path}:4: days.monday.end: required key is missing" in shown  # the mapping that lacks it
    assert any(line.startswith(f"{path}:6: items[1]: ") for line in shown), shown


def test_validate_missing_top_level_key_is_line_one(tmp_path: Path) -> None:
    path = _doc(tmp_path, "items: []\n")
    with pytest.raises(YamlFileError) as info:
        read_yaml(path).validate(_Day)
    assert str(info.value) == f"{path}:1: days: required key is missing"


# Every YAML file the service reads refuses a duplicate key, naming the file and the line.


def _policies(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


def _duplicate(path: Path, key_line: str) -> int:
    """Repeat `key_line` right after itself; returns the 1-based line of the repeat."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if line.rstrip("\n") == key_line)
    lines.insert(index + 1, lines[index])
    path.write_text("".join(lines), encoding="utf-8")
    return index + 2


@pytest.mark.parametrize(
    ("relative", "key_line", "load"),
    [
        ("outbound/rates.yaml", "severity: block", load_outbound_rules),
        ("inbound/wrong-number.yaml", "severity: high", load_rules),
        ("templates/borrower.yaml", "kind: templates", load_templates),
        ("sending/caps.yaml", "kind: caps", load_sending_policy),
    ],
    ids=["outbound", "inbound", "templates", "sending"],
)
def test_policy_file_duplicate_key_refused_with_line(tmp_path: Path, relative: str, key_line: str, load) -> None:
    policies = _policies(tmp_path)
    line = _duplicate(policies / relative, key_line)
    with pytest.raises(PolicyError) as info:
        load(policies)
    assert info.value.line == line
    assert "duplicate key" in info.value.message
    assert f"{relative}:{line}: " in str(info.value)


def test_brokers_file_duplicate_key_refused_with_line(tmp_path: Path) -> None:
    path = tmp_path / "brokers.yaml"
    shutil.copy(REPO / "brokers.example.yaml", path)
    first = next(line for line in path.read_text(encoding="utf-8").splitlines() if "timezone:" in line)
    line = _duplicate(path, first)
    with pytest.raises(ConfigError, match=rf"{path}:{line}: duplicate key 'timezone'"):
        load_brokers(path)


def test_thresholds_duplicate_key_refused_with_line(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.yaml"
    path.write_text("guard:\n  block_recall_min: 1.0\n  block_recall_min: 0.5\n", encoding="utf-8")
    with pytest.raises(ThresholdError, match=rf"{path}:3: duplicate key 'block_recall_min'"):
        load_thresholds(path)


def test_thresholds_schema_error_names_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.yaml"
    path.write_text("guard:\n  block_recall_min: 1.0\n  block_recal_max: 0.5\n", encoding="utf-8")
    with pytest.raises(ThresholdError, match=rf"{path}:3: guard.block_recal_max: unknown key"):
        load_thresholds(path)


def test_conversation_script_duplicate_key_refused_with_line(tmp_path: Path) -> None:
    scripts = tmp_path / "conversations"
    scripts.mkdir()
    source = sorted((REPO / "evals" / "conversations").glob("*.yaml"))[0]
    path = scripts / source.name
    shutil.copy(source, path)
    first = next(line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("caller:"))
    line = _duplicate(path, first)
    with pytest.raises(DatasetError, match=rf"{path}:{line}: duplicate key 'caller'"):
        load_scripts(scripts)


def test_prompt_front_matter_duplicate_key_refused_with_file_line(tmp_path: Path) -> None:
    path = tmp_path / "reply_extraction.md"
    shutil.copy(REPO / "prompts" / "reply_extraction.md", path)
    line = _duplicate(path, "temperature: 0")
    with pytest.raises(PromptError, match=rf"{path}:{line}: duplicate key 'temperature'"):
        load_prompt("reply_extraction", prompts_dir=tmp_path)


def _shape(node: Any, out: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Every node's kind, tag, lines, columns and scalar value, in document order."""
    value = node.value if isinstance(node, yaml.ScalarNode) else None
    out.append((type(node).__name__, node.tag, node.start_mark.line, node.start_mark.column,
                node.end_mark.line, value))
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _shape(child, out)
    elif isinstance(node, yaml.MappingNode):
        for key, child in node.value:
            _shape(key, out)
            _shape(child, out)
    return out


def _pure(text: str) -> tuple[Any, Any]:
    loader = yamlfile._StrictLoader(text)
    try:
        node = loader.get_single_node()
        return node, loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


_REPO_YAML = sorted(p for p in REPO.rglob("*.y*ml") if ".venv" not in p.parts and ".git" not in p.parts)


@pytest.mark.skipif(yamlfile._FastLoader is None, reason="PyYAML without libyaml: only the pure loader runs")
def test_read_yaml_libyaml_gives_pure_loaders_data_and_lines_for_every_repo_file() -> None:
    """Start-up reads its files on libyaml: the data and every node's line are the pure-Python loader's."""
    assert len(_REPO_YAML) > 100
    for path in _REPO_YAML:
        text = path.read_text(encoding="utf-8")
        fast_node, fast_data = yamlfile._compose(text)
        pure_node, pure_data = _pure(text)
        assert fast_data == pure_data, path
        assert _shape(fast_node, []) == _shape(pure_node, []), path


@pytest.mark.parametrize(
    "text",
    ["a: 1\nb: [1,\n", "a: 1\n\tb: 2\n", "a: 1\nb: \x07bell\n", "a: 'open\n", "a: 1\na: 2\n", "- x\ny: 1\n",
     "start: '08:00'\t\n", "key:\tvalue\n", "reply: call me\tlater\n", "states: [FL,\tTX]\n", "a: 1\t# c\n"],
    ids=["unclosed-flow", "tab-indent", "control-character", "unclosed-quote", "duplicate", "mixed",
         "trailing-tab", "tab-after-colon", "tab-in-plain-scalar", "tab-in-flow", "tab-before-comment"],
)
def test_read_yaml_error_is_pure_loaders_message(tmp_path: Path, text: str) -> None:
    """A file libyaml refuses (or that has characters only libyaml would take) is read again by the pure-Python
    loader, so its message and line are the ones the pure loader gives."""
    path = _doc(tmp_path, text)
    with pytest.raises(YamlFileError) as info:
        read_yaml(path)
    with pytest.raises(yaml.YAMLError) as pure:
        _pure(text)
    mark = getattr(pure.value, "problem_mark", None)
    assert info.value.first.line == (mark.line + 1 if mark is not None else None)
    problem = str(getattr(pure.value, "problem", None) or pure.value)
    assert problem in info.value.first.message
