"""Sign-offs of the policy set: who approved which exact version, when, and what they noted.

``policies/approvals.yaml`` is a reviewable file written by `textback policy approve` and read by the report's
cover page, `policy check` and `serve` (with TEXTBACK_REQUIRE_APPROVED_POLICIES). It is left out of the version
it records (service.policy.files.policy_paths), so adding an approval does not change the version approved.
An approval names the short version id a person reads and the full content digest it stands for; only an
entry whose digest equals the policy set's digest approves it, so any later edit to any policy file leaves the
set unapproved until someone approves the new version.

    approvals:
      - version: 3f2a9c01b7de
        digest: 3f2a9c01b7de...          # sha256 over every policy file (64 hex)
        reviewer: Dana Whitfield, CCO
        approved_at: "2026-12-03T09:14:02Z"
        note: Reviewed with counsel; quiet hours as filed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from service.errors import PolicyError
from service.policy.files import APPROVALS_FILE, display_path, load_policy_model, policy_digest
from service.resources import is_package_data

HEADER = (
    "# Sign-offs of the policy set in this folder: one entry per approval of an exact version.\n"
    "# Written by `textback policy approve --reviewer NAME [--note ...]`; review it like any policy change.\n"
    "# `version` is the policy-set version id; `digest` the full content hash it stands for. Editing any\n"
    "# policy file makes a new version that needs its own approval.\n"
)


class Approval(BaseModel):
    """One approval of one version."""

    model_config = ConfigDict(extra="forbid")

    version: StrictStr = Field(pattern=r"^[0-9a-f]{12}$")
    digest: StrictStr = Field(pattern=r"^[0-9a-f]{64}$")
    reviewer: StrictStr = Field(min_length=2, max_length=200)
    approved_at: datetime
    note: StrictStr | None = Field(default=None, max_length=2000)

    @field_validator("approved_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ApprovalsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approvals: list[Approval] = Field(default_factory=list)


@dataclass(frozen=True)
class ApprovalState:
    """The policy set's version and the approvals of exactly that version (none: not approved)."""

    version: str
    digest: str
    approvals: tuple[Approval, ...]

    @property
    def approved(self) -> bool:
        return bool(self.approvals)

    @property
    def latest(self) -> Approval | None:
        return max(self.approvals, key=lambda a: a.approved_at) if self.approvals else None

    def describe(self) -> str:
        """One line a person reads: `approved by X on DATE` or `NOT APPROVED`."""
        latest = self.latest
        if latest is None:
            return f"policy set {self.version}: NOT APPROVED"
        when = latest.approved_at.strftime("%Y-%m-%d %H:%M UTC")
        return f"policy set {self.version}: approved by {latest.reviewer} on {when}"


def approve_command(policies_dir: Path) -> str:
    """The command that signs off the policy set in `policies_dir`, as a person would type it."""
    if is_package_data(policies_dir):  # an installed wheel's own copy: approve an exported one
        return ('textback policies export DIR, then TEXTBACK_POLICIES_DIR=DIR/policies textback policy approve '
                '--reviewer "NAME, ROLE"')
    where = "" if policies_dir == Path("policies") else f" --policies {policies_dir}"
    return f'textback policy approve --reviewer "NAME, ROLE"{where}'


def approvals_path(policies_dir: Path) -> Path:
    return policies_dir / APPROVALS_FILE


def read_approvals(policies_dir: Path) -> list[Approval]:
    """Every recorded approval (any version); PolicyError naming the file when it is malformed."""
    path = approvals_path(policies_dir)
    if not path.exists():
        return []
    model = load_policy_model(path, ApprovalsFile, display=display_path(path, policies_dir))
    return model.approvals


def approval_state(policies_dir: Path) -> ApprovalState:
    digest = policy_digest(policies_dir)
    matching = tuple(a for a in read_approvals(policies_dir) if a.digest == digest)
    return ApprovalState(version=digest[:12], digest=digest, approvals=matching)


def approve(policies_dir: Path, *, reviewer: str, note: str | None, now: datetime,
            expected_digest: str | None = None) -> Approval:
    """Record an approval of the policy set as it is now; returns it. The file is rewritten whole, in order.

    `expected_digest` is the digest of the set that was checked: when the files changed since, nothing is
    written (PolicyError), so an approval never names a version nobody checked."""
    where = display_path(approvals_path(policies_dir), policies_dir)
    if not reviewer.strip():
        raise PolicyError(where, "reviewer", "must be a name")
    existing = read_approvals(policies_dir)
    digest = policy_digest(policies_dir)
    if expected_digest is not None and digest != expected_digest:
        raise PolicyError(where, None, f"refused: the policy files changed while they were checked (checked "
                          f"{expected_digest[:12]}, now {digest[:12]}); nothing was recorded: check and approve again")
    approval = Approval(version=digest[:12], digest=digest, reviewer=reviewer.strip(),
                        approved_at=now.astimezone(UTC).replace(microsecond=0), note=(note or "").strip() or None)
    entries = [_entry(a) for a in [*existing, approval]]
    body = yaml.safe_dump({"approvals": entries}, sort_keys=False, allow_unicode=True, width=100)
    path = approvals_path(policies_dir)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(HEADER + body, encoding="utf-8")
    tmp.replace(path)
    return approval


def _entry(approval: Approval) -> dict[str, str]:
    entry = {"version": approval.version, "digest": approval.digest, "reviewer": approval.reviewer,
             "approved_at": approval.approved_at.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if approval.note:
        entry["note"] = approval.note
    return entry
