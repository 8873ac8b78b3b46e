"""The Twilio webhooks: one thin handler per path (parse the form, refuse a replay, hand to the step that owns
it), the inbound text and delivery-status steps, and the answers given from memory when the database is down.

A handler runs inside one transaction and returns an Outcome (the TwiML, and the texts and inbound messages
to hand to the worker after commit). Nothing here talks to Twilio's API: texts are rows, sent by the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from sqlmodel import Session, select

from service import calls, click_to_call, events, new_caller
from service.conversation import forward_settled, handle_keyword, opt_out_in_plain_words
from service.db import insert_once
from service.errors import BadRequestError
from service.events import EventKind
from service.logs import log
from service.models import DeliveryEvent, InboundMessage, OutboundMessage
from service.phones import mask
from service.privacy import was_forgotten
from service.retired_numbers import retired_broker, text_to_retired_number
from service.send_history import opener_delivery
from service.sender import apply_error_to_lead
from service.store import lead_for, saved_id
from service.team_texts import answer_team_text
from service.twilio import twiml
from service.twilio.forms import (
    CALL_STATUSES,
    KNOWN_DIAL_STATUSES,
    MESSAGE_SID,
    BridgeCallStatusForm,
    BridgeForm,
    BridgeStatusForm,
    CallForm,
    CallStatusForm,
    DialStatusForm,
    InboundSmsForm,
    ScreenAcceptForm,
    ScreenForm,
    SmsStatusForm,
    TranscriptionForm,
    VoicemailForm,
    broker_for,
    call_sid,
    moves_forward,
    require,
    sid,
)
from service.twilio.outcome import Outcome, refuse_replay

if TYPE_CHECKING:
    from service.context import AppContext

# The logger name the webhook events have always been logged under (operators filter on it).
logger = logging.getLogger("textback.flow")

Handler = Callable[[Session, "AppContext", Mapping[str, str]], Outcome]


# -- voice ----------------------------------------------------------------------------------------------------

def handle_voice(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    """An incoming call: ring the broker (forwarding) or treat it as already missed (carrier-forwarded)."""
    call = CallForm.parse(form, ctx.broker_for)
    # A forwarded call is a missed call: its replay check is part of the one read that decides it.
    facts = new_caller.read(session, ctx, broker=call.broker, caller_raw=call.caller, call_sid=call.call_sid,
                            kind="voice", status="") if calls.is_forwarded(call.broker, call.forwarded_from) else None
    if facts.forgotten if facts is not None else was_forgotten(session, call.call_sid):
        return refuse_replay(call.call_sid, twiml.hangup())
    return calls.incoming_call(session, ctx, call, facts)


def handle_dial_status(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    dial = DialStatusForm.parse(form, ctx.broker_for)
    # A miss the form shows: its replay check is part of the one read that decides it.
    facts = new_caller.read(session, ctx, broker=dial.broker, caller_raw=dial.caller, call_sid=dial.call_sid,
                            kind="dial-status", status=dial.status) if calls.missed_by_status(dial) else None
    if facts.forgotten if facts is not None else was_forgotten(session, dial.call_sid):
        return refuse_replay(dial.call_sid, twiml.hangup())
    return calls.dial_ended(session, ctx, dial, facts)


def handle_screen(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    """The whisper on the broker's leg (the Dial <Number url>)."""
    return calls.screen(ctx, ScreenForm.parse(form))


