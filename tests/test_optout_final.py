"""An opt-out is final the moment it is acknowledged: plain-words opt-outs in the webhook's own transaction, one
confirmation per opt-out, audit rows that say what Twilio knows, and replay protection that outlives a forget.

The races themselves (many numbers at once, two instances) are in test_optout_races.py.
"""

from __future__ import annotations

import itertools
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, select

from service.cli import main
from service.models import (
    Decision,
    InboundMessage,
    Lead,
    LineTypeCache,
    OptOut,
    OptOutEvent,
    OutboundMessage,
    utcnow,
)
from service.privacy import purge_older_than
from tests.helpers import (
    BROKER,
    CALLER,
    MESSAGES_URL,
    call_params,
    message_json,
    messages_page,
    rendered,
    sent_texts,
    session_hooks,
    sms_params,
    twilio_created,
)

DIAL = "/twilio/voice/dial-status"
LOOKUP = f"https://lookups.twilio.com/v2/PhoneNumbers/{CALLER}"
HANDOFF_STOP = "please stop texting me and just call me, my rate lock expires friday"


@dataclass
class Commits:
    """Per committed transaction: the inbound messages it wrote (sid -> status) and the opt-outs (phone -> state)."""

    seen: list[tuple[dict[str, str], dict[str, bool]]] = field(default_factory=list)

    def after_flush(self, session: OrmSession, _context: object) -> None:
        for obj in itertools.chain(session.new, session.dirty):
            if isinstance(obj, InboundMessage):
                session.info.setdefault("inbound", {})[obj.message_sid] = obj.status
            if isinstance(obj, OptOut):
                session.info.setdefault("optout", {})[obj.phone] = obj.opted_out

    def after_rollback(self, session: OrmSession) -> None:
        if session.get_nested_transaction() is not None:
            return  # a savepoint was rolled back (a duplicate insert); the transaction goes on
        session.info.pop("inbound", None)
        session.info.pop("optout", None)

    def after_commit(self, session: OrmSession) -> None:
        if session.get_nested_transaction() is not None:
            return  # a savepoint was released; the transaction goes on
        self.seen.append((session.info.pop("inbound", {}), session.info.pop("optout", {})))

    def storing(self, sid: str) -> tuple[str, dict[str, bool]]:
        """The inbound status and the opt-outs of the transaction that stored message `sid` (the webhook's)."""
        return next((inbound[sid], optouts) for inbound, optouts in self.seen if sid in inbound)


@pytest.fixture
def commits() -> Iterator[Commits]:
    with session_hooks(Commits()) as seen:
        yield seen


def missed(client, post, sid: str = "CA" + "1" * 32) -> None:
    assert post(client, DIAL, call_params(sid, DialCallStatus="no-answer")).status_code == 200


def texts_to_caller(route) -> list[str]:
    return [t["Body"] for t in sent_texts(route) if t["To"] == CALLER]


def opted_out(ctx) -> bool:
    with Session(ctx.engine) as session:
        row = session.exec(select(OptOut).where(OptOut.phone == CALLER)).first()
    return bool(row and row.opted_out)


def queue_pending(ctx, count: int = 3) -> list[int]:
    """Texts already queued for the caller when the opt-out arrives (due a little later)."""
    with Session(ctx.engine, expire_on_commit=False) as session:
        lead = session.exec(select(Lead).where(Lead.phone == CALLER)).one()
        msgs = [OutboundMessage(broker_id=lead.broker_id, lead_id=lead.id, purpose="question",
                                template_id="ask_timeline", to_phone=CALLER, from_phone=BROKER, body=f"queued {n}",
                                next_attempt_at=utcnow() + timedelta(minutes=5)) for n in range(count)]
        session.add_all(msgs)
        session.commit()
        return [m.id for m in msgs if m.id is not None]


# ---------------------------------------------------------------------------------------------------------
# Plain-words opt-outs are final before the webhook answers


@pytest.mark.parametrize("text", ["please stop texting me", "remove me from your list", "Stop. Wrong number",
                                  "no more texts, thanks"])
def test_apply_plain_words_opt_out_in_webhook_transaction(client, post, twilio_api, ctx, commits, text) -> None:
    missed(client, post)
    queued = queue_pending(ctx)
    params = sms_params(text)
    assert post(client, "/twilio/sms", params).status_code == 200
    status, optouts = commits.storing(params["MessageSid"])
    assert optouts == {CALLER: True}, "the opt-out commits with the webhook, before Twilio gets its answer"
    assert status == "processed"
    with Session(ctx.engine) as session:
        [decision] = session.exec(select(Decision)).all()
        rows = session.exec(select(OutboundMessage).where(OutboundMessage.id.in_(queued))).all()
    assert decision.action == "opt_out"
    assert decision.rules_fired
    assert {r.status for r in rows} == {"suppressed"}
    assert [b for b in texts_to_caller(twilio_api["messages"]) if b == rendered(ctx, "optout_confirm")] != []
    assert len(texts_to_caller(twilio_api["messages"])) == 2, "the opener and one confirmation"


