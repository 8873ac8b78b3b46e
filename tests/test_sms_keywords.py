"""Carrier keywords on /twilio/sms: opt-out, opt back in, help; Twilio's Advanced Opt-Out respected."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from service.models import InboundMessage, Lead, OptOut, OptOutEvent
from tests.helpers import (
    BROKER,
    BROKER2,
    BROKER_ALERT,
    BROKER_CELL,
    CALLER,
    call_params,
    rendered,
    sent_templates,
    sent_texts,
    sms_params,
)

DIAL = "/twilio/voice/dial-status"
STOP_WORDS = ["STOP", "STOPALL", "STOP ALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"]


def missed(client, post, index: int = 1, to: str = BROKER) -> None:
    assert post(client, DIAL, call_params(f"CA{index:032d}", to=to, DialCallStatus="no-answer")).status_code == 200


def bodies(route) -> list[str]:
    return [t["Body"] for t in sent_texts(route) if t["To"] == CALLER]


def opted_out(ctx, broker_id: int = 1) -> bool:
    with Session(ctx.engine) as session:
        row = session.exec(select(OptOut).where(OptOut.phone == CALLER, OptOut.broker_id == broker_id)).first()
    return bool(row and row.opted_out)


@pytest.mark.parametrize("word", STOP_WORDS)
@pytest.mark.parametrize("style", ["upper", "lower", "title", "punctuated"])
def test_opt_out_on_carrier_keyword(client, post, twilio_api, ctx, word, style) -> None:
    text = {"upper": word, "lower": word.lower(), "title": word.title(), "punctuated": f"  {word.lower()}!! "}[style]
    missed(client, post)
    assert post(client, "/twilio/sms", sms_params(text)).status_code == 200
    assert opted_out(ctx)
    texts = bodies(twilio_api["messages"])
    assert len(texts) == 2
    assert texts[1] == rendered(ctx, "optout_confirm")
    missed(client, post, index=2)  # an opted-out caller calls again, after the cooldown too
    assert len(bodies(twilio_api["messages"])) == 2


def test_send_one_confirmation_for_repeated_stop(client, post, twilio_api, ctx) -> None:
    for _ in range(3):
        post(client, "/twilio/sms", sms_params("STOP"))
    assert len(bodies(twilio_api["messages"])) == 1
    with Session(ctx.engine) as session:
        assert len(session.exec(select(OptOutEvent)).all()) == 3  # every request is in the history


def test_skip_confirmation_when_twilio_advanced_opt_out_handled_it(client, post, twilio_api, ctx) -> None:
    post(client, "/twilio/sms", sms_params("stop", OptOutType="STOP"))
    assert opted_out(ctx)
    assert bodies(twilio_api["messages"]) == []
    with Session(ctx.engine) as session:
        event = session.exec(select(OptOutEvent)).one()
    assert event.source == "twilio:STOP"


def test_opt_out_only_for_that_broker(client, post, twilio_api, ctx) -> None:
    post(client, "/twilio/sms", sms_params("STOP"))
    missed(client, post, index=2, to=BROKER2)
    assert [t["From"] for t in sent_texts(twilio_api["messages"])] == [BROKER, BROKER2]


@pytest.mark.parametrize("word", ["START", "unstop", "Start."])
def test_opt_back_in_on_start(client, post, twilio_api, ctx, word) -> None:
    post(client, "/twilio/sms", sms_params("STOP"))
    post(client, "/twilio/sms", sms_params(word))
    assert not opted_out(ctx)
    texts = bodies(twilio_api["messages"])
    assert texts[-1] == rendered(ctx, "optin_confirm")
    missed(client, post, index=3)
    assert bodies(twilio_api["messages"])[-1] == rendered(ctx, "opener")


def test_skip_start_confirmation_when_twilio_handled_it(client, post, twilio_api, ctx) -> None:
    post(client, "/twilio/sms", sms_params("STOP", OptOutType="STOP"))
    post(client, "/twilio/sms", sms_params("START", OptOutType="START"))
    assert not opted_out(ctx)
    assert bodies(twilio_api["messages"]) == []


@pytest.mark.parametrize("word", ["HELP", "help", "Info", "INFO?"])
def test_send_help_template_on_help(client, post, twilio_api, ctx, word) -> None:
    post(client, "/twilio/sms", sms_params(word))
    [text] = bodies(twilio_api["messages"])
    assert "Summit Home Loans" in text
    assert "123456" in text
    assert text == rendered(ctx, "help")


def test_send_nothing_but_confirmation_after_opt_out(client, post, twilio_api, ctx) -> None:
    missed(client, post)
    post(client, "/twilio/sms", sms_params("STOP"))
    post(client, "/twilio/sms", sms_params("HELP"))
    post(client, "/twilio/sms", sms_params("we want to buy a house in march"))
    texts = bodies(twilio_api["messages"])
    assert len(texts) == 2  # the opener and the one confirmation
    # The broker still sees what the borrower wrote.
    assert any("buy a house" in t["Body"] for t in sent_texts(twilio_api["messages"]) if t["To"] == BROKER_ALERT)


@pytest.mark.parametrize("text", ["end of the month works", "can't stop thinking about this house", "stop by the office tmrw?"])
def test_keep_subscription_for_look_alike_words(client, post, twilio_api, ctx, text) -> None:
    missed(client, post)
    post(client, "/twilio/sms", sms_params(text))
    assert not opted_out(ctx)


def test_store_inbound_before_processing(client, post, twilio_api, ctx) -> None:
    post(client, "/twilio/sms", sms_params("STOP", sid="SM" + "7" * 32))
    with Session(ctx.engine) as session:
        row = session.exec(select(InboundMessage)).one()
    assert row.message_sid == "SM" + "7" * 32
    assert row.body == "STOP"
    assert row.status == "processed"


def test_store_text_from_broker_number_without_a_lead(client, post, twilio_api, ctx) -> None:
    """Kept, never treated as a borrower's (no lead, no keyword); answered once with the console's link."""
    for text in ("ok calling him now", "STOP"):
        assert post(client, "/twilio/sms", sms_params(text, sender=BROKER_CELL)).status_code == 200
    assert [t["To"] for t in sent_texts(twilio_api["messages"])] == [BROKER_CELL]
    assert sent_templates(ctx, twilio_api["messages"], BROKER_CELL) == ["alert_reply_hint_console"]
    with Session(ctx.engine) as session:
        assert session.exec(select(Lead)).all() == []
        assert len(session.exec(select(InboundMessage)).all()) == 2
