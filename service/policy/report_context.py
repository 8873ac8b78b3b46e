"""The reviewer's report's inputs, read once: the policy files, the version and its approval state, the brokers
whose values fill the templates, and when the report was made (service.policy.report builds from them)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from service.brokers import BrokerConfig, load_brokers
from service.errors import ConfigError, PolicyError
from service.policy.approvals import ApprovalState, approval_state
from service.policy.files import LoadedRule, PolicyFile, outbound_rules, policy_version, read_policy_files

EXAMPLE_BROKERS = "brokers.example.yaml"


@dataclass(frozen=True)
class BrokerSource:
    """The brokers file the templates are rendered with: its path, brokers, or why it could not be read."""

    path: Path
    brokers: tuple[BrokerConfig, ...]
    error: str | None = None

    @property
    def is_example(self) -> bool:
        return self.path.name == EXAMPLE_BROKERS

    @classmethod
    def read(cls, path: Path) -> BrokerSource:
        try:
            return cls(path, tuple(load_brokers(path)))
        except ConfigError as exc:
            return cls(path, (), str(exc))


@dataclass(frozen=True)
class Context:
    policies_dir: Path
    files: list[PolicyFile]
    loaded: list[LoadedRule]
    errors: list[str]
    version: str
    approval: ApprovalState | None
    approval_error: str | None
    brokers: BrokerSource
    generated: datetime


def _approval(policies_dir: Path) -> tuple[ApprovalState | None, str | None]:
    try:
        return approval_state(policies_dir), None
    except PolicyError as exc:
        return None, str(exc)


def plain(text: str | None) -> str:
    return " ".join((text or "").split())


def count_of(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def of_kind(files: Iterable[PolicyFile], *kinds: str) -> list[PolicyFile]:
    return [f for f in files if f.header.kind in kinds]


def report_context(policies_dir: Path, brokers_file: Path, *, now: datetime | None = None) -> Context:
    files, errors = read_policy_files(policies_dir)
    loaded, rule_errors = outbound_rules(files)
    approval, approval_error = _approval(policies_dir)
    return Context(
        policies_dir=policies_dir, files=files, loaded=loaded, errors=[str(e) for e in [*errors, *rule_errors]],
        version=policy_version(policies_dir), approval=approval, approval_error=approval_error,
        brokers=BrokerSource.read(brokers_file), generated=(now or datetime.now(UTC)).astimezone(UTC),
    )
