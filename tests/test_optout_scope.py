"""Who a STOP stops (policies/sending/opt_out.yaml): broker, brokerage or every number textback serves.

The truth table runs through real signed webhooks and the real API on a brokers file of six brokers: Dana and
Priya (two brokerage names, one company NMLS ID), Sam (Dana's brokerage name under another company NMLS ID),
Leo (Dana's brokerage name without a company NMLS ID), Marcus and Nia (no company NMLS ID, one brokerage name in
other case and spacing), Claire and Elodie (no company NMLS ID, one non-ASCII brokerage name in other case,
Unicode form and spacing). What reached Twilio is read from the mocked Twilio API.
"""

from __future__ import annotations

import multiprocessing
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, update
from sqlmodel import Session, select

from service import optout_lock, outbox, sender, store
from service.audit import iter_events
from service.broker_set import sync_brokers
from service.brokers import load_brokers
from service.db import session_scope
from service.errors import PolicyError
from service.models import Broker, CallEvent, Lead, OptOut, OptOutEvent, OutboundMessage, Purpose
from service.phones import mask
from service.sending.opt_out_policy import (
    OptOutPolicy,
    brokerage_findings,
    brokerage_key,
    brokerage_name_key,
    load_opt_out_policy,
    same_brokerage,
)
from tests.api_helpers import bearer, missed, reply
from tests.helpers import CALLER, POLICIES, sent_texts, twilio_created
from tests.optout_lock_children import change_in_child, hold_for_send_in_child

pytestmark = pytest.mark.postgres

DANA, PRIYA, SAM, LEO = "+14155550100", "+14155550130", "+14155550150", "+14155550140"
MARCUS, NIA = "+13125550100", "+13125550200"
CLAIRE, ELODIE = "+16175550100", "+16175550200"
NAMES = {DANA: ("Dana Whitfield", "Summit Home Loans"), MARCUS: ("Marcus Chen", "Harbor Mortgage Group"),
         CLAIRE: ("Claire Dubois", "SOCI\u00c9T\u00c9 HYPOTH\u00c9CAIRE DU NORD")}
SCOPED_YAML = f"""
brokers:
  - {{twilio_number: "{DANA}", name: Dana Whitfield, brokerage: Summit Home Loans, nmls_id: "123456",
     company_nmls_id: "654321", forward_to: "+14155550111", timezone: America/Los_Angeles, call_screening: false}}
  - {{twilio_number: "{PRIYA}", name: Priya Raman, brokerage: Summit Mortgage Team, nmls_id: "223344",
     company_nmls_id: "654321", forward_to: "+14155550131", timezone: America/Los_Angeles, call_screening: false}}
  - {{twilio_number: "{SAM}", name: Sam Ortiz, brokerage: Summit Home Loans, nmls_id: "445566",
     company_nmls_id: "777777", forward_to: "+14155550151", timezone: America/Los_Angeles, call_screening: false}}
  - {{twilio_number: "{LEO}", name: Leo Park, brokerage: Summit Home Loans, nmls_id: "334455",
     forward_to: "+14155550141", timezone: America/Los_Angeles, call_screening: false}}
  - {{twilio_number: "{MARCUS}", name: Marcus Chen, brokerage: Harbor Mortgage Group, nmls_id: "2233445",
     forward_to: "+13125550111", timezone: America/Chicago, call_screening: false}}
  - {{twilio_number: "{NIA}", name: Nia Brooks, brokerage: "harbor  MORTGAGE group", nmls_id: "5566778",
     forward_to: "+13125550211", timezone: America/Chicago, call_screening: false}}
  - {{twilio_number: "{CLAIRE}", name: Claire Dubois, brokerage: "SOCI\\u00c9T\\u00c9 HYPOTH\\u00c9CAIRE DU NORD",
     nmls_id: "6677889", forward_to: "+16175550111", timezone: America/New_York, call_screening: false}}
  - {{twilio_number: "{ELODIE}", name: Elodie Martin, brokerage: "Socie\\u0301te\\u0301\\u2009hypothe\\u0301caire du\\u00a0 nord",
     nmls_id: "7788990", forward_to: "+16175550211", timezone: America/New_York, call_screening: false}}
"""
# The borrower texts STOP to the first broker; does it stop the second one's texts?
RELATIONS = {
    "same broker": (DANA, DANA),
    "same brokerage by NMLS": (DANA, PRIYA),
    "same brokerage by name": (MARCUS, NIA),
    "same brokerage by non-ASCII name": (CLAIRE, ELODIE),
    "other brokerage": (DANA, MARCUS),
    "same name, other NMLS": (DANA, SAM),
    "same name, no NMLS": (DANA, LEO),
}
STOPPED = {
    "broker": {"same broker"},
    "brokerage": {"same broker", "same brokerage by NMLS", "same brokerage by name",
                  "same brokerage by non-ASCII name"},
    "all": set(RELATIONS),
}
CASES = [(scope, relation) for scope in STOPPED for relation in RELATIONS]


