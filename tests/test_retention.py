"""Retention by policy (policies/retention/retention.yaml): what "25 months" means, purges that refuse a
shorter period unless forced with a recorded reason, the automatic retention, and `forget` keeping what the law
requires; opt-out records are never deleted."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import or_, update
from sqlmodel import Session, select

from service.cli import main
from service.context import build_context
from service.errors import ConfigError, RetentionRefused
from service.models import (
    CallEvent,
    Decision,
    DeliveryEvent,
    InboundMessage,
    Lead,
    LeadEvent,
    LineTypeCache,
    OptOut,
    OptOutEvent,
    OutboundMessage,
    PrivacyAction,
    utcnow,
)
from service.policy.files import policy_version
from service.retention import automatic_purge, forget_request, phone_hash, purge
from service.retention_policy import RetentionPolicy, keep_until, load_retention, months_before
from tests.helpers import BROKER, CALLER, POLICIES, call_params, sms_params, status_params

DIGITS = CALLER[2:]
OTHER = "+14155550142"
POLICY = load_retention(POLICIES)
COMMUNICATIONS = (Lead, InboundMessage, OutboundMessage, Decision, CallEvent, DeliveryEvent)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def missed(client, post, caller: str = CALLER, sid: str = "CA" + "1" * 32) -> None:
    params = call_params(sid, caller, BROKER, CallStatus="in-progress", DialCallStatus="no-answer")
    assert post(client, "/twilio/voice/dial-status", params).status_code == 200


def reply(client, post, text: str, caller: str = CALLER) -> None:
    assert post(client, "/twilio/sms", sms_params(text, sender=caller)).status_code == 200


def conversation(client, post, ctx, caller: str = CALLER, sid: str = "CA" + "1" * 32, *, stop: bool = True) -> None:
    """A missed call, the opener (delivered), a reply the rules read (captured fields), then STOP."""
    missed(client, post, caller, sid)
    with Session(ctx.engine) as session:
        sids = session.exec(select(OutboundMessage.twilio_sid).where(OutboundMessage.to_phone == caller)).all()
    for message_sid in sids:
        assert post(client, "/twilio/sms/status", status_params(message_sid, "delivered", to=caller)).status_code == 200
    reply(client, post, "refi, hoping to get it done in the next 2 weeks", caller)
    if stop:
        reply(client, post, "STOP", caller)


def last_active(engine, phone: str, moment: datetime) -> None:
    """Put every row of one caller's conversation at `moment` (so its last activity is exactly that)."""
    with Session(engine) as session:
        lead_ids = session.exec(select(Lead.id).where(Lead.phone == phone)).all()
        inbound_ids = session.exec(select(InboundMessage.id).where(InboundMessage.from_phone == phone)).all()
        sids = session.exec(select(OutboundMessage.twilio_sid).where(OutboundMessage.to_phone == phone)).all()
        session.execute(update(Lead).where(Lead.phone == phone)
                        .values(created_at=moment, updated_at=moment, opener_at=moment))
        session.execute(update(InboundMessage).where(InboundMessage.from_phone == phone)
                        .values(received_at=moment, processed_at=moment))
        session.execute(update(OutboundMessage)
                        .where(or_(OutboundMessage.lead_id.in_(lead_ids), OutboundMessage.to_phone == phone))
                        .values(created_at=moment, sent_at=moment, next_attempt_at=moment))
        session.execute(update(Decision).where(Decision.inbound_id.in_(inbound_ids)).values(created_at=moment))
        session.execute(update(CallEvent).where(CallEvent.caller == phone).values(created_at=moment))
        session.execute(update(DeliveryEvent).where(DeliveryEvent.message_sid.in_(sids)).values(created_at=moment))
        session.execute(update(OptOutEvent).where(OptOutEvent.phone == phone).values(created_at=moment))
        session.commit()


def count(engine, model, *where: object) -> int:
    with Session(engine) as session:
        return len(session.exec(select(model).where(*where)).all())


def actions(engine) -> list[PrivacyAction]:
    with Session(engine) as session:
        return list(session.exec(select(PrivacyAction).order_by(PrivacyAction.id)).all())


