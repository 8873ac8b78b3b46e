"""Policy files under policies/: the header every kind shares, the outbound rule schema, the policy-set version.

Every YAML file under policies/ is read by the one strict reader (service.yamlfile: duplicate keys refused,
every error located by file, line and field) and starts with the same header (`PolicyFileModel`: `id`,
`kind`, `title`, `rationale`, and the reviewer's `summary`, `cites`, `open_questions`, `internal_notes`). Each
kind's model extends that header; this module owns the header for every
kind, the examples vocabulary every rule kind shares (`Examples`), the `define:` fragments every rule kind
may use (`expand_defines`), and the whole schema of `outbound_rule` files. The other kinds' keys are
validated by their owners (service.templates, service.replies.rule, service.sending.policy,
service.policy.manifest, service.retention_policy).

Errors are `PolicyError(path, field, message, line=...)`; the path is shown relative to the folder that holds
policies/ (``policies/outbound/rates.yaml``) so a finding reads the same on every machine.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictStr,
    ValidationInfo,
    field_validator,
)

from service.errors import PolicyError
from service.yamlfile import YamlDocument, YamlFileError, YamlProblem, read_yaml

KINDS: dict[str, str] = {
    "outbound_rule": "outbound",
    "outbound_manifest": "outbound",  # policies/outbound/required.yaml, see service.policy.manifest
    "inbound_rule": "inbound",
    "spelling": "spelling",
    "scope": "scopes",  # policies/scopes/*.yaml, see service.replies.scopes  # policies/spelling/*.yaml, see service.replies.spelling
    "templates": "templates",
    "quiet_hours": "sending",
    "caps": "sending",
    "human_texts": "sending",  # policies/sending/human.yaml, see service.sending.human_policy
    "opt_out": "sending",  # policies/sending/opt_out.yaml, see service.sending.opt_out_policy
    "sufficiency": "reporting",  # policies/reporting/sufficiency.yaml, see service.sufficiency
    "retention": "retention",  # policies/retention/retention.yaml, see service.retention_policy
}
POLICY_SUFFIXES = (".yaml", ".yml")
# policies/approvals.yaml: who approved which policy-set version (service.policy.approvals). It is not a policy
# file: it is left out of the version it records, so approving a version does not change it.
APPROVALS_FILE = "approvals.yaml"
_KEBAB = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_DEFINE_REF = re.compile(r"\$\{([a-z_][a-z0-9_]*)\}")
_M = TypeVar("_M", bound=BaseModel)


class PolicyFileModel(BaseModel):
    """The header every policy file starts with; each kind's model extends it with `kind` and its own keys.

    Unknown keys are errors in every kind."""

    model_config = ConfigDict(extra="forbid")

    id: StrictStr
    title: StrictStr = Field(min_length=3)
    rationale: StrictStr = Field(min_length=10)
    # What the reviewer's report shows (service.policy.report); `policy check` requires `summary` on every file
    # and `cites` on a file whose rationale cites law (service.policy.check.header_findings).
    summary: StrictStr | None = Field(default=None, min_length=10)  # plain words, no regex: blocks/routes/allows
    cites: list[StrictStr] = Field(default_factory=list)  # the laws and regulations the file relies on
    open_questions: list[StrictStr] = Field(default_factory=list)  # for counsel; the report's own section
    internal_notes: StrictStr | None = None  # engineering notes; the report never shows them

    @field_validator("id")
    @classmethod
    def _kebab_case(cls, value: str) -> str:
        if not _KEBAB.match(value):
            msg = f"must be kebab-case (lowercase words joined by '-'), got {value!r}"
            raise ValueError(msg)
        return value


class PolicyHeader(PolicyFileModel):
    """The header alone, whatever the kind (its other keys are kept for the kind's owner)."""

    model_config = ConfigDict(extra="allow")

    kind: StrictStr

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in KINDS:
            msg = f"unknown kind {value!r}; expected one of {sorted(KINDS)}"
            raise ValueError(msg)
        return value


class Examples(BaseModel):
    """A rule's own test cases, in every rule kind: texts the rule must match, texts it must not.

    What "match" means is the kind's: an inbound rule fires (sets its field); an outbound rule blocks. For an
    outbound rule a `must_not_match` text must pass the whole guard (it is a text that may be sent), not just
    this rule."""

    model_config = ConfigDict(extra="forbid")

    must_match: list[StrictStr] = Field(min_length=1)
    must_not_match: list[StrictStr] = Field(default_factory=list)


class OutboundExamples(Examples):
    """An outbound rule proves both sides: at least one text it blocks and one the guard lets through."""

    must_not_match: list[StrictStr] = Field(min_length=1)


def expand_defines(pattern: str, define: dict[str, str]) -> str:
    """`pattern` with each ``${name}`` replaced by the rule's `define:` fragment; ValueError for an unknown one."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in define:
            msg = f"unknown ${{{name}}}; define it under 'define'"
            raise ValueError(msg)
        return define[name]

    # Definitions may use earlier-looking definitions; two passes are plenty for readable files.
    return _DEFINE_REF.sub(sub, _DEFINE_REF.sub(sub, pattern))


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


class OutboundRule(PolicyFileModel):
    """One outbound content rule: what a text to a borrower must never say.

    `patterns` are case-insensitive regexes; a match anywhere is a violation. `allow` patterns mark spans
    that are fine (e.g. "Msg & data rates may apply"); they are blanked out before `patterns` run, so a
    violation elsewhere in the same text is still found. Both may use ``${name}`` fragments from `define`.
    """

    kind: Literal["outbound_rule"]
    severity: Literal["block", "warn"]
    define: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    patterns: list[StrictStr] = Field(min_length=1)
    allow: list[StrictStr] = Field(default_factory=list)
    examples: OutboundExamples

    _compiled: list[re.Pattern[str]] = PrivateAttr(default_factory=list)
    _compiled_allow: list[re.Pattern[str]] = PrivateAttr(default_factory=list)

    @field_validator("patterns", "allow")
    @classmethod
    def _valid_regexes(cls, value: list[str], info: ValidationInfo) -> list[str]:
        define = info.data.get("define") or {}
        for pattern in value:
            _compile(expand_defines(pattern, define))
        return value

    def model_post_init(self, __context: Any) -> None:
        self._compiled = [_compile(expand_defines(p, self.define)) for p in self.patterns]
        self._compiled_allow = [_compile(expand_defines(p, self.define)) for p in self.allow]

    @property
    def compiled(self) -> list[re.Pattern[str]]:
        return self._compiled

    @property
    def compiled_allow(self) -> list[re.Pattern[str]]:
        return self._compiled_allow


@dataclass(frozen=True)
class PolicyFile:
    """One parsed policy file: where it is, its header, and its parsed document for the kind's owner."""

    path: Path
    display: str
    header: PolicyHeader
    doc: YamlDocument

    @property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = self.doc.data  # a mapping: read_policy refuses any other document
        return data

    def validate(self, model: type[_M]) -> _M:
        """The whole file validated by its kind's model; PolicyError (file, line, field) on the first problem."""
        try:
            return self.doc.validate(model)
        except YamlFileError as exc:
            raise policy_error(exc.first) from None


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
    """Every policy file (YAML) under policies_dir, sorted; never the approvals record (it signs the others)."""
    approvals = policies_dir / APPROVALS_FILE
    return sorted(
        p for p in policies_dir.rglob("*") if p.is_file() and p.suffix in POLICY_SUFFIXES and p != approvals
    )


def policy_digest(policies_dir: Path) -> str:
    """The full content hash over every policy file (the manifest included): sorted relative paths and bytes."""
    digest = hashlib.sha256()
    for path in policy_paths(policies_dir):
        digest.update(path.relative_to(policies_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def policy_version(policies_dir: Path) -> str:
    """The policy-set version id: a short content hash over every policy file (sorted relative paths and their
    bytes). The one id the report, the audit trail and the approvals use."""
    return policy_digest(policies_dir)[:12]


def policy_error(problem: YamlProblem) -> PolicyError:
    """A located YAML problem as the PolicyError every policy loader raises."""
    return PolicyError(problem.path, problem.field, problem.message, line=problem.line)


def read_policy(path: Path, policies_dir: Path) -> PolicyFile:
    """One policy file, parsed strictly, its header validated and its folder checked against its kind."""
    display = display_path(path, policies_dir)
    try:
        doc = read_yaml(path, display=display)
    except YamlFileError as exc:
        raise policy_error(exc.first) from None
    if not isinstance(doc.data, dict):
        raise PolicyError(display, None, "must be a mapping with id, kind, title and rationale", line=1)
    try:
        header = doc.validate(PolicyHeader)
    except YamlFileError as exc:
        raise policy_error(exc.first) from None
    folder = KINDS[header.kind]
    parent = path.parent.relative_to(policies_dir).as_posix() if path.parent != policies_dir else ""
    if parent.split("/")[0] != folder:
        line = doc.line_of(("kind",))
        raise PolicyError(display, "kind", f"a {header.kind} file belongs under policies/{folder}/", line=line)
    return PolicyFile(path=path, display=display, header=header, doc=doc)


def load_policy_model(path: Path, model: type[_M], *, display: str | None = None) -> _M:
    """A policy file read on its own (no header-folder check), validated by `model`; PolicyError otherwise."""
    shown = display if display is not None else str(path)
    if not path.is_file():
        raise PolicyError(shown, None, "file not found")
    try:
        doc = read_yaml(path, display=shown)
        if not isinstance(doc.data, dict):
            raise PolicyError(shown, None, "expected a mapping at the top level", line=1)
        return doc.validate(model)
    except YamlFileError as exc:
        raise policy_error(exc.first) from None


def read_policy_files(policies_dir: Path) -> tuple[list[PolicyFile], list[PolicyError]]:
    """Parse every policy file's header; returns the good files and every error (duplicate ids included)."""
    files: list[PolicyFile] = []
    errors: list[PolicyError] = []
    seen: dict[str, str] = {}
    for path in policy_paths(policies_dir):
        try:
            policy = read_policy(path, policies_dir)
        except PolicyError as exc:
            errors.append(exc)
            continue
        if policy.header.id in seen:
            also = seen[policy.header.id]
            line = policy.doc.line_of(("id",))
            errors.append(PolicyError(policy.display, "id", f"duplicate id (also in {also})", line=line))
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
            rules.append(LoadedRule(policy.validate(OutboundRule), policy))
        except PolicyError as exc:
            errors.append(exc)
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
