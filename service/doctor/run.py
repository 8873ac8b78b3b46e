"""The doctor's checklist: the checks in order, run one by one (a check that crashes is a failed line, never a
traceback), and the checklist as a person reads it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from service.doctor.core import Check, Doctor, Status, failed
from service.doctor.local import (
    check_brokers,
    check_database,
    check_llm,
    check_migrations,
    check_mode,
    check_policies,
    check_public_url,
)
from service.doctor.twilio_checks import check_a2p, check_account, check_numbers
from service.settings import Settings, describe_invalid

CheckFunction = Callable[[Doctor], list[Check]]

# In order: a check may use what an earlier one left on the Doctor (the engine, the brokers, account_ok).
CHECKS: list[CheckFunction] = [
    check_mode,
    check_public_url,
    check_database,
    check_migrations,
    check_brokers,
    check_policies,
    check_account,
    check_numbers,
    check_a2p,
    check_llm,
]


def run_doctor(settings_factory: Callable[[], Settings] = Settings, *, guard: Any = None,
               checks: list[CheckFunction] | None = None) -> list[Check]:
    """Every check's lines, in order. Invalid settings are the one line: nothing else can be checked."""
    try:
        settings = settings_factory()
    except ValidationError as exc:
        return [failed("settings", describe_invalid(exc), "correct the named setting(s) in the environment or .env")]
    doc = Doctor(settings, guard=guard)
    lines: list[Check] = []
    try:
        for check in CHECKS if checks is None else checks:
            try:
                lines += check(doc)
            except Exception as exc:  # a check's own bug must not hide the other lines
                name = check.__name__.removeprefix("check_")
                lines.append(failed(name, f"the check itself failed: {type(exc).__name__}: {exc}",
                                    "report this; run the other checks' fixes meanwhile"))
    finally:
        doc.close()
    return lines


def render(lines: list[Check]) -> list[str]:
    """The checklist: `status  name: detail`, the fix indented under every line that is not ok, and a count."""
    out: list[str] = []
    for line in lines:
        out.append(f"{line.status.value:<8} {line.name}: {line.detail}")
        if line.fix and line.status in (Status.WARNING, Status.FAILED):
            out.append(f"{'':<8} fix: {line.fix}")
    counts = {status: sum(1 for line in lines if line.status is status) for status in Status}
    out.append("doctor: " + ", ".join(f"{counts[s]} {s.value}" for s in Status)
               + ("; FAILED" if counts[Status.FAILED] else "; nothing failed"))
    return out


def exit_code(lines: list[Check]) -> int:
    """0 when nothing failed (warnings allowed), 1 when any check failed."""
    return 1 if any(line.status is Status.FAILED for line in lines) else 0
