"""Strict YAML files: the one reader every YAML file the service reads goes through.

Policy files (policies/**), the brokers file, prompt front matter, the eval thresholds and the eval
conversation scripts are all read here, the same way:

- safe loading only (no Python tags), and a duplicate key is an error (PyYAML silently keeps the last one,
  so two ``FL:`` entries would quietly become one);
- validation into a strict pydantic model, where every error names the file, the 1-based line of the node
  the error is about (the pydantic error location is walked down the composed YAML tree) and the field
  (``states.FL.window``, ``examples.must_match[0]``, ``brokers[1].timezone``).

Problems are `YamlProblem`s; `YamlFileError` carries them. Each file's owner turns them into its own error
type (PolicyError, ConfigError, PromptError, DatasetError, ThresholdError), so callers catch what they did.

This lives at the top of `service/`, not under `service/policy/`, because half its users (brokers, prompts,
evals) are not policy files; `service.policy.files` builds the policy-file header on top of it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

__all__ = ["YamlDocument", "YamlFileError", "YamlProblem", "field_path", "read_yaml"]

_M = TypeVar("_M", bound=BaseModel)

# Location parts pydantic adds that are not keys a reviewer wrote: union members ("Window", "str",
# "literal['closed']"), validators ("function-after[...]"), dict keys ("[key]").
_LABEL = re.compile(r"^(?:\[key\]|function-.*|literal\[.*|_?[A-Z][a-z]\w*|str|int|float|bool|list\[.*|dict\[.*)$")

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # `<<: *anchor` shares fields; a key written next to it overrides them, as YAML says
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)

_FastLoader: Any = None
if getattr(yaml, "__with_libyaml__", False):  # PyYAML's wheels carry libyaml: the same documents, ~4x faster

    class _FastLoader(yaml.CSafeLoader):  # type: ignore[no-redef]
        """The strict loader on libyaml, for files that load; a file that does not is read again by
        `_StrictLoader`, so every message and line is the pure-Python loader's."""

    _FastLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _compose(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree and the data of `text`, on libyaml when it loads there (and has no tab and only the
    characters the pure-Python reader accepts), else on the pure-Python loader, which raises the located
    YAMLError."""
    # libyaml takes tabs between tokens ("key:\tvalue", a trailing tab) that the pure reader refuses: a text
    # with a tab is read by the pure loader, so both accept exactly the same files.
    if _FastLoader is not None and "\t" not in text and yaml.reader.Reader.NON_PRINTABLE.search(text) is None:
        try:
            return _load(_FastLoader(text))
        except yaml.YAMLError:
            pass  # read again below for the pure-Python loader's message
    return _load(_StrictLoader(text))


def _load(loader: Any) -> tuple[yaml.Node | None, Any]:
    try:
        node = loader.get_single_node()
        return node, loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


@dataclass(frozen=True)
class YamlProblem:
    """One located problem: `path:line: field: message` (line and field when known)."""

    path: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class YamlFileError(ValueError):
    """A YAML file that cannot be read, is not YAML, or does not fit its schema. `problems` is never empty;
    `first` is the one to show when only one is shown."""

    def __init__(self, problems: Sequence[YamlProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def first(self) -> YamlProblem:
        return self.problems[0]


def field_path(loc: Sequence[int | str]) -> str:
    """A location as the reviewer wrote it, ``states.TX.days.sunday``, ``examples[0].where`` (pydantic's
    union and validator labels left out)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _LABEL.match(part):
            out += f".{part}" if out else part
    return out


def _message(err: ErrorDetails) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    return str(err["msg"]).removeprefix("Value error, ")


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file: its data, and the composed node tree that gives each value's line."""

    path: str  # as shown in problems
    data: Any
    node: yaml.Node | None
    line_offset: int = 0  # lines before the YAML text in its file (a prompt's opening '---')

    def locate(self, loc: Sequence[int | str]) -> tuple[int | None, str | None]:
        """The 1-based line and the field path of the value at `loc`.

        The location is walked down the composed tree: a key the file has is followed; a part that is not
        (a missing key, or one of pydantic's labels) leaves the walk where it is, so a missing key is
        reported at the mapping that lacks it. A label is left out of the field path.
        """
        current = self.node
        parts: list[int | str] = []
        for part in loc:
            if isinstance(current, yaml.SequenceNode) and isinstance(part, int) and part < len(current.value):
                current = current.value[part]
                parts.append(part)
                continue
            if isinstance(current, yaml.MappingNode):
                value = next((v for k, v in current.value if k.value == part), None)
                if value is not None:
                    current = value
                    parts.append(part)
                    continue
            if isinstance(part, int) or not _LABEL.match(part):
                parts.append(part)
        line = current.start_mark.line + 1 + self.line_offset if current is not None else None
        return line, field_path(parts) or None

    def line_of(self, loc: Sequence[int | str]) -> int | None:
        return self.locate(loc)[0]

    def problems(self, exc: ValidationError, prefix: Sequence[int | str] = ()) -> list[YamlProblem]:
        """Every validation error, located; an unknown key comes first, since a misspelt key also makes the
        right one "missing" and the misspelling is the actual mistake. `prefix` is where the validated
        value sits in the file (``("brokers", 2)``)."""
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        out: list[YamlProblem] = []
        for err in errors:
            line, field = self.locate((*prefix, *err["loc"]))
            out.append(YamlProblem(self.path, line, field, _message(err)))
        return out

    def validate(self, model: type[_M], data: Any = None, *, prefix: Sequence[int | str] = ()) -> _M:
        """`data` (the whole document by default) validated by `model`; YamlFileError with every problem."""
        try:
            return model.model_validate(self.data if data is None else data)
        except ValidationError as exc:
            raise YamlFileError(self.problems(exc, prefix)) from None

    def problem(self, message: str, loc: Sequence[int | str] = (), field: str | None = None) -> YamlProblem:
        """A problem of the owner's own (a cross-field check) located at `loc`."""
        line, located = self.locate(loc)
        return YamlProblem(self.path, line, field if field is not None else located, message)


def read_yaml(path: Path, *, display: str | None = None, text: str | None = None, line_offset: int = 0) -> YamlDocument:
    """Parse one YAML file (or `text` that came from it) strictly; YamlFileError when it cannot be read or
    parsed, located at the offending line. `display` is the path shown in problems (default: `path`)."""
    shown = display if display is not None else str(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise YamlFileError([YamlProblem(shown, None, None, "not UTF-8")]) from None
        except OSError as exc:
            raise YamlFileError([YamlProblem(shown, None, None, exc.strerror or str(exc))]) from None
    try:
        node, data = _compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 + line_offset if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        if problem.startswith("duplicate key"):
            message = problem
        else:
            message = f"not valid YAML: {context}, {problem}" if context else f"not valid YAML: {problem}"
        raise YamlFileError([YamlProblem(shown, line, None, message)]) from None
    return YamlDocument(path=shown, data=data, node=node, line_offset=line_offset)