def privacy(ctx, *args: str, input: str | None = None) -> Result:
    env = {"TEXTBACK_DATABASE_URL": ctx.settings.database_url, "TEXTBACK_POLICIES_DIR": str(POLICIES)}
    return CliRunner().invoke(main, ["privacy", *args], env=env, input=input)


# ---------------------------------------------------------------------------------------------------------
# What "25 months" means


@pytest.mark.parametrize(("last_activity", "now", "purged"), [
    ("2024-01-15T12:00:00Z", "2026-02-15T11:59:59Z", False),  # 1 s short of 25 months
    ("2024-01-15T12:00:00Z", "2026-02-15T12:00:00Z", False),  # exactly 25 months: still kept
    ("2024-01-15T12:00:00Z", "2026-02-15T12:00:01Z", True),
    ("2024-01-15T12:00:00Z", "2026-01-15T12:00:01Z", False),  # 24 months (Regulation N) + 1 s: kept
    ("2024-01-15T07:00:00-05:00", "2026-02-15T11:59:59Z", False),  # New York time is read as UTC 12:00
    ("2024-01-15T07:00:00-05:00", "2026-02-15T12:00:01Z", True),
    ("2024-01-31T10:00:00Z", "2026-02-28T23:59:59Z", False),  # February has no 31st: the month's last day
    ("2024-01-31T10:00:00Z", "2026-03-01T00:00:00Z", True),
    ("2024-02-29T15:00:00Z", "2026-03-31T14:59:59Z", False),  # leap day, 31 March back 25 months = 29 Feb
    ("2024-02-29T15:00:00Z", "2026-03-31T15:00:01Z", True),
    ("2023-12-31T23:59:59Z", "2026-01-31T23:59:59Z", False),  # across a year end
    ("2023-12-31T23:59:59Z", "2026-02-01T00:00:00Z", True),
])
def test_purge_conversation_only_after_25_calendar_months(last_activity: str, now: str, purged: bool) -> None:
    assert POLICY.purged(at(last_activity), at(now)) is purged


@pytest.mark.parametrize(("last_activity", "until"), [
    ("2024-01-15T12:00:00Z", "2026-02-15T12:00:00Z"),
    ("2024-01-31T10:00:00Z", "2026-03-01T00:00:00Z"),  # no 28 Feb 10:00 cut short: the 1st of March
    ("2024-02-29T15:00:00Z", "2026-03-29T15:00:00Z"),
    ("2024-12-31T23:00:00-05:00", "2027-02-01T04:00:00Z"),  # UTC: 1 January 2025 04:00
])
def test_keep_until_is_first_moment_a_purge_may_delete(last_activity: str, until: str) -> None:
    moment = keep_until(at(last_activity), 25)
    assert moment == at(until)
    assert not POLICY.purged(at(last_activity), moment - timedelta(seconds=1))
    assert POLICY.purged(at(last_activity), moment + timedelta(seconds=1))


def test_months_before_never_reaches_further_than_the_day_the_month_has() -> None:
    assert months_before(at("2026-03-31T15:00:00Z"), 25) == at("2024-02-29T15:00:00Z")
    assert months_before(at("2027-03-31T15:00:00Z"), 25) == at("2025-02-28T15:00:00Z")


def test_policy_file_examples_and_tables_all_hold() -> None:
    from sqlmodel import SQLModel

    assert POLICY.months == 25
    assert POLICY.display == "policies/retention/retention.yaml"
    assert POLICY.example_findings() == []
    assert POLICY.coverage_findings(set(SQLModel.metadata.tables)) == []
    assert "tablex" in POLICY.coverage_findings({*SQLModel.metadata.tables, "tablex"})[0]


@pytest.mark.parametrize(("edit", "message"), [
    (("keep_months: 25", "keep_months: 23"), "at least 24"),
    (("    keep: forever\n    on_forget: keep\n    why: >-\n      A STOP", "    keep_months: 60\n    on_forget: keep\n"
      "    why: >-\n      A STOP"), "opt-outs must say keep: forever"),
    (("  - id: replay-protection", "  - id: replay-protect"), "replay-protect"),
    (("    on_forget: delete", "    on_forget: sometimes"), "on_forget"),
])
def test_reject_retention_policy_below_the_law_or_malformed(tmp_path, edit: tuple[str, str], message: str) -> None:
    from service.errors import PolicyError

    text = (POLICIES / "retention" / "retention.yaml").read_text()
    assert edit[0] in text
    (tmp_path / "retention").mkdir()
    (tmp_path / "retention" / "retention.yaml").write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(PolicyError, match=message):
        load_retention(tmp_path)


