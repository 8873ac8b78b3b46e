"""The guard's start-up verdicts kept across restarts, so a restart can serve before guardrails has loaded.

Start-up checks the same texts every time: every borrower template with sample data, and every broker's values
alone and rendered into the templates (service.context.check_templates). Their verdicts are a pure function of
the policy set, the guard's code and the guardrails version (the self-test's cache key,
service.policy.selftest.self_test_key), the template, the exact text and the required values. They are written
beside the self-test's record, one file per key:

    <guard cache dir>/<key>.verdicts.json   {"key": ..., "policy_version": ..., "verdicts": {digest: verdict}}

Each text is stored as a SHA-256 only; a verdict that blocks or warns also keeps the fragments its rules
matched, as the rule reported them (these texts are templates and broker values, never a borrower's words). A
file written under another key (the policies, the guard's code, the Python, guardrails, pydantic or PyYAML
version changed) is never read. The file answers start-up's own check only; every text queued for a person
waits for the Guard. Each verdict used is checked again by the Guard as soon as it has loaded
(service.policy.guard.OutputGuard): a stale or altered file fails the guard, stops the service and is removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.logs import log
from service.policy.selftest import write_record

logger = logging.getLogger("textback.policy")

SUFFIX = ".verdicts.json"
MAX_VERDICTS = 20_000  # far above any brokers file's start-up renders; a larger file is not read


def digest(template: str | None, text: str, required: Mapping[str, str] | None) -> str:
    """The stored name of one check: a SHA-256 over the template, the exact text and the required values."""
    payload = json.dumps([template, text, sorted((required or {}).items())], ensure_ascii=False,
                         separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def path_for(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"{key}{SUFFIX}"


def _pairs(value: object) -> list[tuple[str, str]] | None:
    if not isinstance(value, list):
        return None
    pairs: list[tuple[str, str]] = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(part, str) for part in item)):
            return None
        pairs.append((item[0], item[1]))
    return pairs


def read(cache_dir: Path, key: str, policy_version: str) -> dict[str, dict[str, Any]] | None:
    """The verdicts recorded under `key` by digest, each {"allowed", "violations", "warnings"} (lists of
    (rule, match) pairs); None when there is no file or anything in it is off (then the guard loads first)."""
    try:
        record = json.loads(path_for(cache_dir, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(record, dict) and record.get("key") == key
            and record.get("policy_version") == policy_version and isinstance(record.get("verdicts"), dict)):
        return None
    verdicts: dict[str, dict[str, Any]] = {}
    for name, verdict in record["verdicts"].items():
        if len(verdicts) >= MAX_VERDICTS or not isinstance(verdict, dict):
            return None
        violations, warnings = _pairs(verdict.get("violations")), _pairs(verdict.get("warnings"))
        allowed = verdict.get("allowed")
        if not isinstance(allowed, bool) or violations is None or warnings is None or len(name) != 64:
            return None
        if allowed == bool(violations):  # an allowed text has no violation; a blocked one has at least one
            return None
        verdicts[name] = {"allowed": allowed, "violations": violations, "warnings": warnings}
    return verdicts


def write(cache_dir: Path, key: str, policy_version: str, verdicts: Mapping[str, Mapping[str, Any]]) -> None:
    """Record the verdicts under `key` (atomically: a reader sees the old file or the new one). A folder that
    cannot be written is logged and skipped: the next start loads the guard first, as without a file."""
    record = {"key": key, "policy_version": policy_version, "verdicts": {
        name: {"allowed": verdict["allowed"], "violations": [list(pair) for pair in verdict["violations"]],
               "warnings": [list(pair) for pair in verdict["warnings"]]}
        for name, verdict in sorted(verdicts.items())
    }}
    write_record(path_for(cache_dir, key), record, unwritable="guard start-up verdicts not kept")


def remove(cache_dir: Path, key: str) -> None:
    try:
        path_for(cache_dir, key).unlink(missing_ok=True)
    except OSError as exc:
        log(logger, logging.WARNING, "guard start-up verdicts not removed", cache_dir=str(cache_dir),
            error=str(exc))