@pytest.fixture
def brokers_file(tmp_path: Path) -> Path:
    path = tmp_path / "brokers.yaml"
    path.write_text(SCOPED_YAML)
    return path


@pytest.fixture
def scope() -> str:
    """The opt-out scope in force (a test parametrizes it; the shipped policy says brokerage)."""
    return "brokerage"


@pytest.fixture
def collaborators(output_guard, reply_rules, sending_policy, scope) -> dict[str, object]:
    policy = replace(sending_policy, opt_out=replace(sending_policy.opt_out, scope=scope))
    return {"guard": output_guard, "rules": reply_rules, "sending_policy": policy}


def texts_from(twilio_api, number: str) -> list[str]:
    """The bodies Twilio was asked to send from `number` to the caller, in order."""
    return [t["Body"] for t in sent_texts(twilio_api["messages"]) if t["From"] == number and t["To"] == CALLER]


def rows_from(ctx, number: str, purpose: str | None = None) -> list[OutboundMessage]:
    broker_id = ctx.broker_for(number).id
    with Session(ctx.engine) as session:
        query = select(OutboundMessage).where(OutboundMessage.broker_id == broker_id,
                                              OutboundMessage.to_phone == CALLER)
        if purpose is not None:
            query = query.where(OutboundMessage.purpose == purpose)
        return list(session.exec(query.order_by(OutboundMessage.id)))


def lead_of(ctx, number: str) -> int:
    with Session(ctx.engine) as session:
        return session.exec(select(Lead.id).where(Lead.broker_id == ctx.broker_for(number).id,
                                                  Lead.phone == CALLER)).one()


def stop_reason(scope: str, stop_to: str = DANA) -> str:
    name, brokerage = NAMES[stop_to]
    return f"opted out ({scope} scope: STOP to {name} of {brokerage} at {mask(stop_to)} on 2026-06-10)"


# ---------------------------------------------------------------------------------------------------------
# The truth table: scope x recipient broker x kind of text.


@pytest.mark.parametrize(("scope", "relation"), CASES)
def test_send_opener_after_stop_only_outside_scope(scope, relation, client, post, ctx, twilio_api) -> None:
    stop_to, sender = RELATIONS[relation]
    reply(client, post, "STOP", to=stop_to)
    missed(client, post, to=sender)
    stopped = relation in STOPPED[scope]
    assert [m.status for m in rows_from(ctx, sender, Purpose.opener)] == ([] if stopped else ["sent"])
    assert len(texts_from(twilio_api, sender)) == (relation == "same broker") + (not stopped), (
        "the STOP's confirmation from its own number, and the opener unless stopped")
    if stopped:
        with Session(ctx.engine) as session:
            [call] = session.exec(select(CallEvent).where(CallEvent.reason.is_not(None))).all()  # type: ignore[union-attr]
        assert call.reason.endswith(f"no opener: the caller {stop_reason(scope, stop_to)}")


