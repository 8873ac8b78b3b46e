"""Brokers file changes without a restart: validated before they replace the set in force, the same set in
every process.

A file is checked as start-up checks it (the schema, phone numbers and time zones by service.brokers; each
broker's values alone and rendered into every borrower template through the output guard) and refused whole,
with its first problems, before anything is written. Once valid it is applied by service.broker_set (one
transaction: the rows and the next generation).

Every process polls (`poll_brokers`, once per worker sweep): one small SELECT of the latest generation, and
when it is newer than the one held, the active rows are read and swapped in as a new dict in one assignment
(handlers in flight keep the dict they started with). The process also hashes the brokers file each poll: a
new content is validated and applied with a compare-and-set on the generation it holds, so an edit seen by
several processes at once is applied once; an invalid edit is logged once at ERROR and the set in force stays.
`textback brokers reload` does the same from the command line (service.commands.brokers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from service.broker_set import (
    Applied,
    active_brokers,
    applied_by,
    apply_brokers,
    file_sha256,
    latest_generation,
)
from service.brokers import BrokerConfig, load_brokers
from service.errors import ConfigError, GuardNotReady, TextbackError
from service.logs import log
from service.policy.broker_values import broker_findings
from service.redact import redact

if TYPE_CHECKING:
    from service.context import AppContext
    from service.settings import Settings

logger = logging.getLogger("textback.brokers")


@dataclass(frozen=True)
class CheckedFile:
    """A brokers file that passed every check, and the SHA-256 of the bytes that were checked."""

    path: Path
    configs: list[BrokerConfig]
    sha256: str


def check_file(path: Path, guard: Any, templates: Any) -> CheckedFile:
    """Read and validate the brokers file as start-up does; ConfigError with the first problems (each naming
    the file and line) when anything is wrong. `guard` None checks the schema only (no guard at hand)."""
    try:
        before = file_sha256(path)
    except FileNotFoundError:
        before = ""  # load_brokers says "not found" with the fix
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise ConfigError(f"{path}: cannot read the brokers file ({reason}); set TEXTBACK_BROKERS_FILE to a "
                          "readable YAML file") from None
    configs = load_brokers(path)
    if guard is not None:
        findings = broker_findings(guard, templates, configs, path)
        if findings:
            more = f" (and {len(findings) - 1} more; run `textback policy check`)" if len(findings) > 1 else ""
            raise ConfigError(findings[0] + more)
    if file_sha256(path) != before:
        raise ConfigError(f"{path}: the file changed while it was checked; run the command again")
    return CheckedFile(path, configs, before)


def load_guard(settings: Settings) -> Any:
    """The output guard of the settings' policies (importing guardrails takes seconds)."""
    from service.policy.guard import OutputGuard  # lazy: importing guardrails takes seconds

    return OutputGuard.load(settings.policies_dir, cache_dir=settings.guard_cache_dir)


def start_brokers(settings: Settings, engine: Engine, configs: list[BrokerConfig], sha256: str, *,
                  guard: Any, templates: Any) -> tuple[dict[str, Any], int, Any]:
    """At start-up: apply the file read (a new generation when it differs from the one in force), then hold
    the rows of the latest generation. Returns (brokers by number, generation, guard).

    When another version of the file is in force, the running processes would follow this one: it is checked
    through the guard first (loaded here if not given), so a file start-up would refuse never reaches them."""
    path = settings.resolved_brokers_file()
    latest = latest_generation(engine)
    if latest is not None and latest.sha256 != sha256:
        guard = guard if guard is not None else load_guard(settings)
        check_file(path, guard, templates)
    applied = apply_brokers(engine, configs, sha256, by=applied_by("start-up"))
    if applied.written and latest is not None:
        log(logger, logging.INFO, "brokers file applied at start-up", generation=applied.generation,
            **_counts(applied))
    held = latest_generation(engine)
    return active_brokers(engine), held.generation if held is not None else 0, guard


def reload_file(settings: Settings, engine: Engine, guard: Any, templates: Any, *, source: str) -> tuple[CheckedFile, Applied]:
    """Check the brokers file the service reads and apply it (ConfigError and nothing written when invalid)."""
    checked = check_file(settings.resolved_brokers_file(), guard, templates)
    applied = apply_brokers(engine, checked.configs, checked.sha256, by=applied_by(source))
    if applied.written:
        log(logger, logging.INFO, "brokers file applied", generation=applied.generation, by=source,
            **_counts(applied))
    return checked, applied


def _counts(applied: Applied) -> dict[str, int]:
    changes = applied.changes
    return {"added": len(changes.added), "removed": len(changes.removed), "changed": len(changes.changed)}


def poll_brokers(ctx: AppContext) -> bool:
    """One poll: apply an edited brokers file (when watched), then hold the latest generation. True when the
    brokers held were replaced."""
    if ctx.settings.brokers_watch:
        watch_file(ctx)
    latest = latest_generation(ctx.engine)
    if latest is None or latest.generation == ctx.brokers_generation:
        return False
    brokers = active_brokers(ctx.engine)
    ctx.brokers_by_number = brokers  # one assignment: a handler in flight keeps the dict it read
    ctx.brokers_generation = latest.generation
    log(logger, logging.INFO, "brokers reloaded", generation=latest.generation, brokers=len(brokers),
        applied_by=latest.applied_by)
    return True


def watch_file(ctx: AppContext) -> None:
    """Apply the brokers file when its content changed since this process last read it. An edit another
    process already applied is only noted; an invalid one is logged once and the brokers in force stay."""
    path = ctx.settings.resolved_brokers_file()
    try:
        sha = file_sha256(path)
    except OSError as exc:
        _refuse(ctx, "unreadable", path, f"cannot read the brokers file ({exc.strerror or type(exc).__name__})")
        return
    if sha == ctx.brokers_file_sha:
        ctx.brokers_refused = ""  # back to what is applied: a later bad edit is logged again
        return
    if sha == ctx.brokers_refused:
        return
    latest = latest_generation(ctx.engine)
    if latest is not None and latest.sha256 == sha:
        ctx.brokers_file_sha = sha  # another process applied this edit
        return
    try:
        checked = check_file(path, ctx.guard, ctx.templates)
    except GuardNotReady:
        raise  # no verdict yet (a restart's guard failed): not a refusal; the next poll reads the file again
    except TextbackError as exc:
        _refuse(ctx, sha, path, str(exc))
        return
    except Exception as exc:  # a check that broke is a refusal too: the brokers in force stay
        _refuse(ctx, sha, path, f"the check failed: {type(exc).__name__}")
        return
    applied = apply_brokers(ctx.engine, checked.configs, checked.sha256, by=applied_by("file watch"),
                            expect=latest.generation if latest is not None else 0)
    if applied.lost_race:
        now = latest_generation(ctx.engine)
        if now is None or now.sha256 != checked.sha256:
            return  # another version was applied meanwhile: this edit is tried again on the next poll
    ctx.brokers_file_sha = checked.sha256
    ctx.brokers_refused = ""
    if applied.written:
        log(logger, logging.INFO, "brokers file applied", generation=applied.generation, by="file watch",
            **_counts(applied))


def _refuse(ctx: AppContext, key: str, path: Path, reason: str) -> None:
    """Log a refused brokers file once per content (or once while it is unreadable)."""
    if ctx.brokers_refused == key:
        return
    ctx.brokers_refused = key
    log(logger, logging.ERROR, "brokers file refused; the brokers in force stay", file=str(path),
        generation=ctx.brokers_generation, reason=redact(reason, keep=500))
