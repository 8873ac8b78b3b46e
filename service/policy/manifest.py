"""The compliance manifest: which outbound rules must be in force, at what severity, proven by what examples.

``policies/outbound/required.yaml`` (kind ``outbound_manifest``) is owned by compliance, reviewed like any
policy file, and part of the policy-set version (it is a YAML file under policies/). Without it, deleting
``rates.yaml``, renaming its id or setting ``severity: warn`` would quietly switch a rule off: the guard
would still build and every remaining example would still pass.

    required:
      - id: no-rate-quotes          # an outbound_rule id that must exist
        min_severity: block         # block > warn
        must_match:                 # the manifest's own examples: each must be blocked BY this rule
          - "Rates from 5.99% APR this week."

A rule whose patterns were neutered and whose examples were rewritten to match still fails on the
manifest's examples. The manifest's location is fixed in code (MANIFEST_PATH): a missing, empty or
malformed manifest is itself a finding, so the service never starts without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from service.errors import PolicyError
from service.policy.files import LoadedRule, PolicyFile, PolicyFileModel, display_path, read_policy

MANIFEST_PATH = Path("outbound") / "required.yaml"  # relative to the policies folder
SEVERITY_RANK = {"warn": 1, "block": 2}


class RequiredRule(BaseModel):
    """One rule the manifest requires."""

    model_config = ConfigDict(extra="forbid")

    id: StrictStr
    min_severity: Literal["block", "warn"]
    must_match: list[StrictStr] = Field(min_length=1)  # the examples vocabulary of every rule kind


class Manifest(PolicyFileModel):
    """The whole manifest file."""

    kind: Literal["outbound_manifest"]
    owner: StrictStr = Field(min_length=2)
    required: list[RequiredRule] = Field(min_length=1)

    @field_validator("required")
    @classmethod
    def _unique_ids(cls, value: list[RequiredRule]) -> list[RequiredRule]:
        ids = [r.id for r in value]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            msg = f"rule(s) listed more than once: {', '.join(dupes)}"
            raise ValueError(msg)
        return value


@dataclass(frozen=True)
class LoadedManifest:
    manifest: Manifest
    file: PolicyFile

    @property
    def display(self) -> str:
        return self.file.display


def manifest_display(policies_dir: Path) -> str:
    return display_path(policies_dir / MANIFEST_PATH, policies_dir)


def load_manifest(policies_dir: Path) -> LoadedManifest:
    """Read and validate the manifest at its fixed place; PolicyError (naming the file) if it is unusable."""
    path = policies_dir / MANIFEST_PATH
    where = manifest_display(policies_dir)
    if not path.is_file():
        raise PolicyError(where, None, "the compliance manifest of required outbound rules is missing")
    policy = read_policy(path, policies_dir)
    return LoadedManifest(policy.validate(Manifest), policy)


def manifest_findings(loaded: LoadedManifest, rules: list[LoadedRule]) -> list[PolicyError]:
    """Every required rule that is missing or below its minimum severity (examples are run by the guard)."""
    by_id = {lr.rule.id: lr for lr in rules}
    findings: list[PolicyError] = []
    for required in loaded.manifest.required:
        rule = by_id.get(required.id)
        if rule is None:
            findings.append(PolicyError(
                loaded.display, f"required.{required.id}",
                "required outbound rule is missing (no file under policies/outbound has this id)",
            ))
        elif SEVERITY_RANK[rule.rule.severity] < SEVERITY_RANK[required.min_severity]:
            findings.append(PolicyError(
                rule.file.display, "severity",
                f"{required.id} is {rule.rule.severity!r} but {loaded.display} requires {required.min_severity!r}",
            ))
    return findings
