"""Policy files under policies/: a strict schema, one loader, and the policy-set version.

Every YAML file under policies/ has a header (`id`, `kind`, `title`, `rationale`) and kind-specific keys.
This module owns the header for every kind and the whole schema of `outbound_rule` files; the other kinds'
keys are validated by their owners (service.templates, service.replies.rules, service.sending.policy).

Errors are `PolicyError(path, field, message)`; the path is shown relative to the folder that holds
policies/ (``policies/outbound/rates.yaml``) so a finding reads the same on every machine.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictStr, ValidationError, field_validator

from service.errors import PolicyError

KINDS: dict[str, str] = {
    "outbound_rule": "outbound",
    "outbound_manifest": "outbound",  # policies/outbound/required.yaml, see service.policy.manifest
    "inbound_rule": "inbound",
    "templates": "templates",
    "quiet_hours": "sending",
    "caps": "sending",
}
POLICY_SUFFIXES = (".yaml", ".yml")
_KEBAB = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


class PolicyHeader(BaseModel):
    """The keys every policy file has, whatever its kind."""

    model_config = ConfigDict(extra="allow")

    id: StrictStr
    kind: StrictStr
    title: StrictStr = Field(min_length=3)
    rationale: StrictStr = Field(min_length=10)

    @field_validator("id")
    @classmethod
    def _kebab_case(cls, value: str) -> str:
        if not _KEBAB.match(value):
            msg = f"must be kebab-case (lowercase words joined by '-'), got {value!r}"
            raise ValueError(msg)
        return value

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in KINDS:
            msg = f"unknown kind {value!r}; expected one of {sorted(KINDS)}"
            raise ValueError(msg)
        return value


class Examples(BaseModel):
    """Texts the rule must block and texts it must let through: the rule's own test cases."""

    model_config = ConfigDict(extra="forbid")

    must_block: list[StrictStr] = Field(min_length=1)
    must_pass: list[StrictStr] = Field(min_length=1)


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        msg = f"bad regex {pattern!r}: {exc}"
        raise ValueError(msg) from None
    if compiled.fullmatch(""):
        msg = f"regex {pattern!r} matches the empty string"
        raise ValueError(msg)
    return compiled


class OutboundRule(BaseModel):
    """One outbound content rule: what a text to a borrower must never say.

    `patterns` are case-insensitive regexes; a match anywhere is a violation. `allow` patterns mark spans
    that are fine (e.g. "Msg & data rates may apply"); they are blanked out before `patterns` run, so a
    violation elsewhere in the same text is still found.
    """

    model_config = ConfigDict(extra="forbid")

    id: StrictStr
    kind: Literal["outbound_rule"]
    title: StrictStr = Field(min_length=3)
    rationale: StrictStr = Field(min_length=10)
    severity: Literal["block", "warn"]
    patterns: list[StrictStr] = Field(min_length=1)
    allow: list[StrictStr] = Field(default_factory=list)
    examples: Examples

    _compiled: list[re.Pattern[str]] = PrivateAttr(default_factory=list)
    _compiled_allow: list[re.Pattern[str]] = PrivateAttr(default_factory=list)

    @field_validator("patterns", "allow")
    @classmethod
    def _valid_regexes(cls, value: list[str]) -> list[str]:
        for pattern in value:
            _compile(pattern)
        return value

    def model_post_init(self, __context: Any) -> None:
        self._compiled = [_compile(p) for p in self.patterns]
        self._compiled_allow = [_compile(p) for p in self.allow]

    @property
    def compiled(self) -> list[re.Pattern[str]]:
        return self._compiled

    @property
    def compiled_allow(self) -> list[re.Pattern[str]]:
        return self._compiled_allow


@dataclass(frozen=True)
class PolicyFile:
    """One parsed policy file: where it is, its header, and its raw data for the kind's owner."""

    path: Path
    display: str
    header: PolicyHeader
    data: dict[str, Any]


@dataclass(frozen=True)
class LoadedRule:
    """An outbound rule with the file it came from."""

    rule: OutboundRule
    file: PolicyFile


def display_path(path: Path, policies_dir: Path) -> str:
    """`policies/outbound/rates.yaml`: the path relative to the folder that holds policies/."""
    try:
        return str(path.resolve().relative_to(policies_dir.resolve().parent))
    except ValueError:
        return str(path)


def policy_paths(policies_dir: Path) -> list[Path]:
    """Every policy file (YAML) under policies_dir, sorted."""
    return sorted(p for p in policies_dir.rglob("*") if p.is_file() and p.suffix in POLICY_SUFFIXES)


def policy_digest(policies_dir: Path) -> str:
    """The full content hash over every policy file (the manifest included): sorted relative paths and bytes."""
    digest = hashlib.sha256()
    for path in policy_paths(policies_dir):
        digest.update(path.relative_to(policies_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def policy_version(policies_dir: Path) -> str:
    """A short content hash over every policy file: sorted relative paths and their bytes."""
    return policy_digest(policies_dir)[:12]


def _first_error(display: str, exc: ValidationError) -> PolicyError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or None
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    elif err["type"] == "missing":
        message = "required key is missing"
    else:
        message = str(err["msg"]).removeprefix("Value error, ")
    return PolicyError(display, loc, message)


def _read(path: Path, policies_dir: Path) -> PolicyFile:
    display = display_path(path, policies_dir)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PolicyError(display, None, f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(display, None, "must be a mapping with id, kind, title and rationale")
    try:
        header = PolicyHeader.model_validate(data)
    except ValidationError as exc:
        raise _first_error(display, exc) from None
    folder = KINDS[header.kind]
    parent = path.parent.relative_to(policies_dir).as_posix() if path.parent != policies_dir else ""
    if parent.split("/")[0] != folder:
        raise PolicyError(display, "kind", f"a {header.kind} file belongs under policies/{folder}/")
    return PolicyFile(path=path, display=display, header=header, data=data)


def read_policy_files(policies_dir: Path) -> tuple[list[PolicyFile], list[PolicyError]]:
    """Parse every policy file's header; returns the good files and every error (duplicate ids included)."""
    files: list[PolicyFile] = []
    errors: list[PolicyError] = []
    seen: dict[str, str] = {}
    for path in policy_paths(policies_dir):
        try:
            policy = _read(path, policies_dir)
        except PolicyError as exc:
            errors.append(exc)
            continue
        if policy.header.id in seen:
            also = seen[policy.header.id]
            errors.append(PolicyError(policy.display, "id", f"duplicate id (also in {also})"))
            continue
        seen[policy.header.id] = policy.display
        files.append(policy)
    return files, errors


def outbound_rules(files: list[PolicyFile]) -> tuple[list[LoadedRule], list[PolicyError]]:
    """Validate the outbound_rule files strictly; returns the rules and every file's first error."""
    rules: list[LoadedRule] = []
    errors: list[PolicyError] = []
    for policy in files:
        if policy.header.kind != "outbound_rule":
            continue
        try:
            rules.append(LoadedRule(OutboundRule.model_validate(policy.data), policy))
        except ValidationError as exc:
            errors.append(_first_error(policy.display, exc))
    return rules, errors


def load_outbound_rules(policies_dir: Path) -> list[LoadedRule]:
    """Every outbound rule under policies_dir; the first problem found anywhere is raised as PolicyError."""
    files, errors = read_policy_files(policies_dir)
    rules, rule_errors = outbound_rules(files)
    errors += rule_errors
    if errors:
        raise errors[0]
    if not rules:
        where = display_path(policies_dir / "outbound", policies_dir)
        raise PolicyError(where, None, "no outbound_rule files")
    return rules
