"""Borrower data: forget a number on request, purge old conversations; opt-outs always stay."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import update
from sqlmodel import Session, SQLModel, select

from service.cli import main
from service.models import (
    CallEvent,
    Decision,
    DeliveryEvent,
    InboundMessage,
    Lead,
    OptOut,
    OptOutEvent,
    OutboundMessage,
    utcnow,
)
from service.privacy import COUNT_KEYS, forget_number, purge_older_than
from tests.helpers import BROKER, BROKER2, CALLER, call_params, sms_params, status_params

DIAL = "/twilio/voice/dial-status"
RECENT_CALLER = "+14155550142"
DIGITS = CALLER[2:]  # 4155550199: the number in any format
KEPT = {"optout", "optoutevent"}


def missed(client, post, sid: str = "CA" + "1" * 32, caller: str = CALLER, to: str = BROKER) -> None:
    params = call_params(sid, caller, to, CallStatus="in-progress", DialCallStatus="no-answer")
    assert post(client, DIAL, params).status_code == 200


def reply(client, post, text: str, sender: str = CALLER, to: str = BROKER) -> None:
    assert post(client, "/twilio/sms", sms_params(text, sender=sender, to=to)).status_code == 200


def deliver(client, post, ctx, to: str) -> None:
    with Session(ctx.engine) as session:
        sids = session.exec(select(OutboundMessage.twilio_sid).where(OutboundMessage.to_phone == to)).all()
    for sid in sids:
        assert post(client, "/twilio/sms/status", status_params(sid, "delivered", to=to)).status_code == 200


def conversation(client, post, ctx, caller: str = CALLER, sid: str = "CA" + "1" * 32) -> None:
    """A missed call, the opener (delivered), a reply, a handoff that alerts the broker, then STOP."""
    missed(client, post, sid, caller)
    deliver(client, post, ctx, caller)
    reply(client, post, "refi, hoping to get it done in the next 2 weeks", sender=caller)
    reply(client, post, "can I lock my rate today?", sender=caller)
    reply(client, post, "STOP", sender=caller)


def rows_mentioning(engine, digits: str) -> dict[str, int]:
    """How many rows of each table mention the digits anywhere, in any column."""
    found: dict[str, int] = {}
    with Session(engine) as session:
        for table in SQLModel.metadata.sorted_tables:
            hits = sum(digits in json.dumps([str(v) for v in row]) for row in session.execute(table.select()))
            if hits:
                found[table.name] = hits
    return found


def count(engine, model, *where: object) -> int:
    with Session(engine) as session:
        return len(session.exec(select(model).where(*where)).all())


def backdate(engine, phone: str, days: int) -> None:
    """Move every row of one caller's conversation `days` into the past."""
    delta = timedelta(days=days)
    with Session(engine) as session:
        leads = session.exec(select(Lead).where(Lead.phone == phone)).all()
        lead_ids = [lead.id for lead in leads]
        inbound = session.exec(select(InboundMessage).where(InboundMessage.from_phone == phone)).all()
        outbound = session.exec(select(OutboundMessage).where(OutboundMessage.lead_id.in_(lead_ids))).all()
        sids = [msg.twilio_sid for msg in outbound if msg.twilio_sid]
        rows: list[tuple[object, tuple[str, ...]]] = [
            *((lead, ("created_at", "updated_at", "opener_at")) for lead in leads),
            *((msg, ("received_at", "processed_at")) for msg in inbound),
            *((msg, ("created_at", "sent_at", "next_attempt_at")) for msg in outbound),
            *(
                (d, ("created_at",))
                for d in session.exec(
                    select(Decision).where(Decision.inbound_id.in_([m.id for m in inbound]))
                ).all()
            ),
            *(
                (c, ("created_at",))
                for c in session.exec(select(CallEvent).where(CallEvent.caller == phone)).all()
            ),
            *(
                (e, ("created_at",))
                for e in session.exec(select(DeliveryEvent).where(DeliveryEvent.message_sid.in_(sids))).all()
            ),
            *(
                (e, ("created_at",))
                for e in session.exec(select(OptOutEvent).where(OptOutEvent.phone == phone)).all()
            ),
        ]
        for row, names in rows:
            for name in names:
                if getattr(row, name) is not None:
                    setattr(row, name, getattr(row, name) - delta)
            session.add(row)
        session.commit()


