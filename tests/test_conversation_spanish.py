"""Answering in the borrower's language, end to end through signed webhooks: a Spanish reply gets the rest of
the conversation in Spanish (the reviewed Spanish templates), a clearly English one switches back, the broker's
alert says so, and the choice is recorded in the lead's history, each Decision and text, and the audit."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import respx
from sqlalchemy import inspect, text
from sqlmodel import Session, col, select

from service.audit import export
from service.brokers import template_values
from service.db import create_schema, make_engine
from service.models import Decision, Lead, LeadEvent, OutboundMessage
from service.reply_language import language_of
from tests.api_helpers import signed_in
from tests.helpers import (
    BROKER,
    BROKER_ALERT,
    CALLER,
    call_params,
    rendered,
    sent_templates,
    sent_texts,
    sms_params,
)

DIAL = "/twilio/voice/dial-status"


def missed(client, post) -> None:
    assert post(client, DIAL, call_params("CA" + "1" * 32, DialCallStatus="no-answer")).status_code == 200


def reply(client, post, body: str) -> None:
    assert post(client, "/twilio/sms", sms_params(body)).status_code == 200


def to(route: respx.Route, phone: str) -> list[str]:
    return [t["Body"] for t in sent_texts(route) if t["To"] == phone]


def the_lead(ctx) -> Lead:
    with Session(ctx.engine) as session:
        return session.exec(select(Lead).where(Lead.phone == CALLER)).one()


def spanish(ctx, template_id: str, **values: str) -> str:
    """The reviewed Spanish wording of `template_id` for the test broker."""
    merged = {**template_values(ctx.broker_for(BROKER)), **values}
    return ctx.templates.render(template_id, merged, "es").text


def language_events(ctx) -> list[dict[str, object]]:
    with Session(ctx.engine) as session:
        rows = session.exec(select(LeadEvent).where(LeadEvent.kind == "language").order_by(col(LeadEvent.id)))
        return [dict(r.data) for r in rows]


def decisions(ctx) -> list[tuple[str, str | None]]:
    with Session(ctx.engine) as session:
        return [(d.action, d.language) for d in session.exec(select(Decision).order_by(col(Decision.id)))]


def test_ask_next_question_in_spanish_when_reply_is_spanish(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "Hola, quiero comprar una casa")
    texts = to(twilio_api["messages"], CALLER)
    assert sent_templates(ctx, twilio_api["messages"], CALLER) == ["opener", "ask_timeline"]
    assert "Reply STOP to opt out" in texts[0]  # the opener went before any reply: English
    assert texts[1] == spanish(ctx, "ask_timeline")
    lead = the_lead(ctx)
    assert (lead.language, lead.loan_type) == ("es", "purchase")
    assert language_events(ctx) == [{"language": "es", "previous": "en", "message_id": 1}]
    assert decisions(ctx) == [("ask:timeline", "es")]
    with Session(ctx.engine) as session:
        langs = [m.language for m in session.exec(select(OutboundMessage).order_by(col(OutboundMessage.id)))]
    assert langs == ["en", "es"]


def test_ask_next_question_in_english_when_reply_is_english(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "I want to buy a house")
    texts = to(twilio_api["messages"], CALLER)
    assert sent_templates(ctx, twilio_api["messages"], CALLER) == ["opener", "ask_timeline"]
    assert texts[1] == ctx.templates.render("ask_timeline", {}).text
    assert the_lead(ctx).language == "en"
    assert language_events(ctx) == []
    assert decisions(ctx) == [("ask:timeline", "en")]


def test_keep_spanish_when_reply_undecidable_and_switch_back_when_clearly_english(client, post, twilio_api,
                                                                                    ctx) -> None:
    missed(client, post)
    reply(client, post, "quiero refinanciar")
    reply(client, post, "ok")  # says nothing about the language: the lead stays Spanish
    assert the_lead(ctx).language == "es"
    templates = sent_templates(ctx, twilio_api["messages"], CALLER)
    assert to(twilio_api["messages"], CALLER)[1:] == [spanish(ctx, t) for t in templates[1:]]
    reply(client, post, "in about 2 months, we are not sure yet")
    last = sent_templates(ctx, twilio_api["messages"], CALLER)[-1]
    assert to(twilio_api["messages"], CALLER)[-1] == rendered(ctx, last)
    assert the_lead(ctx).language == "en"
    assert [e["language"] for e in language_events(ctx)] == ["es", "en"]


def test_confirm_opt_out_in_spanish_after_dejen_de_escribirme(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "dejen de escribirme")
    texts = to(twilio_api["messages"], CALLER)
    assert sent_templates(ctx, twilio_api["messages"], CALLER) == ["opener", "optout_confirm"]
    assert texts[1] == spanish(ctx, "optout_confirm")
    assert "START" in texts[1]
    assert decisions(ctx) == [("opt_out", "es")]


def test_answer_help_in_spanish_for_spanish_lead(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "quiero comprar una casa")
    reply(client, post, "HELP")
    texts = to(twilio_api["messages"], CALLER)
    assert texts[-1] == spanish(ctx, "help")
    assert "BAJA o STOP" in texts[-1]
    assert "NMLS" in texts[-1]


def test_say_spanish_in_broker_alert_and_ready_text(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "quiero comprar una casa")
    reply(client, post, "en unos 2 meses")
    reply(client, post, "no")
    templates = sent_templates(ctx, twilio_api["messages"], CALLER)
    assert templates[1:] == ["ask_timeline", "ask_applied_elsewhere", "ready"]
    assert to(twilio_api["messages"], CALLER)[-1] == spanish(ctx, "ready")
    [alert] = to(twilio_api["messages"], BROKER_ALERT)
    assert "(in Spanish)" in alert


def test_say_spanish_in_handoff_alert_only_for_spanish_lead(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "necesito hablar con alguien, llamenme por favor")
    [alert] = to(twilio_api["messages"], BROKER_ALERT)
    assert "(in Spanish)" in alert
    assert to(twilio_api["messages"], CALLER)[-1] == spanish(ctx, "handoff_ack")


def test_say_nothing_of_language_in_alert_for_english_lead(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "can someone call me please, I need to talk to a person")
    [alert] = to(twilio_api["messages"], BROKER_ALERT)
    assert "Spanish" not in alert


def test_show_language_in_audit_for_each_decision_and_text(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "quiero comprar una casa")
    out = io.StringIO()
    export(ctx.engine, out, since=datetime.now(UTC) - timedelta(days=1))
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["language"] for r in rows if r["event_type"] == "decision"] == ["es"]
    texts = [(r["template_id"], r["language"]) for r in rows if r["event_type"] == "outbound_text"]
    assert texts == [("opener", "en"), ("ask_timeline", "es")]


def test_show_language_in_api_lead_detail(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    reply(client, post, "quiero comprar una casa")
    lead = the_lead(ctx)
    body = client.get(f"/api/leads/{lead.id}", headers=signed_in(ctx)).json()
    assert body["language"] == "es"
    assert any(e["kind"] == "language" for e in body["events"])


def test_add_language_columns_when_database_is_older(database_url: str) -> None:
    engine = make_engine(database_url)
    create_schema(engine)
    with engine.begin() as conn:
        for table in ("lead", "decision", "outboundmessage"):
            conn.execute(text(f'ALTER TABLE "{table}" DROP COLUMN "language"'))
        conn.execute(text("DROP TABLE alembic_version"))  # a database from before migrations
    create_schema(engine)
    for table in ("lead", "decision", "outboundmessage"):
        assert "language" in {c["name"] for c in inspect(engine).get_columns(table)}
    assert language_of(Lead(broker_id=1, phone=CALLER, language=None)) == "en"
    engine.dispose()