@pytest.mark.parametrize(("scope", "relation"), CASES)
def test_send_follow_up_after_stop_only_outside_scope(scope, relation, client, post, ctx, twilio_api) -> None:
    stop_to, sender = RELATIONS[relation]
    missed(client, post, to=sender)  # the opener goes before the STOP
    reply(client, post, "STOP", to=stop_to)
    before = len(texts_from(twilio_api, sender))
    reply(client, post, "a refinance", to=sender)
    questions = rows_from(ctx, sender, Purpose.question)
    after = texts_from(twilio_api, sender)[before:]
    if relation not in STOPPED[scope]:
        assert [m.status for m in questions] == ["sent"]
        assert len(after) == 1
        return
    assert after == []
    if relation != "same broker":  # the sender's own lead is closed by its STOP: no question is even queued
        assert [(m.status, m.last_error) for m in questions] == [("suppressed", stop_reason(scope, stop_to))]


@pytest.mark.parametrize(("scope", "relation"), CASES)
def test_send_human_text_after_stop_only_outside_scope(scope, relation, client, post, ctx, twilio_api) -> None:
    stop_to, sender = RELATIONS[relation]
    missed(client, post, to=sender)
    reply(client, post, "STOP", to=stop_to)
    lead_id = lead_of(ctx, sender)
    headers = bearer(ctx, ctx.broker_for(sender).id)
    response = client.post(f"/api/leads/{lead_id}/messages", json={"body": "Hi, this is your loan officer."},
                           headers=headers)
    detail = client.get(f"/api/leads/{lead_id}", headers=headers).json()
    if relation in STOPPED[scope]:
        assert response.status_code == 409, response.text
        assert response.json()["details"] == {"opt_out": stop_reason(scope, stop_to)}
        assert rows_from(ctx, sender, Purpose.human) == []
        assert detail["opt_out"] == {"opted_out": True, "scope": scope, "reason": stop_reason(scope, stop_to)}
    else:
        assert response.status_code == 201, response.text
        assert texts_from(twilio_api, sender)[-1] == "Hi, this is your loan officer."
        assert detail["opt_out"] == {"opted_out": False, "scope": scope, "reason": None}


@pytest.mark.parametrize(("scope", "relation"), CASES)
def test_confirm_stop_once_from_each_number_texted_in_every_scope(scope, relation, client, post, ctx,
                                                                  twilio_api) -> None:
    """The confirmation of a STOP is never stopped by the scope: one from each number the borrower texted STOP."""
    stop_to, sender = RELATIONS[relation]
    reply(client, post, "STOP", to=stop_to)
    reply(client, post, "STOP", to=sender)
    assert [m.status for m in rows_from(ctx, sender, Purpose.optout_confirm)] == ["sent"]
    assert len(texts_from(twilio_api, sender)) == 1
    with Session(ctx.engine) as session:
        events = session.exec(select(OptOutEvent).order_by(OptOutEvent.id)).all()
    assert len(events) == 2, "each STOP is in the history"
    assert {e.scope for e in events} == {scope}, "the scope in force is on every opt-out event"


def test_suppress_queued_follow_up_at_send_time_after_stop_to_other_broker(client, post, ctx, twilio_api) -> None:
    missed(client, post, to=PRIYA)
    with Session(ctx.engine, expire_on_commit=False) as session:
        lead = session.get(Lead, lead_of(ctx, PRIYA))
        queued = outbox.queue_text(session, ctx, broker=ctx.broker_for(PRIYA), lead=lead, to=CALLER,
                                   template_id="ask_timeline", purpose="question", now=datetime.now(UTC))
        session.commit()
    assert queued is not None
    assert queued.msg.status == "pending"
    reply(client, post, "STOP", to=DANA)
    sender.send_one(ctx, queued.msg.id)  # None when the webhook's own background work settled it first
    with Session(ctx.engine) as session:
        row = session.get(OutboundMessage, queued.msg.id)
    assert (row.status, row.last_error) == (
        "suppressed", stop_reason("brokerage").replace("opted out", "opted out before send", 1))
    assert len(texts_from(twilio_api, PRIYA)) == 1, "the opener only"


# ---------------------------------------------------------------------------------------------------------
# Opting back in: the latest word within the scope wins.