def test_policy_check_runs_retention_examples(tmp_path) -> None:
    import shutil

    from service.policy.check import CheckResult, check_retention

    copy = tmp_path / "policies"
    shutil.copytree(POLICIES / "retention", copy / "retention")
    path = copy / "retention" / "retention.yaml"
    path.write_text(path.read_text().replace('now: "2026-02-15T12:00:01Z", purged: true',
                                             'now: "2026-02-15T12:00:01Z", purged: false'))
    findings = check_retention(copy, CheckResult())
    assert len(findings) == 1
    assert "says purged: False but the rule gives True" in findings[0]


# ---------------------------------------------------------------------------------------------------------
# Purge


NOW = at("2026-03-31T15:00:00Z")  # 25 months back: 2024-02-29 15:00 (the month has no 31st)


@pytest.mark.parametrize(("last_activity", "purged"), [
    ("2024-02-29T14:59:59.999999Z", True),
    ("2024-02-29T15:00:00Z", False),
    ("2024-02-29T15:00:00.000001Z", False),
    ("2024-03-31T15:00:00Z", False),  # 24 months: what Regulation N asks
    ("2023-01-01T00:00:00Z", True),
])
def test_purge_by_policy_around_the_25_month_boundary(client, post, ctx, last_activity: str, purged: bool) -> None:
    conversation(client, post, ctx)
    last_active(ctx.engine, CALLER, at(last_activity))

    run = purge(ctx.engine, POLICY, POLICIES, now=NOW)

    assert run.cutoff == at("2024-02-29T15:00:00Z")
    assert run.counts["leads"] == int(purged)
    for model in COMMUNICATIONS:
        assert (count(ctx.engine, model) == 0) is purged, model.__name__
    assert count(ctx.engine, OptOut) == 1
    assert count(ctx.engine, OptOutEvent) == 1


def test_refuse_purge_shorter_than_policy_deleting_nothing(client, post, ctx) -> None:
    conversation(client, post, ctx)
    last_active(ctx.engine, CALLER, utcnow() - timedelta(days=40))

    result = privacy(ctx, "purge", "--older-than-days", "30")

    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert "policies/retention/retention.yaml keeps communications 25 months" in line
    assert f"at least {POLICY.min_days(utcnow())} days" in line
    assert "--force --reason" in line
    for model in COMMUNICATIONS:
        assert count(ctx.engine, model) > 0, model.__name__
    assert actions(ctx.engine) == []


def test_reject_forced_purge_without_reason(client, post, ctx) -> None:
    conversation(client, post, ctx)
    last_active(ctx.engine, CALLER, utcnow() - timedelta(days=40))
    for args in (["--force"], ["--force", "--reason", "  "]):
        result = privacy(ctx, "purge", "--older-than-days", "30", *args)
        assert result.exit_code == 2
        assert "--force needs --reason" in result.output
    assert count(ctx.engine, Lead) == 1
    with pytest.raises(RetentionRefused):
        purge(ctx.engine, POLICY, POLICIES, days=30, force=True, reason=" ")


def test_forced_purge_deletes_and_records_reason(client, post, ctx, caplog) -> None:
    conversation(client, post, ctx)
    conversation(client, post, ctx, OTHER, "CA" + "2" * 32)
    last_active(ctx.engine, CALLER, utcnow() - timedelta(days=40))
    caplog.set_level(logging.INFO, logger="textback.retention")

    result = privacy(ctx, "purge", "--older-than-days", "30", "--force", "--reason", "Counsel memo 2026-14, test data")

    assert result.exit_code == 0, result.output
    assert "FORCED below the retention policy" in result.stderr
    assert "leads: 1" in result.stdout
    assert count(ctx.engine, Lead) == 1  # the other caller's conversation is 0 days old
    assert count(ctx.engine, OptOut) == count(ctx.engine, OptOutEvent) == 2
    [row] = actions(ctx.engine)
    assert (row.action, row.reason, row.period) == ("purge-forced", "Counsel memo 2026-14, test data", "30 days")
    assert row.deleted["leads"] == 1
    assert row.policy_version == policy_version(POLICIES)
    assert row.actor  # the operating-system user
    logged = caplog.text + " ".join(str(getattr(r, "fields", "")) for r in caplog.records)
    assert "'action': 'purge-forced'" in logged
    assert DIGITS not in logged
    assert "Counsel memo" not in logged  # the reason is recorded, not logged


