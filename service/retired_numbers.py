"""Texts to the Twilio number of a broker no longer in the brokers file (a retired number): kept, and an opt-out
in them honoured.

The number may still reach textback for a while (it is still in the Twilio account, or a borrower answers an old
text). Such a text is stored against the retired broker's row (never lost), and a STOP in it, a carrier keyword or
plain words, is recorded as an opt-out to that broker: under the brokerage scope it then stops the brokerage's
other brokers too. Nothing is sent from a retired number and no bot answers: a START or HELP, or anything else,
is only stored (a person can read it in the audit export).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlmodel import Session, select

from service import optout_lock
from service.conversation import carrier_keyword
from service.db import insert_once
from service.logs import log
from service.models import Broker, InboundMessage, Lead, utcnow
from service.phones import mask
from service.replies.analysis import Keyword
from service.store import saved_id, set_opt_out
from service.twilio import twiml
from service.twilio.forms import InboundSmsForm
from service.twilio.outcome import Outcome

if TYPE_CHECKING:
    from service.context import AppContext

logger = logging.getLogger("textback.flow")


def retired_broker(session: Session, number: str) -> Broker | None:
    """The broker row, no longer active, that had this Twilio number (None when no broker ever had it)."""
    return session.exec(select(Broker).where(Broker.twilio_number == number, Broker.active == False)).first()  # noqa: E712


def text_to_retired_number(session: Session, ctx: AppContext, sms: InboundSmsForm) -> Outcome:
    """Store the text (once per MessageSid) against the retired broker and the caller's lead with them, if any;
    record an opt-out when it says STOP in any words."""
    broker_id = saved_id(sms.broker)
    lead = session.exec(select(Lead).where(Lead.broker_id == broker_id, Lead.phone == sms.sender)).first()
    inbound = InboundMessage(message_sid=sms.message_sid, broker_id=broker_id, lead_id=lead.id if lead else None,
                             from_phone=sms.sender, body=sms.body, opt_out_type=sms.opt_out_type,
                             num_media=sms.num_media, status="processed", processed_at=utcnow())
    if not insert_once(session, inbound):
        log(logger, logging.INFO, "duplicate inbound ignored", message_sid=sms.message_sid)
        return Outcome(twiml=twiml.empty_messaging())
    # The broker's or the team's own phone is never a borrower: its STOP opts nobody out.
    source = None if sms.sender in ctx.own_numbers else _opt_out_source(ctx, inbound)
    if source is not None:
        set_opt_out(session, broker_id=broker_id, phone=sms.sender, opted_out=True, source=source,
                    message_sid=sms.message_sid, wait_seconds=optout_lock.change_wait(ctx.settings),
                    scope=ctx.sending_policy.opt_out_scope)
    log(logger, logging.WARNING, "text to a retired broker number stored",
        message_sid=sms.message_sid, sender=mask(sms.sender), broker_id=broker_id, opted_out=source is not None)
    return Outcome(twiml=twiml.empty_messaging())


def _opt_out_source(ctx: AppContext, inbound: InboundMessage) -> str | None:
    """How the text opts out, under the source service.conversation records (a carrier keyword's, or plain
    words), or None when it does not (a START or HELP opts nobody in or out here)."""
    keyword = carrier_keyword(ctx, inbound)
    if keyword is not None:
        return keyword[1] if keyword[0] is Keyword.STOP else None
    if ctx.rules.analyze(inbound.body, inbound.received_at).keyword is Keyword.STOP:
        return "plain_words"
    return None