@pytest.mark.parametrize(("stop_to", "start_to"), [(DANA, PRIYA), (MARCUS, NIA)], ids=["by NMLS", "by name"])
def test_restore_whole_brokerage_when_start_to_another_broker_of_it(stop_to, start_to, client, post, ctx,
                                                                    twilio_api) -> None:
    reply(client, post, "STOP", to=stop_to)
    reply(client, post, "START", to=start_to)
    missed(client, post, to=stop_to)
    missed(client, post, to=start_to)
    assert [m.status for m in rows_from(ctx, stop_to, Purpose.opener)] == ["sent"]
    assert [m.status for m in rows_from(ctx, start_to, Purpose.opener)] == ["sent"]


def test_stop_again_when_latest_word_in_brokerage_is_stop(client, post, ctx, twilio_api) -> None:
    reply(client, post, "STOP", to=DANA)
    reply(client, post, "START", to=PRIYA)
    reply(client, post, "STOP", to=PRIYA)
    missed(client, post, to=DANA)
    assert rows_from(ctx, DANA, Purpose.opener) == []
    with Session(ctx.engine) as session:
        state = store.opt_out_state(session, ctx.broker_for(DANA).id, CALLER, "brokerage")
    assert state is not None
    assert (state.opted_out, state.broker_name) == (True, "Priya Raman")


def test_keep_brokerage_stopped_when_start_goes_to_other_brokerage(client, post, ctx, twilio_api) -> None:
    reply(client, post, "STOP", to=DANA)
    reply(client, post, "START", to=MARCUS)
    reply(client, post, "START", to=SAM)
    missed(client, post, to=PRIYA)
    assert rows_from(ctx, PRIYA, Purpose.opener) == []


def test_repeat_stop_to_same_broker_counts_as_latest_word(client, post, ctx, twilio_api) -> None:
    """A second STOP to a number already opted out still moves its word to now (no second confirmation)."""
    reply(client, post, "STOP", to=DANA)
    reply(client, post, "START", to=PRIYA)
    reply(client, post, "STOP", to=DANA)
    missed(client, post, to=PRIYA)
    assert rows_from(ctx, PRIYA, Purpose.opener) == []
    assert len(rows_from(ctx, DANA, Purpose.optout_confirm)) == 1


def test_keep_carrier_block_to_its_own_number(ctx) -> None:
    """Twilio 21610 blocks one sending number: it stops that broker only, and no START elsewhere lifts it."""
    dana, priya = ctx.broker_for(DANA).id, ctx.broker_for(PRIYA).id
    with session_scope(ctx.engine) as session:
        store.set_opt_out(session, broker_id=dana, phone=CALLER, opted_out=True, source="error:21610")
    with Session(ctx.engine) as session:
        assert store.is_opted_out(session, dana, CALLER, "all")
        assert not store.is_opted_out(session, priya, CALLER, "all")
        state = store.opt_out_state(session, dana, CALLER, "brokerage")
        assert state is not None
        assert optout_lock.describe(state) == (
            f"opted out (carrier block: Twilio error 21610 on Dana Whitfield of Summit Home Loans at {mask(DANA)} "
            f"on {state.said_at:%Y-%m-%d})")
    with session_scope(ctx.engine) as session:
        store.set_opt_out(session, broker_id=priya, phone=CALLER, opted_out=False, source="keyword:START",
                          message_sid="SM" + "2" * 32)
    with Session(ctx.engine) as session:
        assert store.is_opted_out(session, dana, CALLER, "brokerage"), "the carrier still blocks Dana's number"


def carrier_blocks(number: str) -> Callable[[httpx.Request], httpx.Response]:
    """respx side effect: Twilio refuses every text from `number` with 21610 (the carrier holds a STOP to it)."""
    def respond(request: httpx.Request) -> httpx.Response:
        if dict(httpx.QueryParams(request.content.decode()))["From"] == number:
            return httpx.Response(400, json={"code": 21610, "message": "Attempt to send to unsubscribed recipient",
                                             "status": 400, "more_info": "https://www.twilio.com/docs/errors/21610"})
        return twilio_created(request)
    return respond