def test_purge_without_days_uses_policy_period_and_is_recorded(client, post, ctx) -> None:
    conversation(client, post, ctx)
    conversation(client, post, ctx, OTHER, "CA" + "2" * 32)
    last_active(ctx.engine, CALLER, months_before(utcnow(), 25) - timedelta(minutes=5))
    last_active(ctx.engine, OTHER, months_before(utcnow(), 25) + timedelta(minutes=5))

    result = privacy(ctx, "purge")

    assert result.exit_code == 0, result.output
    assert "(25 months (policy);" in result.stderr
    assert count(ctx.engine, Lead, Lead.phone == CALLER) == 0
    assert count(ctx.engine, Lead, Lead.phone == OTHER) == 1
    [row] = actions(ctx.engine)
    assert (row.action, row.reason, row.period, row.deleted["leads"]) == ("purge", None, "25 months (policy)", 1)


def test_purge_longer_than_policy_needs_no_force(client, post, ctx) -> None:
    conversation(client, post, ctx)
    last_active(ctx.engine, CALLER, utcnow() - timedelta(days=900))
    result = privacy(ctx, "purge", "--older-than-days", "800")
    assert result.exit_code == 0, result.output
    assert count(ctx.engine, Lead) == 0
    assert [a.action for a in actions(ctx.engine)] == ["purge"]


# ---------------------------------------------------------------------------------------------------------
# The automatic retention


@pytest.mark.parametrize(("days", "starts"), [(30, False), (365, False), (761, False), (762, True), ("policy", True),
                                              (None, True)])
def test_refuse_start_when_retention_days_shorter_than_policy(settings, collaborators, days, starts: bool) -> None:
    settings.retention_days = days
    if starts:
        build_context(settings, **collaborators).close()
        return
    with pytest.raises(ConfigError) as refused:
        build_context(settings, **collaborators)
    message = str(refused.value)
    assert f"TEXTBACK_RETENTION_DAYS={days}" in message
    assert "policies/retention/retention.yaml keeps communications 25 months" in message
    assert "at least 762 days" in message


@pytest.mark.parametrize(("setting", "old_purged"), [(None, False), ("policy", True), (800, True), (30, False)])
def test_apply_automatic_retention_by_setting(client, post, ctx, caplog, setting, old_purged: bool) -> None:
    """Unset: nothing deleted automatically. `policy` or enough days: past the policy's period only. A setting
    made shorter after start-up: refused and logged, nothing deleted."""
    conversation(client, post, ctx)
    conversation(client, post, ctx, OTHER, "CA" + "2" * 32)
    last_active(ctx.engine, CALLER, utcnow() - timedelta(days=820))
    last_active(ctx.engine, OTHER, utcnow() - timedelta(days=40))
    ctx.settings.retention_days = setting
    caplog.set_level(logging.INFO, logger="textback.retention")

    client.app.state.worker.run_once()

    assert count(ctx.engine, Lead, Lead.phone == CALLER) == int(not old_purged)
    assert count(ctx.engine, Lead, Lead.phone == OTHER) == 1
    assert count(ctx.engine, OptOut) == count(ctx.engine, OptOutEvent) == 2
    assert [a.action for a in actions(ctx.engine)] == (["retention"] if old_purged else [])
    assert {a.policy_version for a in actions(ctx.engine)} <= {ctx.policy_version}  # the version running
    if setting == 30:
        [refused] = [r for r in caplog.records if r.getMessage() == "automatic retention refused"]
        assert "TEXTBACK_RETENTION_DAYS 30" in str(refused.fields)  # type: ignore[attr-defined]


