"""The missed-call webhook's cost in SQL statements (a count is deterministic; a time is not): a new caller's
missed call runs at most six statements in its transaction (service.new_caller), writes the same rows as the
ordinary path, and a duplicate delivery sends nothing more. The gate counts are read from indexes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlmodel import Session, col, select

from service import new_caller
from service.models import CallEvent, Lead, LeadCase, LeadEvent, OutboundMessage, utcnow
from service.sending.gates import count_columns, count_params
from tests.helpers import BROKER, CALLER, call_params, dial_params, rendered, sent_texts

DIAL = "/twilio/voice/dial-status"
VOICE = "/twilio/voice"
MISSED = {
    "dial-status no-answer": (DIAL, lambda sid, caller: dial_params("no-answer", sid, caller)),
    "forwarded voice": (VOICE, lambda sid, caller: call_params(sid, caller, ForwardedFrom="+14155550111")),
}
SID = "CA" + "1" * 32
OTHER_SID = "CA" + "2" * 32
OTHER_CALLER = "+14155550188"
BUDGET = 6


@contextmanager
def webhook_statements(ctx: Any) -> Iterator[list[str]]:
    """The statements of the first transaction that commits (the webhook's; the send after it is not counted),
    BEGIN and COMMIT left out (SAVEPOINT and RELEASE count)."""
    seen: list[str] = []
    done: list[bool] = []

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if not done and not sql.lstrip().upper().startswith("BEGIN"):
            seen.append(" ".join(sql.split()))

    def commit(_conn: Any) -> None:
        done.append(True)

    event.listen(ctx.engine, "before_cursor_execute", statement)
    event.listen(ctx.engine, "commit", commit)
    try:
        yield seen
    finally:
        event.remove(ctx.engine, "before_cursor_execute", statement)
        event.remove(ctx.engine, "commit", commit)
    assert done, "the webhook committed nothing"


def rows(ctx: Any, model: Any) -> list[Any]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(model).order_by(col(model.id))))


@pytest.mark.parametrize("webhook", list(MISSED))
def test_answer_missed_call_from_new_caller_in_six_statements(webhook, client, post, twilio_api, ctx) -> None:
    path, form = MISSED[webhook]
    with webhook_statements(ctx) as statements:
        response = post(client, path, form(SID, CALLER))
    assert response.status_code == 200, response.text
    assert "<Record" in response.text
    assert len(statements) <= BUDGET, "\n".join(statements)
    # Not vacuous: the opener went out once, and every row the ordinary path writes is there.
    texts = sent_texts(twilio_api["messages"])
    assert [(t["To"], t["From"], t["Body"]) for t in texts] == [(CALLER, BROKER, rendered(ctx, "opener"))]
    [lead] = rows(ctx, Lead)
    assert (lead.phone, lead.state, lead.automated_count, lead.last_question) == (CALLER, "opened", 1, "loan_type")
    assert lead.opener_at is not None
    assert lead.missed_call_at is not None
    [msg] = rows(ctx, OutboundMessage)
    assert (msg.purpose, msg.status, msg.lead_id, msg.dedupe_key) == ("opener", "sent", lead.id, f"opener:{SID}")
    assert [(e.kind, e.lead_id) for e in rows(ctx, LeadEvent)] == [("missed_call", lead.id), ("opener", lead.id)]
    [case] = rows(ctx, LeadCase)
    assert (case.lead_id, case.call_sid, case.opener_message_id) == (lead.id, SID, msg.id)
    [call] = rows(ctx, CallEvent)
    assert call.missed
    assert (call.reason or "").endswith("; opener queued")


@pytest.mark.parametrize("webhook", list(MISSED))
def test_send_nothing_more_on_duplicate_missed_call(webhook, client, post, twilio_api, ctx) -> None:
    path, form = MISSED[webhook]
    first = post(client, path, form(SID, CALLER))
    before = [len(rows(ctx, model)) for model in (Lead, OutboundMessage, LeadEvent, LeadCase, CallEvent)]
    with webhook_statements(ctx) as statements:
        again = post(client, path, form(SID, CALLER))
    assert again.status_code == 200
    assert again.text == first.text
    assert len(statements) == 1, "\n".join(statements)  # the one read says it is stored already
    assert len(sent_texts(twilio_api["messages"])) == 1
    assert [len(rows(ctx, model)) for model in (Lead, OutboundMessage, LeadEvent, LeadCase, CallEvent)] == before


# What differs between two callers' rows by nature (keys, numbers, times), left out of the comparison.
VARYING = {"id", "phone", "to_phone", "lead_id", "dedupe_key", "call_sid", "caller", "twilio_sid", "message_id",
           "opener_message_id", "verdicts", "guard_result"}


def _same_shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _same_shape(v) for k, v in value.items() if k not in VARYING}
    if hasattr(value, "tzinfo"):
        return "<time>" if value is not None else None
    return value


def _written(ctx: Any, lead_id: int) -> dict[str, Any]:
    with Session(ctx.engine) as session:
        lead = session.get(Lead, lead_id)
        assert lead is not None
        msgs = session.exec(select(OutboundMessage).where(OutboundMessage.lead_id == lead_id)).all()
        events = session.exec(select(LeadEvent).where(LeadEvent.lead_id == lead_id).order_by(col(LeadEvent.id))).all()
        cases = session.exec(select(LeadCase).where(LeadCase.lead_id == lead_id)).all()
        calls = session.exec(select(CallEvent).where(CallEvent.caller == lead.phone)).all()
        return {
            "lead": _same_shape(lead.model_dump()),
            "texts": [_same_shape(m.model_dump()) for m in msgs],
            "verdicts": [[{k: v for k, v in entry.items() if k != "at"} for entry in m.verdicts or []] for m in msgs],
            "events": [_same_shape(e.model_dump()) for e in events],
            "cases": [_same_shape(c.model_dump()) for c in cases],
            "calls": [_same_shape(c.model_dump()) for c in calls],
        }


@pytest.mark.parametrize("webhook", list(MISSED))
def test_write_same_rows_for_new_caller_as_ordinary_path(webhook, client, post, twilio_api, ctx, monkeypatch) -> None:
    path, form = MISSED[webhook]
    post(client, path, form(SID, CALLER))
    monkeypatch.setattr(new_caller, "open_opener", lambda *_args, **_kwargs: None)  # the ordinary path only
    post(client, path, form(OTHER_SID, OTHER_CALLER))
    with Session(ctx.engine) as session:
        fast, ordinary = (session.exec(select(Lead.id).where(Lead.phone == phone)).one()
                          for phone in (CALLER, OTHER_CALLER))
    assert len(sent_texts(twilio_api["messages"])) == 2
    assert _written(ctx, fast) == _written(ctx, ordinary)


def _plan(ctx: Any, statement: Any, params: dict[str, Any] | None = None) -> str:
    """The database's plan for `statement`, run as the service runs it with EXPLAIN put in front (PostgreSQL
    told to avoid a sequential scan wherever an index serves, so a small test table still shows whether one
    does)."""
    sqlite = ctx.engine.dialect.name == "sqlite"

    def explain(_conn: Any, _cursor: Any, sql: str, params: Any, *_args: Any) -> tuple[str, Any]:
        return ("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + sql, params

    with ctx.engine.connect() as conn:
        if not sqlite:
            conn.execute(text("SET LOCAL enable_seqscan = off"))
        event.listen(ctx.engine, "before_cursor_execute", explain, retval=True)
        try:
            found = conn.execute(statement, params or {}).all()
        finally:
            event.remove(ctx.engine, "before_cursor_execute", explain)
    return "\n".join(str(row[-1] if sqlite else row[0]) for row in found)


def test_count_gates_from_indexes_without_scanning_outbound(ctx) -> None:
    """Each of the four counts reads a range of an index bounded by time (or the one lead's rows): not the
    whole table, nor every text with a status, which grow with it."""
    broker = ctx.broker_for(BROKER)
    statement = select(*count_columns(opener=True, lead=True))
    plan = _plan(ctx, statement, count_params(ctx, broker_id=broker.id, lead_id=1,
                                              now=utcnow() - timedelta(seconds=1)))
    if ctx.engine.dialect.name == "sqlite":
        reads = [line for line in plan.splitlines() if "outboundmessage" in line]
        bounded = [line for line in reads if line.startswith("SEARCH") and ("created_at>" in line or "lead_id=" in line)]
    else:
        reads = [line for line in plan.splitlines() if "Index Cond" in line or "Scan on outboundmessage" in line]
        bounded = [line for line in reads if "Index Cond" in line and ("created_at >=" in line or "lead_id =" in line)]
    assert len(reads) == 4, plan
    assert bounded == reads, plan


def test_count_gates_from_index_entries_only_up_to_each_limit(ctx) -> None:
    """The breaker's platform count and the broker's daily count read index entries only (the index holds every
    column they test), and every count stops at its limit."""
    broker = ctx.broker_for(BROKER)
    plan = _plan(ctx, select(*count_columns(opener=True, lead=True)),
                 count_params(ctx, broker_id=broker.id, lead_id=1, now=utcnow() - timedelta(seconds=1)))
    if ctx.engine.dialect.name == "sqlite":
        covering = [line for line in plan.splitlines() if "USING COVERING INDEX" in line]
        assert any("ix_outboundmessage_purpose_counts" in line for line in covering), plan
        assert any("ix_outboundmessage_broker_counts" in line for line in covering), plan
        assert plan.count("CO-ROUTINE") == 4, plan  # each count over its limited subquery
    else:
        only = [line for line in plan.splitlines() if "Index Only Scan" in line]
        assert any("ix_outboundmessage_purpose_counts" in line for line in only), plan
        assert any("ix_outboundmessage_broker_counts" in line for line in only), plan
        assert plan.count("->  Limit") == 4, plan