def history(ctx, number: str) -> list[tuple[str, str]]:
    with Session(ctx.engine) as session:
        events = session.exec(select(OptOutEvent).where(OptOutEvent.broker_id == ctx.broker_for(number).id)
                               .order_by(OptOutEvent.id)).all()
    return [(e.action, e.source) for e in events]


def carrier_reason(on: str) -> str:
    return f"opted out (carrier block: Twilio error 21610 on Dana Whitfield of Summit Home Loans at {mask(DANA)} on {on}"


def test_keep_carrier_block_after_stop_when_start_goes_to_other_broker(client, post, ctx, twilio_api) -> None:
    """STOP to Dana, START to Priya (same brokerage: Dana may text again by the latest word), then Twilio refuses
    Dana's opener with 21610 (the carrier still holds the STOP on Dana's number): Dana may not text the number
    again, Priya may, and only START to Dana herself lifts the block."""
    reply(client, post, "STOP", to=DANA)
    reply(client, post, "START", to=PRIYA)
    twilio_api["messages"].side_effect = carrier_blocks(DANA)
    missed(client, post, to=DANA)
    assert [(m.status, m.error_code) for m in rows_from(ctx, DANA, Purpose.opener)] == [("failed", 21610)]
    assert history(ctx, DANA) == [("opt_out", "keyword:STOP"), ("opt_out", "error:21610")], (
        "the carrier block is in the history even though the row was opted out already")
    requests = len(twilio_api["messages"].calls)
    dana_lead, dana = lead_of(ctx, DANA), bearer(ctx, ctx.broker_for(DANA).id)
    response = client.post(f"/api/leads/{dana_lead}/messages", json={"body": "Hi, this is Dana."}, headers=dana)
    assert response.status_code == 409, response.text
    assert response.json()["details"]["opt_out"].startswith(carrier_reason(""))
    assert len(twilio_api["messages"].calls) == requests, "nothing more was asked of Twilio from Dana's number"
    missed(client, post, to=PRIYA)
    assert [m.status for m in rows_from(ctx, PRIYA, Purpose.opener)] == ["sent"], "the block is Dana's number's only"

    twilio_api["messages"].side_effect = twilio_created  # START to Dana's number: the carrier lifts its block
    reply(client, post, "START", to=DANA)
    response = client.post(f"/api/leads/{dana_lead}/messages", json={"body": "Hi, this is Dana."}, headers=dana)
    assert response.status_code == 201, response.text
    assert history(ctx, DANA)[-1] == ("opt_in", "keyword:START")


@pytest.mark.parametrize("order", [("keyword:STOP", "error:21610"), ("error:21610", "keyword:STOP")],
                         ids=["STOP then carrier", "carrier then STOP"])
def test_keep_carrier_block_when_start_to_other_broker_whatever_came_first(order, ctx) -> None:
    dana, priya = ctx.broker_for(DANA).id, ctx.broker_for(PRIYA).id
    for number, source in enumerate(order):
        with session_scope(ctx.engine) as session:
            store.set_opt_out(session, broker_id=dana, phone=CALLER, opted_out=True, source=source,
                              message_sid=None if source.startswith("error:") else "SM" + str(number) * 32)
    with session_scope(ctx.engine) as session:
        store.set_opt_out(session, broker_id=priya, phone=CALLER, opted_out=False, source="keyword:START",
                          message_sid="SM" + "7" * 32)
    with Session(ctx.engine) as session:
        for scope in ("broker", "brokerage", "all"):
            state = store.opt_out_state(session, dana, CALLER, scope)
            assert state is not None
            assert (state.opted_out, state.source, state.broker_name) == (True, "error:21610", "Dana Whitfield"), scope
            assert optout_lock.describe(state).startswith(carrier_reason(f"{state.said_at:%Y-%m-%d})"))
            assert not store.is_opted_out(session, priya, CALLER, scope)
    assert history(ctx, DANA) == [("opt_out", source) for source in order]


