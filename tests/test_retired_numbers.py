"""A text to the number of a broker taken out of the brokers file: kept, and its opt-out honoured (the brokerage
scope then stops the brokerage's other brokers too)."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from service.broker_reload import reload_file
from service.models import Broker, InboundMessage, OptOut, OutboundMessage
from tests.api_helpers import missed, reply
from tests.helpers import BROKER, BROKER_CELL, BROKERS_YAML, sent_texts, sms_params

RETIRED = "+13105550100"  # Lena Park, of Dana's brokerage (the same company NMLS ID)
LENA = """  - twilio_number: "+13105550100"
    name: Lena Park
    brokerage: Summit Home Loans
    nmls_id: "778899"
    company_nmls_id: "654321"
    forward_to: "+13105550111"
    timezone: America/Los_Angeles
"""
BORROWER = "+14155550166"


@pytest.fixture
def retired(client, post, ctx, brokers_file, twilio_api, output_guard) -> int:
    """Lena, added then removed by `brokers reload` after she texted BORROWER an opener; her row's id."""
    brokers_file.write_text(BROKERS_YAML + LENA)
    reload_file(ctx.settings, ctx.engine, output_guard, ctx.templates, source="brokers reload")
    client.app.state.worker.run_once()
    missed(client, post, caller=BORROWER, to=RETIRED)
    assert [t["From"] for t in sent_texts(twilio_api["messages"]) if t["To"] == BORROWER] == [RETIRED]
    brokers_file.write_text(BROKERS_YAML)
    reload_file(ctx.settings, ctx.engine, output_guard, ctx.templates, source="brokers reload")
    client.app.state.worker.run_once()
    assert RETIRED not in ctx.brokers_by_number
    with Session(ctx.engine) as session:
        row = session.exec(select(Broker).where(Broker.twilio_number == RETIRED)).one()
    assert not row.active
    assert row.id is not None
    return row.id


@pytest.mark.parametrize("text", ["STOP", "stop texting me, we went with someone else"])
def test_record_opt_out_texted_to_retired_number_and_keep_brokerage_from_texting(
        client, post, ctx, twilio_api, retired, text) -> None:
    sent_before = len(sent_texts(twilio_api["messages"]))
    reply(client, post, text, caller=BORROWER, to=RETIRED)

    with Session(ctx.engine) as session:
        optout = session.exec(select(OptOut).where(OptOut.phone == BORROWER)).one()
        inbound = session.exec(select(InboundMessage).where(InboundMessage.from_phone == BORROWER)).one()
    assert (optout.broker_id, optout.opted_out) == (retired, True)
    assert (inbound.broker_id, inbound.body, inbound.status) == (retired, text, "processed")
    assert len(sent_texts(twilio_api["messages"])) == sent_before  # nothing sent from a retired number

    missed(client, post, caller=BORROWER, to=BROKER)  # Dana, of the same brokerage
    assert len(sent_texts(twilio_api["messages"])) == sent_before
    with Session(ctx.engine) as session:
        dana_texts = session.exec(select(OutboundMessage).where(OutboundMessage.to_phone == BORROWER,
                                                                OutboundMessage.from_phone == BROKER)).all()
    assert dana_texts == []  # the opener was not even queued: "the caller opted out"


def test_keep_other_text_to_retired_number_once_without_answer(client, post, ctx, twilio_api, retired) -> None:
    sent_before = len(sent_texts(twilio_api["messages"]))
    params = sms_params("is Lena still there?", sid="SM" + "6" * 32, sender=BORROWER, to=RETIRED)
    assert post(client, "/twilio/sms", params).status_code == 200
    assert post(client, "/twilio/sms", params).status_code == 200  # Twilio's retry: stored once

    with Session(ctx.engine) as session:
        stored = session.exec(select(InboundMessage).where(InboundMessage.from_phone == BORROWER)).all()
        assert session.exec(select(OptOut).where(OptOut.phone == BORROWER)).first() is None
    assert [(m.body, m.broker_id, m.lead_id is not None) for m in stored] == [("is Lena still there?", retired, True)]
    assert len(sent_texts(twilio_api["messages"])) == sent_before


def test_refuse_text_to_number_no_broker_ever_had(client, post, ctx) -> None:
    response = post(client, "/twilio/sms", sms_params("STOP", sender=BORROWER, to="+13105550999"))
    assert response.status_code == 404
    assert response.json()["error"] == "To is not a configured broker number"
    with Session(ctx.engine) as session:
        assert session.exec(select(OptOut).where(OptOut.phone == BORROWER)).first() is None


def test_team_phone_stop_to_retired_number_opts_nobody_out(client, post, ctx, retired) -> None:
    """The broker's or the team's own phone is never a borrower, on a retired number as on a live one."""
    reply(client, post, "STOP", caller=BROKER_CELL, to=RETIRED)
    with Session(ctx.engine) as session:
        assert session.exec(select(OptOut).where(OptOut.phone == BROKER_CELL)).first() is None
        assert session.exec(select(InboundMessage).where(InboundMessage.from_phone == BROKER_CELL)).one().body == "STOP"


def test_record_stop_to_retired_number_sent_to_fallback_url_once_replayed(client, post, ctx, retired) -> None:
    """Twilio's Fallback URL answers without the database: a text to a number no broker holds now is spooled
    (it may be a retired broker's), and its replay records the opt-out."""
    response = post(client, "/twilio/sms/fallback", sms_params("STOP", sid="SM" + "7" * 32, sender=BORROWER,
                                                                to=RETIRED, ErrorCode="11200"))
    assert response.status_code == 200
    client.app.state.worker.run_once()
    with Session(ctx.engine) as session:
        optout = session.exec(select(OptOut).where(OptOut.phone == BORROWER)).one()
    assert (optout.broker_id, optout.opted_out) == (retired, True)