def privacy(ctx, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(
        main, ["privacy", *args], env={"TEXTBACK_DATABASE_URL": ctx.settings.database_url}, input=input
    )


# ---------------------------------------------------------------------------------------------------------
# Forget


def test_forget_number_leaves_it_only_in_opt_out_records(client, post, ctx) -> None:
    conversation(client, post, ctx)
    before = rows_mentioning(ctx.engine, DIGITS)
    assert {"lead", "inboundmessage", "outboundmessage", "callevent", "optout", "optoutevent"} <= set(before)

    counts = forget_number(ctx.engine, CALLER)

    assert set(counts) == set(COUNT_KEYS)
    assert counts["leads"] == 1
    assert counts["inbound_messages"] == 3
    assert counts["decisions"] == 4  # the STOP after the handoff is an opt-out and a forward to the broker
    assert counts["call_events"] == 1
    assert counts["delivery_events"] == 1
    assert counts["outbound_messages"] == before["outboundmessage"]  # texts to it and alerts naming it
    assert set(rows_mentioning(ctx.engine, DIGITS)) == KEPT
    for model in (Lead, InboundMessage, OutboundMessage, Decision, CallEvent, DeliveryEvent):
        assert count(ctx.engine, model) == 0, model.__name__
    assert count(ctx.engine, OptOut, OptOut.phone == CALLER, OptOut.opted_out == True) == 1  # noqa: E712
    assert count(ctx.engine, OptOutEvent, OptOutEvent.phone == CALLER) == 1


def test_forget_number_still_sends_no_opener_when_caller_had_opted_out(client, post, ctx, twilio_api) -> None:
    conversation(client, post, ctx)
    forget_number(ctx.engine, CALLER)
    sent = len(twilio_api["messages"].calls)

    missed(client, post, "CA" + "5" * 32)

    assert len(twilio_api["messages"].calls) == sent
    with Session(ctx.engine) as session:
        [event] = session.exec(select(CallEvent)).all()
    assert "opted out" in (event.reason or "")
    assert count(ctx.engine, OutboundMessage) == 0


def test_forget_number_keeps_other_callers_and_other_brokers_when_broker_given(client, post, ctx) -> None:
    missed(client, post)
    reply(client, post, "purchase")
    missed(client, post, "CA" + "2" * 32, to=BROKER2)
    missed(client, post, "CA" + "3" * 32, caller=RECENT_CALLER)
    broker_id = ctx.broker_for(BROKER).id

    counts = forget_number(ctx.engine, CALLER, broker_id=broker_id)

    assert counts["leads"] == 1
    assert count(ctx.engine, Lead, Lead.phone == CALLER) == 1  # the other broker's lead stays
    assert count(ctx.engine, Lead, Lead.phone == CALLER, Lead.broker_id == broker_id) == 0
    assert count(ctx.engine, Lead, Lead.phone == RECENT_CALLER) == 1
    assert count(ctx.engine, CallEvent, CallEvent.caller == CALLER) == 1
    assert count(ctx.engine, OutboundMessage, OutboundMessage.to_phone == RECENT_CALLER) == 1


def test_forget_number_counts_nothing_when_number_unknown(ctx) -> None:
    assert forget_number(ctx.engine, "+14155550177") == dict.fromkeys(COUNT_KEYS, 0)


def test_forget_number_via_cli_when_yes(client, post, ctx) -> None:
    conversation(client, post, ctx)
    result = privacy(ctx, "forget", "(415) 555-0199", "--yes", "--force", "--reason", "borrower asked, counsel agreed")
    assert result.exit_code == 0, result.output
    assert "leads: 1" in result.stdout
    assert "+1******0199" in result.stderr
    assert DIGITS not in result.output  # the number is masked in what the command prints
    assert set(rows_mentioning(ctx.engine, DIGITS)) == KEPT


def test_forget_number_via_cli_deletes_nothing_when_not_confirmed(client, post, ctx) -> None:
    missed(client, post)
    result = privacy(ctx, "forget", CALLER, input="n\n")
    assert result.exit_code == 1
    assert "Aborted" in result.output
    assert count(ctx.engine, Lead) == 1


def test_forget_number_via_cli_for_one_broker(client, post, ctx) -> None:
    missed(client, post)
    missed(client, post, "CA" + "2" * 32, to=BROKER2)
    result = privacy(ctx, "forget", CALLER, "--broker", BROKER2, "--yes", "--force", "--reason", "test")
    assert result.exit_code == 0, result.output
    assert count(ctx.engine, Lead) == 1
    assert "for broker" in result.stderr


@pytest.mark.parametrize("bad", ["not-a-number", "12345", "anonymous", ""])
def test_reject_forget_when_number_invalid(ctx, bad: str) -> None:
    result = privacy(ctx, "forget", bad, "--yes")
    assert result.exit_code == 2
    assert "is not a phone number" in result.output


def test_reject_forget_when_broker_unknown(ctx) -> None:
    result = privacy(ctx, "forget", CALLER, "--broker", "+13125550100", "--yes")
    assert result.exit_code == 2
    assert "no broker with Twilio number" in result.output


# ---------------------------------------------------------------------------------------------------------
# Purge


def test_purge_old_conversations_keeping_recent_ones_and_opt_outs(client, post, ctx) -> None:
    conversation(client, post, ctx)
    missed(client, post, "CA" + "2" * 32, caller=RECENT_CALLER)
    reply(client, post, "purchase", sender=RECENT_CALLER)
    backdate(ctx.engine, CALLER, days=60)
    recent_before = rows_mentioning(ctx.engine, RECENT_CALLER[2:])

    counts = purge_older_than(ctx.engine, 30)

    assert counts["leads"] == 1
    assert counts["inbound_messages"] == 3
    assert counts["call_events"] == 1
    assert set(rows_mentioning(ctx.engine, DIGITS)) == KEPT
    assert rows_mentioning(ctx.engine, RECENT_CALLER[2:]) == recent_before
    assert count(ctx.engine, Lead) == 1
    assert count(ctx.engine, Decision) == 1  # the recent caller's
    assert count(ctx.engine, OptOut, OptOut.phone == CALLER) == 1
    assert count(ctx.engine, OptOutEvent, OptOutEvent.phone == CALLER) == 1


def test_purge_nothing_when_conversations_recent(client, post, ctx) -> None:
    conversation(client, post, ctx)
    assert purge_older_than(ctx.engine, 30) == dict.fromkeys(COUNT_KEYS, 0)
    assert count(ctx.engine, Lead) == 1


def test_purge_leaves_conversation_alone_when_work_pending(client, post, ctx) -> None:
    missed(client, post)
    reply(client, post, "purchase")
    backdate(ctx.engine, CALLER, days=60)
    with Session(ctx.engine) as session:
        session.execute(
            update(OutboundMessage)
            .where(OutboundMessage.template_id == "ask_timeline")
            .values(status="pending")
        )
        session.commit()

    counts = purge_older_than(ctx.engine, 30)

    assert counts["leads"] == counts["inbound_messages"] == counts["outbound_messages"] == 0
    assert count(ctx.engine, Lead) == 1


def test_purge_counts_conversation_recent_when_last_reply_recent(client, post, ctx) -> None:
    missed(client, post)
    backdate(ctx.engine, CALLER, days=60)
    reply(client, post, "purchase")  # a reply today keeps the whole conversation
    assert purge_older_than(ctx.engine, 30)["leads"] == 0
    assert count(ctx.engine, CallEvent) == 1


def test_purge_everything_with_now_in_future_but_opt_outs(client, post, ctx) -> None:
    conversation(client, post, ctx)
    missed(client, post, "CA" + "3" * 32, caller="anonymous")  # a call that never became a lead
    counts = purge_older_than(ctx.engine, 7, now=utcnow() + timedelta(days=8))
    assert counts["call_events"] == 2
    for model in (Lead, InboundMessage, OutboundMessage, Decision, CallEvent, DeliveryEvent):
        assert count(ctx.engine, model) == 0, model.__name__
    assert count(ctx.engine, OptOut) == count(ctx.engine, OptOutEvent) == 1


def test_purge_via_cli_with_older_than_days(client, post, ctx) -> None:
    missed(client, post)
    backdate(ctx.engine, CALLER, days=800)
    result = privacy(ctx, "purge", "--older-than-days", "790")
    assert result.exit_code == 0, result.output
    assert "leads: 1" in result.stdout
    assert count(ctx.engine, Lead) == 0


def test_purge_without_days_keeps_conversations_younger_than_policy(client, post, ctx) -> None:
    missed(client, post)
    backdate(ctx.engine, CALLER, days=60)
    result = privacy(ctx, "purge")
    assert result.exit_code == 0, result.output
    assert "25 months (policy)" in result.stderr
    assert count(ctx.engine, Lead) == 1


@pytest.mark.parametrize("days", ["0", "-3", "soon"])
def test_reject_purge_when_days_not_positive(ctx, days: str) -> None:
    result = privacy(ctx, "purge", "--older-than-days", days)
    assert result.exit_code == 2
    assert "Invalid value for '--older-than-days'" in result.output


def test_reject_purge_older_than_when_days_below_one(ctx) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        purge_older_than(ctx.engine, 0)


def test_apply_retention_from_worker_sweep(client, post, ctx) -> None:
    """With TEXTBACK_RETENTION_DAYS=policy, the worker's sweep purges conversations past the policy's period."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update
    from sqlmodel import Session, select

    from service.models import CallEvent, Lead, OptOut, OutboundMessage
    from tests.helpers import call_params, sms_params

    post(client, "/twilio/voice/dial-status", call_params(DialCallStatus="no-answer"))
    post(client, "/twilio/sms", sms_params("STOP"))
    old = datetime.now(UTC) - timedelta(days=800)
    with Session(ctx.engine) as session:
        for model in (Lead, OutboundMessage, CallEvent):
            session.execute(update(model).values(created_at=old))
        session.execute(update(Lead).values(updated_at=old, opener_at=old))
        session.execute(update(OutboundMessage).values(sent_at=old, next_attempt_at=old))
        from service.models import InboundMessage, OptOutEvent
        session.execute(update(InboundMessage).values(received_at=old, processed_at=old))
        session.execute(update(OptOutEvent).values(created_at=old))
        session.commit()
    ctx.settings.retention_days = "policy"
    client.app.state.worker.run_once()
    with Session(ctx.engine) as session:
        assert session.exec(select(Lead)).all() == []
        assert len(session.exec(select(OptOut)).all()) == 1  # the opt-out is kept for good