def test_keep_carrier_block_of_row_from_before_its_column(ctx) -> None:
    """A row a 21610 opted out before `carrier_blocked_at` existed (its source says it) still blocks its number."""
    dana, priya = ctx.broker_for(DANA).id, ctx.broker_for(PRIYA).id
    with session_scope(ctx.engine) as session:
        session.add(OptOut(broker_id=dana, phone=CALLER, opted_out=True, source="error:21610"))
    with session_scope(ctx.engine) as session:
        store.set_opt_out(session, broker_id=priya, phone=CALLER, opted_out=False, source="keyword:START",
                          message_sid="SM" + "8" * 32)
    with Session(ctx.engine) as session:
        assert store.is_opted_out(session, dana, CALLER, "brokerage")
        assert not store.is_opted_out(session, priya, CALLER, "brokerage")


def test_read_row_from_before_scopes_as_broker_scope_in_audit(ctx) -> None:
    dana = ctx.broker_for(DANA).id
    with session_scope(ctx.engine) as session:
        session.add(OptOutEvent(broker_id=dana, phone=CALLER, action="opt_out", source="keyword:STOP"))
    rows = [r for r in iter_events(ctx.engine, since=datetime(2000, 1, 1, tzinfo=UTC))
            if r["event_type"] == "opt_out_event"]
    assert [r["reason"] for r in rows] == ["broker scope"]


# ---------------------------------------------------------------------------------------------------------
# One statement, and the brokerage rule spelled the same in SQL and in Python.


@pytest.mark.parametrize("scope", ["broker", "brokerage", "all"])
def test_answer_opt_out_in_one_statement(scope, ctx) -> None:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(ctx.engine, "before_cursor_execute", count)
    try:
        with Session(ctx.engine) as session:
            session.connection()
            statements.clear()
            store.is_opted_out(session, ctx.broker_for(PRIYA).id, CALLER, scope)
    finally:
        event.remove(ctx.engine, "before_cursor_execute", count)
    assert len(statements) == 1, statements


@pytest.mark.parametrize("relation", list(RELATIONS))
def test_judge_same_brokerage_alike_in_sql_and_python(relation, ctx) -> None:
    stop_to, sender = (ctx.broker_for(number) for number in RELATIONS[relation])
    with session_scope(ctx.engine) as session:
        store.set_opt_out(session, broker_id=stop_to.id, phone=CALLER, opted_out=True, source="keyword:STOP",
                          message_sid="SM" + "3" * 32)
    with Session(ctx.engine) as session:
        in_sql = store.is_opted_out(session, sender.id, CALLER, "brokerage")
    assert in_sql == same_brokerage(stop_to, sender) == (relation in STOPPED["brokerage"])


def test_store_brokerage_key_computed_in_python_on_every_broker_at_sync(ctx, brokers_file) -> None:
    """The key SQL compares is the Python one, stored by sync_brokers: also filled on rows from before it."""
    with session_scope(ctx.engine) as session:
        session.execute(update(Broker).values(brokerage_key=None))
    sync_brokers(ctx.engine, load_brokers(brokers_file))
    with Session(ctx.engine) as session:
        brokers = session.exec(select(Broker)).all()
    assert {b.twilio_number: b.brokerage_key for b in brokers} == {b.twilio_number: brokerage_key(b) for b in brokers}
    keys = {b.twilio_number: b.brokerage_key for b in brokers}
    assert keys[CLAIRE] == keys[ELODIE] == "name:soci\u00e9t\u00e9hypoth\u00e9cairedunord"
    assert keys[DANA] == keys[PRIYA] == "nmls:654321"


def test_name_broker_without_company_nmls_id_under_a_named_brokerage(ctx) -> None:
    assert brokerage_findings(list(ctx.brokers_by_number.values())) == [
        "Leo Park has no company_nmls_id but the brokerage name of Dana Whitfield (company NMLS ID 654321), Sam "
        "Ortiz (company NMLS ID 777777): under the opt-out scope 'brokerage' an opt-out to one does not stop the "
        "other's texts until they give the same company NMLS ID"]