def test_apply_opt_out_in_webhook_and_leave_reply_when_stop_carries_handoff_reason(
    client, post, twilio_api, ctx, commits,
) -> None:
    missed(client, post)
    params = sms_params(HANDOFF_STOP)
    assert post(client, "/twilio/sms", params).status_code == 200
    status, optouts = commits.storing(params["MessageSid"])
    assert optouts == {CALLER: True}
    assert status == "received", "the reply still goes to reply processing (a person was asked for)"
    texts = texts_to_caller(twilio_api["messages"])
    assert [b for b in texts if b == rendered(ctx, "optout_confirm")] == [texts[-1]]
    assert len(texts) == 2, "the opener and exactly one confirmation, though the reply is processed twice"
    with Session(ctx.engine) as session:
        events = session.exec(select(OptOutEvent)).all()
        inbound = session.exec(select(InboundMessage)).one()
    assert len(events) == 1, "one event per message"
    assert inbound.status == "processed"


def test_keep_subscription_when_reply_only_mentions_stop(client, post, twilio_api, ctx, commits) -> None:
    missed(client, post)
    params = sms_params("can't stop thinking about this house, we want to buy in march")
    post(client, "/twilio/sms", params)
    status, optouts = commits.storing(params["MessageSid"])
    assert optouts == {}
    assert status == "received"
    assert not opted_out(ctx)


# ---------------------------------------------------------------------------------------------------------
# Exactly one confirmation per opt-out


