"""Every example through the built guard: at start-up (refuse to start on any failure) and in `policy check`.

What runs: each outbound rule's must_match examples (each must be blocked *by that rule*) and must_not_match
examples (each must pass the whole guard), the compliance manifest's own must_match examples (each blocked by
the rule it lists), the floor fixed in code (service.policy.floor: each text blocked by a rule the manifest
requires at block, whatever the files say), and one known-good text. This is the same Guard object the service
then checks every text with, so a weakened pattern, a must_not_match example the rules now block, or a guardrails
upgrade that changes behaviour all stop start-up.

Cheap: a full run is a few hundred guard checks (~0.1-0.5 s); on success it is recorded as a small JSON
file named by a key over the whole policy set (every file under policies/, the manifest included), the
source of service/policy/*.py and the guardrails version. The next start with the same key skips the
examples. Any edit to a policy file or to the guard's code changes the key, so a cache entry can never vouch
for rules it did not test; a failed run is never recorded; an unreadable or unwritable cache only costs
the run (it is logged, never fatal). The cache folder is `TEXTBACK_GUARD_CACHE_DIR` (default var/guard-cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from service.errors import PolicyError
from service.logs import log
from service.policy.files import LoadedRule, policy_digest
from service.policy.floor import FLOOR, FLOOR_SOURCE
from service.policy.manifest import MANIFEST_PATH, SEVERITY_RANK, LoadedManifest

logger = logging.getLogger("textback.policy")

KNOWN_GOOD_TEXT = "Thanks! A licensed loan officer will call you today at 3:30 PM. Reply STOP to opt out."


@dataclass(frozen=True)
class ExampleFailure:
    """One example the built guard got wrong."""

    path: str  # policies/outbound/rates.yaml (or the manifest)
    field: str  # examples.must_match[3] / required.no-rate-quotes.must_match[0]
    kind: str  # must_match | must_not_match | floor
    rule: str
    text: str
    got: str  # "passed" / "was blocked only by x" / "was blocked by x ("...")"

    def as_error(self) -> PolicyError:
        if self.kind == "floor":
            return PolicyError(self.path, self.field, self.got)
        if self.field.startswith("required."):
            message = f"{_quote(self.text)} was not blocked by {self.rule} ({self.got})"
            return PolicyError(self.path, self.field, message)
        return PolicyError(self.path, self.field, f"{self.kind} example {_quote(self.text)} {self.got}")

    def check_line(self) -> str:
        """The line `policy check` prints (its format predates the start-up self-test)."""
        if self.kind == "floor" or self.field.startswith("required."):
            return str(self.as_error())
        return f"{self.path}: example {self.kind} {_quote(self.text)} {self.got}"


@dataclass(frozen=True)
class SelfTest:
    """What start-up did: how many examples the guard was checked against, and whether that was cached."""

    examples: int
    cached: bool
    seconds: float
    key: str


def _quote(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


def _describe(violations: list[Any]) -> str:
    return ", ".join(f"{v.rule} ({_quote(v.match)})" for v in violations)


def run_examples(
    guard: Any, rules: list[LoadedRule], manifest: LoadedManifest | None
) -> tuple[list[ExampleFailure], int]:
    """Check every example through `guard`; returns the failures and how many texts were checked."""
    failures: list[ExampleFailure] = []
    count = 0
    for loaded in rules:
        rule, where = loaded.rule, loaded.file.display
        for index, example in enumerate(rule.examples.must_match):
            count += 1
            result = guard.check(example)
            fired = {v.rule for v in [*result.violations, *result.warnings]}
            if rule.id not in fired:
                got = "passed" if result.allowed else f"was blocked only by {', '.join(sorted(fired))}"
                field = f"examples.must_match[{index}]"
                failures.append(ExampleFailure(where, field, "must_match", rule.id, example, got))
        for index, example in enumerate(rule.examples.must_not_match):
            count += 1
            result = guard.check(example)
            if not result.allowed:
                got = f"was blocked by {_describe(result.violations)}"
                field = f"examples.must_not_match[{index}]"
                failures.append(ExampleFailure(where, field, "must_not_match", rule.id, example, got))
    present = {loaded.rule.id for loaded in rules}
    required_rules = manifest.manifest.required if manifest else []
    for required in required_rules:
        if required.id not in present:
            continue  # reported as a missing rule by manifest_findings
        for index, example in enumerate(required.must_match):
            count += 1
            result = guard.check(example)
            blocked_by = {v.rule for v in result.violations}
            if result.allowed or required.id not in blocked_by:
                got = "passed" if result.allowed else f"blocked only by {', '.join(sorted(blocked_by))}"
                field = f"required.{required.id}.must_match[{index}]"
                where = manifest.display if manifest else "policies/outbound/required.yaml"
                failures.append(ExampleFailure(where, field, "must_match", required.id, example, got))
    floor_failures, floor_count = run_floor(guard, rules, manifest)
    failures += floor_failures
    count += floor_count + 1
    result = guard.check(KNOWN_GOOD_TEXT)
    if not result.allowed:
        got = f"was blocked by {_describe(result.violations)}"
        known = ExampleFailure("policies/outbound", "known-good text", "must_not_match", "-", KNOWN_GOOD_TEXT, got)
        failures.append(known)
    return failures, count


def _anchored(rules: list[LoadedRule], manifest: LoadedManifest | None) -> set[str]:
    """The rules that count for the floor: present at block and required by the manifest at block (every
    block rule when there is no usable manifest: that is a finding of its own)."""
    blocking = {lr.rule.id for lr in rules if lr.rule.severity == "block"}
    if manifest is None:
        return blocking
    block = SEVERITY_RANK["block"]
    required = {r.id for r in manifest.manifest.required if SEVERITY_RANK[r.min_severity] >= block}
    return blocking & required


def run_floor(
    guard: Any, rules: list[LoadedRule], manifest: LoadedManifest | None
) -> tuple[list[ExampleFailure], int]:
    """Every floor text through `guard`: one failure per category the policy set no longer covers."""
    anchored = _anchored(rules, manifest)
    where = manifest.display if manifest else f"policies/{MANIFEST_PATH.as_posix()}"
    failures: list[ExampleFailure] = []
    count = 0
    for category in FLOOR:
        missed: list[tuple[str, set[str]]] = []
        for text in category.must_block:
            count += 1
            blocked_by = {v.rule for v in guard.check(text).violations}
            if not blocked_by & anchored:
                missed.append((text, blocked_by))
        if not missed:
            continue
        text, blocked_by = missed[0]
        if blocked_by:
            how = (f"was blocked only by {', '.join(sorted(blocked_by))}, which {where} does not require at "
                   f"min_severity block, so nothing keeps it blocked")
        else:
            how = "passed"
        more = f" (and {len(missed) - 1} more of its floor texts)" if len(missed) > 1 else ""
        message = (f"the policy set does not cover {category.what}: {_quote(text)} {how}{more}; every "
                   f"policy set must block the floor fixed in {FLOOR_SOURCE} with a rule the manifest requires")
        field = f"floor.{category.name}"
        failures.append(ExampleFailure(where, field, "floor", category.name, text, message))
    return failures, count


def _code_digest() -> bytes:
    """The guard's own code and what it runs on: a change to normalisation, matching or rule parsing (this
    folder, service/yamlfile.py), to the Unicode tables normalisation reads, or to guardrails, pydantic or
    PyYAML re-runs the examples, and sets aside the start-up verdicts kept for the old key
    (service.policy.verdict_file)."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for path in [*sorted(here.glob("*.py")), here.parent / "yamlfile.py"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(f"python {sys.version}\0unicode {unicodedata.unidata_version}\0".encode())
    for package in ("guardrails-ai", "pydantic", "pydantic-core", "PyYAML"):
        try:
            digest.update(f"{package} {metadata.version(package)}\0".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{package} unknown\0".encode())
    return digest.digest()


def self_test_key(policies_dir: Path) -> str:
    """The cache key: the whole policy set, the guard's code and the guardrails version."""
    digest = hashlib.sha256(policy_digest(policies_dir).encode() + b"\0" + _code_digest())
    return digest.hexdigest()[:32]


def _cached(cache_dir: Path | None, key: str) -> dict[str, Any] | None:
    if cache_dir is None:
        return None
    try:
        record = json.loads((cache_dir / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and record.get("key") == key and record.get("passed") is True
    return record if ok else None


def write_record(path: Path, record: Mapping[str, Any], *, unwritable: str) -> None:
    """One JSON record in the guard cache, written atomically (a reader sees the old file or the new one). A
    folder that cannot be written is logged (the event `unwritable`) and skipped: the cache only saves time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        partial.replace(path)
    except OSError as exc:
        log(logger, logging.WARNING, unwritable, cache_dir=str(path.parent), error=str(exc))


def _cached_pass(cache_dir: Path | None, key: str, started: float) -> SelfTest | None:
    record = _cached(cache_dir, key)
    if record is None:
        return None
    return SelfTest(int(record.get("examples", 0)), True, time.perf_counter() - started, key)


def cached_self_test(policies_dir: Path, cache_dir: Path | None) -> SelfTest | None:
    """The cached pass for this exact policy set and guard code, or None (the examples must run)."""
    return _cached_pass(cache_dir, self_test_key(policies_dir), time.perf_counter())


def run_self_test(guard: Any, policies_dir: Path, manifest: LoadedManifest, cache_dir: Path | None) -> SelfTest:
    """Run (or find a cached pass of) every example; PolicyError naming the first failure otherwise."""
    started = time.perf_counter()
    key = self_test_key(policies_dir)
    cached = _cached_pass(cache_dir, key, started)
    if cached is not None:
        return cached
    failures, count = run_examples(guard, guard.rules, manifest)
    if failures:
        first = failures[0].as_error()
        more = f" (and {len(failures) - 1} more; run `textback policy check`)" if len(failures) > 1 else ""
        raise PolicyError(first.path, first.field, first.message + more)
    seconds = time.perf_counter() - started
    if cache_dir is not None:
        write_record(cache_dir / f"{key}.json", {
            "key": key, "passed": True, "examples": count, "policy_version": guard.policy_version,
            "seconds": round(seconds, 4), "passed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }, unwritable="guard self-test result not cached")
    return SelfTest(count, False, seconds, key)