def test_automatic_retention_records_nothing_when_nothing_deleted(ctx) -> None:
    run = automatic_purge(ctx.engine, POLICY, POLICIES, "policy")
    assert run is not None
    assert run.action_id is None
    assert actions(ctx.engine) == []


# ---------------------------------------------------------------------------------------------------------
# Forget


def test_forget_keeps_young_communications_deletes_the_rest_and_records(client, post, ctx) -> None:
    conversation(client, post, ctx)
    with Session(ctx.engine) as session:
        session.add(LineTypeCache(phone=CALLER, line_type="mobile"))
        session.execute(update(Lead).values(name="Dana Borrower", outcome_note="call back Friday"))
        session.commit()
    before = {model.__name__: count(ctx.engine, model) for model in COMMUNICATIONS}
    assert count(ctx.engine, LeadEvent) > 0
    assert count(ctx.engine, Decision, Decision.analysis.is_not(None)) > 0

    request = forget_request(ctx.engine, POLICY, POLICIES, CALLER, actor="ops")

    assert {model.__name__: count(ctx.engine, model) for model in COMMUNICATIONS} == before
    with Session(ctx.engine) as session:
        lead = session.exec(select(Lead)).one()
        last = max(m.received_at for m in session.exec(select(InboundMessage)).all())
    assert (lead.name, lead.loan_type, lead.timeline, lead.outcome_note) == (None, None, None, None)
    assert count(ctx.engine, Decision, Decision.analysis.is_not(None)) == 0
    assert count(ctx.engine, LeadEvent) == count(ctx.engine, LineTypeCache) == 0
    assert count(ctx.engine, OptOut) == count(ctx.engine, OptOutEvent) == 1
    assert request.outcome.kept["leads"] == 1
    assert request.outcome.kept["inbound_messages"] == before["InboundMessage"]
    assert request.keep_until is not None
    assert request.keep_until >= keep_until(last, 25)
    assert request.keep_until - keep_until(last, 25) < timedelta(seconds=5)
    [row] = actions(ctx.engine)
    assert (row.action, row.actor, row.phone_hash) == ("forget", "ops", phone_hash(CALLER))
    assert row.kept["leads"] == 1
    assert row.deleted["lead_events"] > 0
    assert row.deleted["line_types"] == 1
    assert row.keep_until == request.keep_until
    assert "12 CFR 1014.5" in (row.kept_because or "")
    assert DIGITS not in repr(row.model_dump())


def test_forget_deletes_conversation_past_retention_whole(client, post, ctx) -> None:
    conversation(client, post, ctx)
    last_active(ctx.engine, CALLER, months_before(utcnow(), 26))

    request = forget_request(ctx.engine, POLICY, POLICIES, CALLER)

    assert request.outcome.deleted["leads"] == 1
    assert not request.outcome.kept_any
    assert request.keep_until is None
    for model in COMMUNICATIONS:
        assert count(ctx.engine, model) == 0, model.__name__
    assert count(ctx.engine, OptOut) == count(ctx.engine, OptOutEvent) == 1


def test_forget_kept_records_purged_once_their_period_ends(client, post, ctx, clock) -> None:
    conversation(client, post, ctx)
    request = forget_request(ctx.engine, POLICY, POLICIES, CALLER)
    assert request.keep_until is not None

    clock.move_to(request.keep_until - timedelta(minutes=1))
    assert purge(ctx.engine, POLICY, POLICIES).counts["leads"] == 0
    clock.move_to(request.keep_until + timedelta(minutes=1))
    assert purge(ctx.engine, POLICY, POLICIES).counts["leads"] == 1

    for model in COMMUNICATIONS:
        assert count(ctx.engine, model) == 0, model.__name__
    assert count(ctx.engine, OptOut) == count(ctx.engine, OptOutEvent) == 1


