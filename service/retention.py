"""Retention as the policy says: purges and forget requests that keep what the law requires, and their record.

The policy is policies/retention/retention.yaml (service.retention_policy); the deleting is service.privacy's.
- `purge`: without a period it uses the policy's (25 months); a shorter period is refused (RetentionRefused,
  nothing deleted) unless forced with a reason. `privacy purge` records every run, forced or not; the
  automatic retention records the runs that deleted something.
- The automatic retention (the worker, hourly) runs only when TEXTBACK_RETENTION_DAYS is set: a number of
  days at least the policy's longest 25 months (checked at start-up by `check_setting`; the worker checks
  again before each run and refuses, logging, rather than delete younger communications), or `policy` for the
  policy's own period. Unset, nothing is deleted automatically: deleting is the operator's decision.
- `forget_request`: keeps the communications of conversations younger than the policy's period and deletes
  the rest (service.privacy.forget), or, forced with a reason, everything but the opt-out records.

Each run is a PrivacyAction row (what, when, who, why, the period, counts, the policy-set version); the logs
carry the counts and the action, never a number, a name or the reason's text.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine

from service.db import session_scope
from service.errors import ConfigError, RetentionRefused
from service.logs import log
from service.models import PrivacyAction, utcnow
from service.phones import to_e164
from service.policy.files import policy_version
from service.privacy import ForgetOutcome, forget, purge_before
from service.retention_policy import RetentionPolicy

logger = logging.getLogger("textback.retention")
WORKER = "textback (automatic retention)"


def phone_hash(phone: str) -> str:
    """How a forget request names its number: a SHA-256, so the record holds no number (see PrivacyAction)."""
    return hashlib.sha256(f"textback-phone:{to_e164(phone)}".encode()).hexdigest()


def who_ran_it() -> str | None:
    """The operating-system user running the command, when the system can say."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no such user in the password database, no login name
        return None


def check_setting(days: int | str | None, policy: RetentionPolicy) -> None:
    """Start-up: TEXTBACK_RETENTION_DAYS shorter than the policy's period on some day is a ConfigError."""
    if not isinstance(days, int):
        return
    minimum = policy.min_days_always()
    if days < minimum:
        msg = (f"TEXTBACK_RETENTION_DAYS={days} is shorter than {policy.describe()}: set it to at least "
               f"{minimum} days, to `policy` (the policy's own period), or unset it (no automatic purge)")
        raise ConfigError(msg)


@dataclass(frozen=True)
class PurgeRun:
    counts: dict[str, int]
    cutoff: datetime
    period: str
    forced: bool
    action_id: int | None


def _record(engine: Engine, policies_dir: Path, version: str | None, **values: object) -> int | None:
    """One PrivacyAction row; `version` is the policy-set version in force (the running process's), else the
    policies folder's as read now (a command reads the policy it applies at that moment)."""
    with session_scope(engine) as session:
        row = PrivacyAction(policy_version=version or policy_version(policies_dir),
                            **values)  # type: ignore[arg-type]  # the keyword names are PrivacyAction's
        session.add(row)
        session.flush()
        return row.id


def purge(
    engine: Engine,
    policy: RetentionPolicy,
    policies_dir: Path,
    *,
    days: int | None = None,
    force: bool = False,
    reason: str | None = None,
    actor: str | None = None,
    automatic: bool = False,
    now: datetime | None = None,
    version: str | None = None,
) -> PurgeRun:
    """Delete conversations past the retention period: the policy's, or `days` when given. A `days` period that
    reaches past the policy's cutoff today raises RetentionRefused (nothing deleted) unless `force` with a
    non-empty `reason`. Recorded as a PrivacyAction (the automatic retention only when it deleted something)."""
    now = now or utcnow()
    policy_cutoff = policy.cutoff(now)
    if days is None:
        cutoff, period = policy_cutoff, f"{policy.months} months (policy)"
    else:
        if days < 1:
            msg = "days must be at least 1"
            raise ValueError(msg)
        cutoff, period = now - timedelta(days=days), f"{days} days"
    shorter = cutoff > policy_cutoff
    reason = (reason or "").strip() or None
    if shorter and not (force and reason and not automatic):
        minimum = policy.min_days(now)
        setting = "TEXTBACK_RETENTION_DAYS" if automatic else "--older-than-days"
        msg = (f"refused: {policy.describe()}; {setting} {days} would delete younger communications "
               f"(at least {minimum} days today" + ("" if automatic else ", or --force --reason TEXT") + ")")
        raise RetentionRefused(msg)
    counts = purge_before(engine, cutoff)
    forced = shorter
    action = "retention" if automatic else ("purge-forced" if forced else "purge")
    action_id = None
    if not automatic or any(counts.values()):
        action_id = _record(engine, policies_dir, version, action=action, actor=WORKER if automatic else actor,
                            reason=reason, period=period, cutoff=cutoff, deleted=counts,
                            kept_because=policy.reason())
    log(logger, logging.INFO, "privacy purge", action=action, period=period,
        cutoff=cutoff.isoformat(), forced=forced, action_id=action_id, **counts)
    return PurgeRun(counts=counts, cutoff=cutoff, period=period, forced=forced, action_id=action_id)


def automatic_purge(engine: Engine, policy: RetentionPolicy, policies_dir: Path, days: int | str | None,
                    *, now: datetime | None = None, version: str | None = None) -> PurgeRun | None:
    """The worker's hourly retention: None when TEXTBACK_RETENTION_DAYS is unset, or when the setting is shorter
    than the policy (refused and logged as an error: an unattended process never deletes younger records)."""
    if days is None:
        return None
    try:
        return purge(engine, policy, policies_dir, days=days if isinstance(days, int) else None, automatic=True,
                     now=now, version=version)
    except RetentionRefused as exc:
        log(logger, logging.ERROR, "automatic retention refused", reason=str(exc))
        return None


@dataclass(frozen=True)
class ForgetRequest:
    outcome: ForgetOutcome
    keep_until: datetime | None
    forced: bool
    action_id: int | None


def forget_request(
    engine: Engine,
    policy: RetentionPolicy,
    policies_dir: Path,
    phone: str,
    *,
    broker_id: int | None = None,
    force: bool = False,
    reason: str | None = None,
    actor: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> ForgetRequest:
    """Forget a number as the policy allows (dry_run: what would be done, nothing changed or recorded). Forced
    (with a non-empty reason, else ValueError) it deletes the communications too, opt-outs excepted."""
    reason = (reason or "").strip() or None
    if force and not reason:
        msg = "a forced forget needs a reason"
        raise ValueError(msg)
    cutoff = None if force else policy.cutoff(now or utcnow())
    outcome = forget(engine, phone, broker_id=broker_id, cutoff=cutoff, dry_run=dry_run)
    until = policy.keep_until(outcome.last_activity) if outcome.last_activity and outcome.kept_any else None
    action_id = None
    if not dry_run:
        action_id = _record(
            engine, policies_dir, None, action="forget-forced" if force else "forget", actor=actor,
            reason=reason, period="none (forced)" if force else f"{policy.months} months (policy)", cutoff=cutoff,
            phone_hash=phone_hash(phone), broker_id=broker_id, deleted=outcome.deleted, kept=outcome.kept,
            keep_until=until, kept_because=None if force else policy.reason())
        log(logger, logging.INFO, "forget request recorded", action_id=action_id,
            forced=force, kept_conversations=outcome.kept["leads"], keep_until=until.isoformat() if until else None)
    return ForgetRequest(outcome=outcome, keep_until=until, forced=force, action_id=action_id)