def test_send_no_confirmation_when_twilio_confirmed_then_plain_words_repeat_it(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    post(client, "/twilio/sms", sms_params("STOP", OptOutType="STOP"))
    post(client, "/twilio/sms", sms_params("please stop texting me"))
    post(client, "/twilio/sms", sms_params("unsubscribe"))
    assert opted_out(ctx)
    assert len(texts_to_caller(twilio_api["messages"])) == 1, "only the opener: Twilio confirmed the opt-out"


def test_send_one_confirmation_per_opt_out_in_any_words(client, post, twilio_api, ctx) -> None:
    for word in ("STOP", "unsubscribe", "please stop texting me", "Stop!!", "START", "cancel", "end"):
        assert post(client, "/twilio/sms", sms_params(word)).status_code == 200
    texts = texts_to_caller(twilio_api["messages"])
    stop, start = rendered(ctx, "optout_confirm"), rendered(ctx, "optin_confirm")
    assert texts == [stop, start, stop]
    with Session(ctx.engine) as session:
        assert len(session.exec(select(OptOutEvent)).all()) == 7  # every request is in the history


# ---------------------------------------------------------------------------------------------------------
# Audit rows say what Twilio knows


def _timeout_first_opener(route) -> None:
    """The opener's request times out after Twilio stored it; every later request is accepted."""
    calls = itertools.count()

    def respond(request: httpx.Request) -> httpx.Response:
        if next(calls) == 0:
            raise httpx.ReadTimeout("no answer")
        return twilio_created(request)

    route.side_effect = respond


def _messages_list(twilio_api, messages: list[dict]) -> None:
    twilio_api.get(url__startswith=MESSAGES_URL).respond(200, json=messages_page(messages))


def _export(ctx) -> list[dict]:
    result = CliRunner().invoke(main, ["audit", "export", "--layout", "flat", "--since", "2000-01-01", "--format", "jsonl"],
                                env={"TEXTBACK_DATABASE_URL": ctx.settings.database_url})
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_record_timed_out_send_as_sent_when_stop_follows_and_twilio_has_it(client, post, twilio_api, ctx) -> None:
    route = twilio_api["messages"]
    _timeout_first_opener(route)
    missed(client, post)
    with Session(ctx.engine) as session:
        opener = session.exec(select(OutboundMessage).where(OutboundMessage.purpose == "opener")).one()
    assert opener.unknown_outcome
    post(client, "/twilio/sms", sms_params("STOP"))
    _messages_list(twilio_api, [message_json(CALLER, BROKER, opener.body, sid="SM" + "e" * 32, status="delivered")])
    client.app.state.worker.run_once()
    with Session(ctx.engine) as session:
        row = session.get(OutboundMessage, opener.id)
    assert (row.status, row.twilio_sid) == ("sent", "SM" + "e" * 32)
    assert [b for b in texts_to_caller(route) if b == opener.body] == [opener.body], "never sent again"
    [exported] = [r for r in _export(ctx) if r["event_type"] == "outbound_text" and r["record_id"] == opener.id]
    assert (exported["status"], exported["twilio_sid"]) == ("sent", "SM" + "e" * 32)


def test_suppress_timed_out_send_when_stop_follows_and_twilio_lacks_it(client, post, twilio_api, ctx) -> None:
    route = twilio_api["messages"]
    _timeout_first_opener(route)
    missed(client, post)
    post(client, "/twilio/sms", sms_params("STOP"))
    list_route = _messages_list(twilio_api, [])
    client.app.state.worker.run_once()
    with Session(ctx.engine) as session:
        row = session.exec(select(OutboundMessage).where(OutboundMessage.purpose == "opener")).one()
    assert row.status == "suppressed"
    assert "Twilio had no record" in (row.last_error or "")
    assert len([b for b in texts_to_caller(route) if b == row.body]) == 1, "the one timed-out attempt only"
    [exported] = [r for r in _export(ctx) if r["event_type"] == "outbound_text" and r["record_id"] == row.id]
    assert exported["status"] == "suppressed"
    del list_route


# ---------------------------------------------------------------------------------------------------------
# Forget: the line-type cache goes, replay protection stays


def forget(ctx) -> None:
    """Forget everything but the opt-outs (forced: by default young communications are kept, test_retention)."""
    result = CliRunner().invoke(main, ["privacy", "forget", CALLER, "--yes", "--force", "--reason", "test"],
                                env={"TEXTBACK_DATABASE_URL": ctx.settings.database_url})
    assert result.exit_code == 0, result.output


def test_forget_number_removes_it_from_line_type_cache(client, post, twilio_api, ctx) -> None:
    ctx.settings.line_type_lookup = True
    twilio_api.get(url__startswith=LOOKUP).respond(200, json={
        "phone_number": CALLER, "line_type_intelligence": {"type": "mobile"}, "url": LOOKUP})
    missed(client, post)
    with Session(ctx.engine) as session:
        assert session.get(LineTypeCache, CALLER) is not None
    forget(ctx)
    with Session(ctx.engine) as session:
        assert session.get(LineTypeCache, CALLER) is None


def _erase(ctx, how: str) -> None:
    if how == "forget":
        forget(ctx)
    else:
        purge_older_than(ctx.engine, 7, now=utcnow() + timedelta(days=30))


@pytest.mark.parametrize("how", ["forget", "purge"])
def test_refuse_replayed_start_after_number_erased(client, post, twilio_api, ctx, caplog, how) -> None:
    missed(client, post)
    post(client, "/twilio/sms", sms_params("STOP"))
    start = sms_params("START")  # captured, validly signed
    post(client, "/twilio/sms", start)
    post(client, "/twilio/sms", sms_params("STOP"))
    assert opted_out(ctx)
    _erase(ctx, how)
    sent = len(twilio_api["messages"].calls)
    caplog.set_level(logging.INFO, logger="textback")
    response = post(client, "/twilio/sms", start)
    assert response.status_code == 200
    assert list(ET.fromstring(response.text)) == [], "empty TwiML"
    assert opted_out(ctx), "a replay never opts a number back in"
    assert len(twilio_api["messages"].calls) == sent
    assert not any(b == rendered(ctx, "optin_confirm") for b in texts_to_caller(twilio_api["messages"])[-1:])
    with Session(ctx.engine) as session:
        assert session.exec(select(InboundMessage)).all() == []
        assert session.exec(select(Lead)).all() == []
    assert any("replayed" in r.getMessage() for r in caplog.records)


def test_refuse_replayed_missed_call_after_forget(client, post, twilio_api, ctx) -> None:
    call = call_params("CA" + "7" * 32, DialCallStatus="no-answer")
    assert post(client, DIAL, call).status_code == 200
    assert len(texts_to_caller(twilio_api["messages"])) == 1
    forget(ctx)
    assert post(client, DIAL, call).status_code == 200
    assert len(texts_to_caller(twilio_api["messages"])) == 1, "the forgotten number gets no second opener"
    with Session(ctx.engine) as session:
        assert session.exec(select(Lead)).all() == []


def test_accept_new_messages_from_forgotten_number(client, post, twilio_api, ctx) -> None:
    """Only replays are refused: the borrower can still write (and opt back in) with a new message."""
    post(client, "/twilio/sms", sms_params("STOP"))
    forget(ctx)
    post(client, "/twilio/sms", sms_params("START"))
    assert not opted_out(ctx)
    assert texts_to_caller(twilio_api["messages"])[-1] == rendered(ctx, "optin_confirm")