def test_forget_cli_explains_before_confirming_and_deletes_nothing_when_declined(client, post, ctx) -> None:
    conversation(client, post, ctx)
    before = {model.__name__: count(ctx.engine, model) for model in (*COMMUNICATIONS, LeadEvent)}

    result = privacy(ctx, "forget", CALLER, input="n\n")

    assert result.exit_code == 1
    assert "Will keep by law until 2028-07-10" in result.output
    assert "12 CFR 1014.5" in result.output
    assert "Will keep for good: 2 opt-out record(s)" in result.output
    assert "Will delete now:" in result.output
    assert "lead_events" in result.output
    assert DIGITS not in result.output
    assert {model.__name__: count(ctx.engine, model) for model in (*COMMUNICATIONS, LeadEvent)} == before
    assert actions(ctx.engine) == []


def test_forget_cli_explains_after_doing_it(client, post, ctx) -> None:
    conversation(client, post, ctx)
    result = privacy(ctx, "forget", "(415) 555-0199", "--yes")
    assert result.exit_code == 0, result.output
    assert "Kept by law until 2028-07-10" in result.stderr
    assert "Kept for good: 2 opt-out record(s)" in result.stderr
    assert "privacy action 1" in result.stderr
    assert "lead_events: " in result.stdout
    assert "kept_leads: 1" in result.stdout
    assert "kept_until: 2028-07-10T21:00" in result.stdout
    assert DIGITS not in result.output
    assert count(ctx.engine, Lead) == 1


def test_forced_forget_deletes_all_but_opt_outs_and_records_reason(client, post, ctx) -> None:
    conversation(client, post, ctx)
    result = privacy(ctx, "forget", CALLER, "--yes", "--force", "--reason", "Borrower's written request, ticket 88")
    assert result.exit_code == 0, result.output
    assert "Forced: communications the retention policy keeps are deleted too" in result.stderr
    for model in COMMUNICATIONS:
        assert count(ctx.engine, model) == 0, model.__name__
    assert count(ctx.engine, OptOut) == count(ctx.engine, OptOutEvent) == 1
    [row] = actions(ctx.engine)
    assert (row.action, row.reason, row.kept_because, row.keep_until) == (
        "forget-forced", "Borrower's written request, ticket 88", None, None)
    assert row.deleted["leads"] == 1


def test_reject_forced_forget_without_reason(client, post, ctx) -> None:
    conversation(client, post, ctx)
    result = privacy(ctx, "forget", CALLER, "--yes", "--force")
    assert result.exit_code == 2
    assert "--force needs --reason" in result.output
    assert count(ctx.engine, Lead) == 1


def test_forget_cancels_pending_text_to_kept_conversation(client, post, ctx) -> None:
    conversation(client, post, ctx, stop=False)
    with Session(ctx.engine) as session:
        session.execute(update(OutboundMessage).where(OutboundMessage.to_phone == CALLER).values(status="pending"))
        session.commit()
    request = forget_request(ctx.engine, POLICY, POLICIES, CALLER)
    assert request.outcome.deleted["pending_texts_cancelled"] >= 1
    assert count(ctx.engine, OutboundMessage, OutboundMessage.status == "pending",
                 OutboundMessage.to_phone == CALLER) == 0


# ---------------------------------------------------------------------------------------------------------
# Opt-outs, whatever deletes


@pytest.mark.parametrize("how", ["purge", "forced purge", "automatic", "forget", "forced forget"])
def test_keep_opt_out_records_whatever_deletes(client, post, ctx, clock, how: str) -> None:
    conversation(client, post, ctx)
    last_active(ctx.engine, CALLER, utcnow() - timedelta(days=1000))
    policy = RetentionPolicy() if how == "automatic" else POLICY  # the built-in default behaves the same
    if how == "purge":
        purge(ctx.engine, policy, POLICIES)
    elif how == "forced purge":
        purge(ctx.engine, policy, POLICIES, days=1, force=True, reason="test")
    elif how == "automatic":
        automatic_purge(ctx.engine, policy, POLICIES, 800)
    elif how == "forget":
        forget_request(ctx.engine, policy, POLICIES, CALLER)
    else:
        forget_request(ctx.engine, policy, POLICIES, CALLER, force=True, reason="test")
    assert count(ctx.engine, Lead) == 0
    assert count(ctx.engine, OptOut, OptOut.phone == CALLER, OptOut.opted_out == True) == 1  # noqa: E712
    assert count(ctx.engine, OptOutEvent, OptOutEvent.phone == CALLER) == 1