def handle_screen_accept(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    """The broker pressed a key: a person, not a voicemail greeting, took the call; bridge it."""
    return calls.screen_accepted(session, ScreenAcceptForm.parse(form))


def handle_voicemail(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    """The <Record> action: the broker gets the caller, the length and the recording link, once per recording.

    A recording shorter than MIN_VOICEMAIL_SECONDS is a hang-up at the beep, not a message: it is recorded but
    not alerted (the missed call itself was handled already: opener, or an alert when none could go). A length
    Twilio does not give is alerted: a needless alert costs less than a lost message."""
    return calls.voicemail_recorded(session, ctx, VoicemailForm.parse(form, ctx.broker_for))


def handle_transcription(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    """Twilio's transcription of a voicemail (the <Record transcribeCallback>): the transcript goes to the broker,
    once per recording. It is the caller's own words: it goes into the alert and nowhere else (never a log)."""
    return calls.transcription_received(session, ctx, TranscriptionForm.parse(form, ctx.broker_for))


def handle_call_status(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    return calls.record_call_status(session, CallStatusForm.parse(form, ctx.broker_for))


def handle_bridge(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    """Click-to-call: the user answered textback's call; say who, then dial the borrower (?call=<id>)."""
    return click_to_call.bridge(session, ctx, BridgeForm.parse(form))


def handle_bridge_status(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    """Click-to-call: the dial to the borrower ended; a completed one is a bridged call (a human contact)."""
    return click_to_call.bridge_ended(session, ctx, BridgeStatusForm.parse(form))


def handle_bridge_call_status(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    """Click-to-call: the call to the user ended (how, when nothing else said so)."""
    return click_to_call.user_call_ended(session, BridgeCallStatusForm.parse(form))


# -- messaging --------------------------------------------------------------------------------------------

def handle_inbound_sms(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    """Store the inbound text first; honour carrier keywords at once; the rest is processed after commit."""
    # A number no longer in the brokers file still has its texts kept and its opt-outs honoured.
    sms = InboundSmsForm.parse(form, lambda number: ctx.broker_for(number) or retired_broker(session, number))
    broker, sender = sms.broker, sms.sender
    broker_id = saved_id(broker)
    if was_forgotten(session, sms.message_sid):
        return refuse_replay(sms.message_sid)
    if not broker.active:
        return text_to_retired_number(session, ctx, sms)
    if sender in ctx.own_numbers:
        # The broker or the team texting a textback number (e.g. answering an alert): kept, never treated as a
        # borrower (no lead, no keyword handling, no alert about their own text), and answered with the link
        # to the lead (service.team_texts).
        own = InboundMessage(message_sid=sms.message_sid, broker_id=broker_id, lead_id=None, from_phone=sender,
                             body=sms.body, status="processed", num_media=sms.num_media)
        if not insert_once(session, own):
            log(logger, logging.INFO, "duplicate inbound ignored", message_sid=sms.message_sid)
            return Outcome(twiml=twiml.empty_messaging())
        log(logger, logging.INFO, "text from a broker number stored", message_sid=sms.message_sid,
            broker_id=broker_id)
        answers = answer_team_text(session, ctx, broker=broker, sender=sender, message_sid=sms.message_sid)
        return Outcome(twiml=twiml.empty_messaging(), send_ids=answers)
    lead, created = lead_for(session, broker_id, sender)
    inbound = InboundMessage(message_sid=sms.message_sid, broker_id=broker_id, lead_id=lead.id, from_phone=sender,
                             body=sms.body, opt_out_type=sms.opt_out_type, num_media=sms.num_media)
    if not insert_once(session, inbound):
        log(logger, logging.INFO, "duplicate inbound ignored", message_sid=sms.message_sid)
        return Outcome(twiml=twiml.empty_messaging())
    events.record(session, broker=broker, lead=lead, kind=EventKind.reply, actor="borrower",
                  data={"message_id": inbound.id}, created=created)
    log(logger, logging.INFO, "inbound stored", message_sid=sms.message_sid, sender=mask(sender),
        broker_id=broker_id)
    state, worked = lead.state, lead.handoff_worked_at is not None  # the lead's, before the text is acted on
    ids = handle_keyword(session, ctx, broker=broker, lead=lead, inbound=inbound)
    if ids is None:
        # An opt-out in plain words is final before the answer too (texts already queued never leave).
        ids = opt_out_in_plain_words(session, ctx, broker=broker, lead=lead, inbound=inbound)
    if ids is None:
        outcome = Outcome(twiml=twiml.empty_messaging(), inbound_ids=[inbound.id] if inbound.id else [])
    elif inbound.status == "processed":
        # Settled here (a keyword, a plain-words opt-out with no reason for a person): the broker still hears
        # of it when a person is about to work this lead.
        ids += forward_settled(session, ctx, broker=broker, lead=lead, inbound=inbound, state=state,
                               worked=worked)
        outcome = Outcome(twiml=twiml.empty_messaging(), send_ids=ids)
    else:
        outcome = Outcome(twiml=twiml.empty_messaging(), send_ids=ids, inbound_ids=[inbound.id] if inbound.id else [])
    return outcome


def handle_sms_status(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    """Delivery status for one of our texts: recorded on the message; permanent errors marked on the lead."""
    delivery = SmsStatusForm.parse(form)
    message_sid, status, code = delivery.message_sid, delivery.status, delivery.error_code
    if not insert_once(session, DeliveryEvent(message_sid=message_sid, status=status, error_code=code)):
        return Outcome(twiml=twiml.empty_messaging())
    msg = session.exec(select(OutboundMessage).where(OutboundMessage.twilio_sid == message_sid)).first()
    if msg is None:
        log(logger, logging.INFO, "status for an unknown message", message_sid=message_sid, status=status)
        return Outcome(twiml=twiml.empty_messaging())
    if not moves_forward(msg.delivery_status, status):
        # Late: the text is further along already (recorded above as an event, for the audit trail).
        log(logger, logging.INFO, "late delivery status kept out", message_sid=message_sid, status=status,
            stored=msg.delivery_status)
        return Outcome(twiml=twiml.empty_messaging())
    msg.delivery_status = status
    if code is not None:
        msg.error_code = code
    session.add(msg)
    opener_delivery(ctx, session, msg, status, code)
    ids: list[int] = []
    if status in {"failed", "undelivered"} and (code is not None or msg.audience == "broker"):
        ids = apply_error_to_lead(ctx, session, msg, code)
    return Outcome(twiml=twiml.empty_messaging(), send_ids=ids)


# Every Twilio webhook: the path Twilio posts to, and the handler that answers it.
WEBHOOKS: dict[str, Handler] = {
    "/twilio/voice": handle_voice,
    "/twilio/voice/dial-status": handle_dial_status,
    "/twilio/voice/status": handle_call_status,
    "/twilio/voice/screen": handle_screen,
    "/twilio/voice/screen/accept": handle_screen_accept,
    "/twilio/voice/voicemail": handle_voicemail,
    "/twilio/voice/transcription": handle_transcription,
    "/twilio/voice/bridge": handle_bridge,
    "/twilio/voice/bridge-status": handle_bridge_status,
    "/twilio/voice/bridge-call-status": handle_bridge_call_status,
    "/twilio/sms": handle_inbound_sms,
    "/twilio/sms/status": handle_sms_status,
}


# -- without the database -----------------------------------------------------------------------------------

def offline_answer(ctx: AppContext, path: str, form: Mapping[str, str]) -> str:
    """The TwiML a webhook answers with when the database cannot be reached (its form is spooled and replayed
    later): what the handler would say, from what the process holds in memory. The form is checked as the
    handler checks it, so a bad request still gets its 4xx. KeyError for a path with no such answer."""
    # The checks run in the order they always have here, so a form bad in two ways gets the same answer.
    if path == "/twilio/voice/screen":
        return calls.screen_twiml(ctx, ScreenForm.parse(form).caller)
    if path == "/twilio/voice/screen/accept":
        require(form, "CallSid")
        return twiml.empty_voice() if (form.get("Digits") or "").strip() else twiml.hangup()
    if path == "/twilio/sms/status":
        SmsStatusForm.parse(form)
        return twiml.empty_messaging()
    if path == "/twilio/voice/transcription":
        call_sid(form)
        return twiml.empty_voice()
    if path == "/twilio/voice":
        return calls.incoming_call_twiml(ctx, CallForm.parse(form, ctx.broker_for))
    if path == "/twilio/voice/voicemail":
        VoicemailForm.parse(form, ctx.broker_for)
        return twiml.hangup()
    # Click-to-call (the user's own leg, `To` is their phone): the borrower's number is in the database, so the
    # user hears why nothing happens; the end of a call is still recorded when the spool is replayed.
    if path == "/twilio/voice/bridge":
        BridgeForm.parse(form)
        return twiml.say_and_hang_up(click_to_call.GONE)
    if path == "/twilio/voice/bridge-status":
        BridgeStatusForm.parse(form)
        return twiml.hangup()
    if path == "/twilio/voice/bridge-call-status":
        BridgeCallStatusForm.parse(form)
        return twiml.empty_voice()
    if path == "/twilio/sms":
        try:
            broker_for(ctx.broker_for, form)
        except BadRequestError as exc:
            # A number no broker holds now may be a retired broker's, whose texts are kept (an opt-out in them
            # recorded): only the database can tell, so the text is spooled and its replay decides.
            if exc.status_code != 404:
                raise
        message_sid, _from = require(form, "MessageSid", "From")
        sid(message_sid, MESSAGE_SID, "MessageSid")
        return twiml.empty_messaging()
    broker = broker_for(ctx.broker_for, form)
    if not path.startswith("/twilio/voice"):
        raise KeyError(path)
    call_sid(form)
    if path == "/twilio/voice/dial-status":
        (status,) = require(form, "DialCallStatus")
        status = status.lower()
        if status not in KNOWN_DIAL_STATUSES:
            raise BadRequestError("unknown DialCallStatus", status_code=422)
        bridged = (form.get("DialBridged") or "").strip().lower()
        missed = calls.missed_without_database(broker, status, bridged)
        return calls.missed_call_twiml(ctx, broker) if missed else twiml.hangup()
    if path == "/twilio/voice/status":
        (status,) = require(form, "CallStatus")
        if status.lower() not in CALL_STATUSES:
            raise BadRequestError("unknown CallStatus", status_code=422)
        return twiml.empty_voice()
    raise KeyError(path)