@pytest.mark.parametrize(("name", "key"), [
    (" Summit\tHOME  loans\u00a0", "summithomeloans"),
    ("SOCI\u00c9T\u00c9 HYPOTH\u00c9CAIRE", "soci\u00e9t\u00e9hypoth\u00e9caire"),
    ("Socie\u0301te\u0301\u2009Hypothe\u0301caire", "soci\u00e9t\u00e9hypoth\u00e9caire"),  # decomposed, thin space
    ("FINANZ STRASSE", "finanzstrasse"),
    ("Finanz\u3000Stra\u00dfe", "finanzstrasse"),  # ideographic space, sharp s
])
def test_compare_brokerage_names_without_case_and_spaces(name, key) -> None:
    assert brokerage_name_key(name) == key


def test_load_shipped_opt_out_policy_as_brokerage_with_examples_that_agree() -> None:
    policy = load_opt_out_policy(POLICIES)
    assert policy.scope == "brokerage"
    assert policy.examples
    assert policy.example_findings() == []


def test_load_default_opt_out_policy_when_file_absent(tmp_path: Path) -> None:
    assert load_opt_out_policy(tmp_path) == OptOutPolicy(scope="brokerage")


@pytest.mark.parametrize(("change", "field"), [
    (("scope: brokerage", "scope: company"), "scope"),
    (("scope: brokerage", "scope: brokerage\nwho: everyone"), "who"),
    (("same_brokerage: false", "same_brokerage: true"), "examples"),
])
def test_refuse_bad_opt_out_policy_naming_field(tmp_path: Path, change: tuple[str, str], field: str) -> None:
    from service.sending.policy import load_sending_policy  # lazy: ~0.4 s to import

    shutil.copytree(POLICIES, tmp_path / "policies")
    path = tmp_path / "policies" / "sending" / "opt_out.yaml"
    path.write_text(path.read_text().replace(*change, 1))
    with pytest.raises(PolicyError) as caught:
        load_sending_policy(tmp_path / "policies")
    assert field in str(caught.value)


# ---------------------------------------------------------------------------------------------------------
# The lock covers the scope: a STOP committing for Dana is final for a send from Priya, across processes.


def _child(target: Any, ctx: Any, broker_id: int, phone: str) -> tuple[Any, Any, Any]:
    spawn = multiprocessing.get_context("spawn")
    held, release, seen = spawn.Event(), spawn.Event(), spawn.Value("i", -1)
    child = spawn.Process(target=target, args=(ctx.settings.database_url, broker_id, phone, held, release, seen))
    child.start()
    assert held.wait(60), "the child process took the lock"
    return child, release, seen


def test_send_from_other_broker_waits_for_stop_committing_and_sees_it(ctx) -> None:
    phone = "+14155559001"
    child, release, _seen = _child(change_in_child, ctx, ctx.broker_for(DANA).id, phone)
    result: list[bool] = []

    def send() -> None:
        with optout_lock.hold_for_send(ctx.engine, ctx.broker_for(PRIYA).id, phone, wait=30,
                                       scope="brokerage") as opted_out:
            result.append(opted_out)

    worker = threading.Thread(target=send)
    worker.start()
    time.sleep(0.5)
    assert result == [], "Priya's send waits for the STOP to Dana to commit"
    release.set()
    worker.join(30)
    child.join(30)
    assert result == [True], "and then sees it"


def test_hold_stop_until_other_brokers_send_in_flight_has_made_its_request(ctx) -> None:
    phone = "+14155559002"
    child, release, seen = _child(hold_for_send_in_child, ctx, ctx.broker_for(PRIYA).id, phone)
    committed = threading.Event()

    def opt_out() -> None:
        with session_scope(ctx.engine) as session:
            store.set_opt_out(session, broker_id=ctx.broker_for(DANA).id, phone=phone, opted_out=True, source="test")
        committed.set()

    worker = threading.Thread(target=opt_out)
    worker.start()
    assert not committed.wait(0.5), "the STOP to Dana waits for Priya's send in flight"
    release.set()
    worker.join(30)
    child.join(30)
    assert committed.is_set()
    assert seen.value == 0, "Priya's send saw the number still opted in"
