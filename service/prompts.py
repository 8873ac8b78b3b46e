"""Prompts as versioned, reviewable files: `prompts/<name>.md`.

A prompt file is YAML front matter followed by a Markdown body::

    ---
    name: reply_extraction          # must equal the file's stem
    version: 1.0.0                  # MAJOR.MINOR.PATCH, bumped by hand on every change
    description: one line for the reviewer
    temperature: 0
    output_schema: LLMExtraction    # optional: the response model the prompt is written for
    ---
    <!-- role: system -->
    You extract ... between $begin and $end ...
    <!-- role: user -->
    Received: $received_date
    ...

The body is split into chat messages by `<!-- role: system|user|assistant -->` marker lines (invisible when
the Markdown is rendered, explicit when the file is read raw); it must start with one. `$variables` use
`string.Template` syntax (`$$` for a literal dollar). Rendering is strict: a variable the body uses but the
caller does not give, or a value the body never uses, is an error, never a blank or a silent extra.
Unknown and duplicate front-matter keys are errors too (read by service.yamlfile, located by line).

A prompt written for a structured answer lists the fields it describes as top-level bullets under a line that
reads `Fields:` (`- loan_type: ...`, continuation lines indented, the list ending at the first blank line);
`Prompt.listed_fields` reads them so the caller can hold the prompt against its output schema at start-up.

Every decision a prompt produces should record `name`, `version` and `content_hash` (sha256 of the whole
file); `version_tag` joins the last two as semver build metadata, e.g. `1.0.0+3f2a9c01b7de`, so an edit that
forgot to bump the version is still visible in the audit trail.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from pydantic import BaseModel, ConfigDict, Field

from service.errors import ConfigError
from service.resources import shipped
from service.yamlfile import YamlFileError, read_yaml

PROMPTS_DIR = shipped("prompts")  # the prompts shipped with textback (the package data of a wheel, or the checkout's)

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(?P<meta>.*?)\n---[ \t]*\n(?P<body>.*)\Z", re.DOTALL)
_ROLE_MARKER = re.compile(r"^<!--\s*role:\s*(?P<role>[a-z]+)\s*-->[ \t]*$", re.MULTILINE)
_ROLES = frozenset({"system", "user", "assistant"})
_FIELDS_HEADING = "Fields:"
_FIELD_BULLET = re.compile(r"^- (?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*:")


class PromptError(ConfigError):
    """A prompt file is invalid, or a render was asked with missing or unknown variables."""


class PromptMeta(BaseModel):
    """The front matter of a prompt file; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    description: str = Field(min_length=1)
    temperature: float = Field(ge=0, le=2)
    output_schema: str | None = None


@dataclass(frozen=True)
class PromptSection:
    role: str
    template: Template


@dataclass(frozen=True)
class Prompt:
    """A loaded prompt file: metadata, the message templates and the hash of the file's bytes."""

    meta: PromptMeta
    sections: tuple[PromptSection, ...]
    content_hash: str
    path: Path

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def temperature(self) -> float:
        return self.meta.temperature

    @property
    def output_schema(self) -> str | None:
        return self.meta.output_schema

    @property
    def version_tag(self) -> str:
        """`<version>+<first 12 hex of the content hash>`: what to record with a decision."""
        return f"{self.meta.version}+{self.content_hash[:12]}"

    @property
    def variables(self) -> frozenset[str]:
        """Every `$variable` the body uses."""
        return frozenset(name for section in self.sections for name in section.template.get_identifiers())

    @property
    def listed_fields(self) -> tuple[str, ...]:
        """The `- name:` bullets under each `Fields:` line, in order (empty when the prompt has no such list)."""
        names: list[str] = []
        for section in self.sections:
            in_list = False
            for line in section.template.template.splitlines():
                if line.strip() == _FIELDS_HEADING:
                    in_list = True
                elif in_list and not line.strip():
                    in_list = False
                elif in_list and (bullet := _FIELD_BULLET.match(line)):
                    names.append(bullet["name"])
        return tuple(names)

    def sections_using(self, variable: str) -> tuple[str, ...]:
        """The roles of the sections whose text uses `$variable`."""
        return tuple(s.role for s in self.sections if variable in s.template.get_identifiers())

    def render(self, **values: str) -> list[dict[str, str]]:
        """The chat messages with every variable filled; missing or unknown variables raise PromptError."""
        missing = self.variables - values.keys()
        unknown = values.keys() - self.variables
        if missing or unknown:
            problems = []
            if missing:
                problems.append(f"missing {sorted(missing)}")
            if unknown:
                problems.append(f"unknown {sorted(unknown)}")
            raise PromptError(f"{self.path.name}: cannot render: {'; '.join(problems)}")
        return [
            {"role": section.role, "content": section.template.substitute(values)} for section in self.sections
        ]


def load_prompt(name: str, *, prompts_dir: Path = PROMPTS_DIR) -> Prompt:
    """Load and validate `prompts_dir/<name>.md`."""
    path = prompts_dir / f"{name}.md"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PromptError(f"{path}: cannot read prompt file ({exc.strerror})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PromptError(f"{path}: not UTF-8") from exc
    text = text.replace("\r\n", "\n")

    match = _FRONT_MATTER.match(text)
    if match is None:
        raise PromptError(f"{path}: must start with YAML front matter between '---' lines")
    try:
        # The front matter starts on the file's second line (after the opening '---').
        doc = read_yaml(path, text=match["meta"], line_offset=1)
        if not isinstance(doc.data, dict):
            raise PromptError(f"{path}:2: front matter must be a mapping")
        meta = doc.validate(PromptMeta)
    except YamlFileError as exc:
        raise PromptError("; ".join(f"{problem} (front matter)" for problem in exc.problems)) from exc
    if meta.name != path.stem:
        raise PromptError(f"{path}: name {meta.name!r} does not match the file name {path.stem!r}")

    sections = _split_sections(match["body"], path)
    return Prompt(meta=meta, sections=sections, content_hash=hashlib.sha256(raw).hexdigest(), path=path)


def _split_sections(body: str, path: Path) -> tuple[PromptSection, ...]:
    markers = list(_ROLE_MARKER.finditer(body))
    if not markers or body[: markers[0].start()].strip():
        raise PromptError(f"{path}: the body must start with a '<!-- role: system|user|assistant -->' line")
    sections = []
    for index, marker in enumerate(markers):
        role = marker["role"]
        if role not in _ROLES:
            raise PromptError(f"{path}: unknown role {role!r} (expected one of {sorted(_ROLES)})")
        end = markers[index + 1].start() if index + 1 < len(markers) else len(body)
        content = body[marker.end() : end].strip("\n")
        if not content.strip():
            raise PromptError(f"{path}: the {role} section #{index + 1} is empty")
        template = Template(content)
        if not template.is_valid():
            raise PromptError(f"{path}: the {role} section #{index + 1} has an invalid '$' placeholder")
        sections.append(PromptSection(role=role, template=template))
    return tuple(sections)
