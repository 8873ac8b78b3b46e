"""`textback privacy`: forget a number on request, purge conversations past the retention period.

Both follow policies/retention/retention.yaml (service.retention): communications are kept for the policy's
period (25 months) unless forced with a recorded reason, and opt-out records are kept for good."""

from __future__ import annotations

import click
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from service.audit import mask_phone
from service.db import MissingDatabase, open_database
from service.errors import PolicyError, RetentionRefused
from service.models import Broker, utcnow
from service.phones import InvalidPhone, to_e164
from service.privacy import ForgetOutcome
from service.retention import ForgetRequest, forget_request, who_ran_it
from service.retention import purge as purge_by_policy
from service.retention_policy import RetentionPolicy, load_retention
from service.settings import Settings

KEPT_WORDS = {
    "leads": "conversation record(s)",
    "inbound_messages": "text(s) in",
    "outbound_messages": "text(s) out",
    "decisions": "reply decision(s)",
    "call_events": "call and voicemail event(s)",
    "delivery_events": "delivery callback(s)",
    "human_calls": "click-to-call(s)",
}


def _engine(settings: Settings) -> Engine:
    try:
        return open_database(settings.database_url)
    except MissingDatabase as exc:
        raise click.ClickException(str(exc)) from None


def _policy(settings: Settings) -> RetentionPolicy:
    try:
        return load_retention(settings.policies_dir)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from None


def _show(counts: dict[str, int]) -> None:
    for key, value in counts.items():
        click.echo(f"{key}: {value}")


def _forced_options(force: bool, reason: str | None) -> str | None:
    reason = (reason or "").strip() or None
    if force and reason is None:
        raise click.UsageError("--force needs --reason TEXT (it is recorded with what was deleted)")
    return reason


@click.group()
def privacy() -> None:
    """Borrower data: forget a number, purge old conversations (reads TEXTBACK_DATABASE_URL).

    Both follow the retention policy, policies/retention/retention.yaml."""


def explain(request: ForgetRequest, policy: RetentionPolicy, *, done: bool) -> list[str]:
    """What a forget request keeps by law and until when, and what it deletes; no number, no words."""
    outcome: ForgetOutcome = request.outcome
    lines = []
    kept = ", ".join(f"{n} {KEPT_WORDS[k]}" for k, n in outcome.kept.items() if n)
    if request.forced:
        lines.append("Forced: communications the retention policy keeps are deleted too "
                     f"({policy.describe()}); the reason is recorded.")
    elif kept and request.keep_until is not None:
        verb = "Kept" if done else "Will keep"
        lines.append(f"{verb} by law until {request.keep_until:%Y-%m-%d %H:%M} UTC: {kept}. Why: {policy.reason()}. "
                     "Their captured fields, names, notes and LLM readings are deleted now; the retention purge "
                     "deletes the rest when that period ends.")
    else:
        lines.append(f"No communications younger than the retention period ({policy.describe()}): nothing kept.")
    lines.append(f"{'Kept' if done else 'Will keep'} for good: {outcome.opt_outs} opt-out record(s) "
                 "(a purge must never make the number textable again).")
    deleted = ", ".join(f"{k} {n}" for k, n in outcome.deleted.items() if n) or "nothing"
    lines.append(f"{'Deleted' if done else 'Will delete now'}: {deleted}.")
    return lines


@privacy.command()
@click.argument("number")
@click.option(
    "--broker",
    "broker_number",
    default=None,
    help="Only this broker's data (the broker's Twilio number); default: every broker.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Delete the communications the retention policy keeps too (needs --reason).")
@click.option("--reason", default=None, help="Why (recorded with the request); required with --force.")
def forget(number: str, broker_number: str | None, yes: bool, force: bool, reason: str | None) -> None:
    """Forget NUMBER: delete what the law does not require (captured fields, names, notes, LLM readings, CRM
    deliveries, alert links, the line-type cache) and keep its communications until the retention period ends.

    The opt-out record and its history are kept for good, so a forgotten number that opted out stays opted out.
    The request is recorded (the number as a hash)."""
    try:
        phone = to_e164(number)
    except InvalidPhone as exc:
        raise click.BadParameter(f"{number!r} is not a phone number ({exc})", param_hint="NUMBER") from None
    reason = _forced_options(force, reason)
    settings = Settings()
    policy = _policy(settings)
    engine = _engine(settings)
    try:
        broker_id = None
        if broker_number is not None:
            try:
                broker_e164 = to_e164(broker_number)
            except InvalidPhone:
                raise click.BadParameter(
                    f"{broker_number!r} is not a phone number", param_hint="--broker"
                ) from None
            with Session(engine) as session:
                broker = session.exec(select(Broker).where(Broker.twilio_number == broker_e164)).first()
            if broker is None:
                raise click.BadParameter(f"no broker with Twilio number {broker_e164}", param_hint="--broker")
            broker_id = broker.id
        scope = f" for broker {broker_number}" if broker_number else ""
        now = utcnow()  # one cutoff for what is shown and what is done

        def run(*, dry_run: bool) -> ForgetRequest:
            return forget_request(engine, policy, settings.policies_dir, phone, broker_id=broker_id, force=force,
                                  reason=reason, actor=who_ran_it(), dry_run=dry_run, now=now)

        if not yes:
            for line in explain(run(dry_run=True), policy, done=False):
                click.echo(line, err=True)
            click.confirm(f"Forget {mask_phone(phone)}{scope} as above?", abort=True, err=True)
        done = run(dry_run=False)
    finally:
        engine.dispose()
    click.echo(f"forgot {mask_phone(phone)}{scope} (opt-out records kept; request recorded as privacy action "
               f"{done.action_id})", err=True)
    for line in explain(done, policy, done=True):
        click.echo(line, err=True)
    _show(done.outcome.deleted)
    _show({f"kept_{key}": value for key, value in done.outcome.kept.items()})
    if done.keep_until is not None:
        click.echo(f"kept_until: {done.keep_until.isoformat()}")


@privacy.command()
@click.option(
    "--older-than-days",
    "days",
    type=click.IntRange(1, 36_500),  # a century: past it no date can be computed, and nothing is that old
    default=None,
    help="Delete conversations with no activity for this many days (default: the retention policy's period). "
    "Shorter than the policy's period is refused unless --force --reason.",
)
@click.option("--force", is_flag=True, help="Allow a period shorter than the retention policy's (needs --reason).")
@click.option("--reason", default=None, help="Why (recorded with the purge); required with --force.")
def purge(days: int | None, force: bool, reason: str | None) -> None:
    """Delete conversations past the retention period, with their texts, decisions and calls.

    Opt-out records stay, and conversations with work still pending are left alone. Every purge is recorded."""
    reason = _forced_options(force, reason)
    settings = Settings()
    policy = _policy(settings)
    engine = _engine(settings)
    try:
        run = purge_by_policy(engine, policy, settings.policies_dir, days=days, force=force, reason=reason,
                              actor=who_ran_it())
    except RetentionRefused as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    forced = "; FORCED below the retention policy, reason recorded" if run.forced else ""
    click.echo(f"purged conversations with no activity since {run.cutoff:%Y-%m-%d %H:%M} UTC ({run.period}{forced}; "
               f"opt-out records kept; recorded as privacy action {run.action_id})", err=True)
    _show(run.counts)
