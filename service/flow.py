"""What happens on each webhook: missed call -> opener; inbound text -> keyword, reply handling, alerts.

Handlers call these functions inside one transaction; each returns the TwiML to answer with and the work to
start once the transaction has committed (texts to send, inbound messages to process). Nothing here talks
to Twilio's API directly: texts are rows, sent by the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlmodel import Session, select

from service.db import insert_once
from service.errors import BadRequestError
from service.logs import log
from service.models import Broker, CallEvent, DeliveryEvent, InboundMessage, Lead, OutboundMessage, utcnow
from service.outbox import is_opted_out, queue_alert, queue_text
from service.phones import InvalidPhone, mask, to_e164
from service.privacy import was_forgotten
from service.twilio import twiml

if TYPE_CHECKING:
    from service.context import AppContext

logger = logging.getLogger("textback.flow")

MISSED_DIAL_STATUSES = {"no-answer", "busy", "failed", "canceled"}
ANSWERED_DIAL_STATUSES = {"completed", "answered"}
KNOWN_DIAL_STATUSES = MISSED_DIAL_STATUSES | ANSWERED_DIAL_STATUSES
CALL_STATUSES = {"queued", "ringing", "in-progress", "completed", "busy", "failed", "no-answer", "canceled", "initiated"}
MESSAGE_STATUSES = {
    "accepted", "scheduled", "queued", "sending", "sent", "delivered", "undelivered", "failed", "read",
    "receiving", "received", "canceled", "partially_delivered",
}
TWILIO_OPT_OUT_TYPES = {"STOP", "START", "HELP"}
MAX_SMS_BODY = 1600


@dataclass
class Outcome:
    """The TwiML answer and the work to start after commit."""

    twiml: str
    send_ids: list[int] = field(default_factory=list)
    inbound_ids: list[int] = field(default_factory=list)


def _require(form: Mapping[str, str], *names: str) -> list[str]:
    missing = [n for n in names if not (form.get(n) or "").strip()]
    if missing:
        raise BadRequestError(f"missing required field(s): {', '.join(missing)}", status_code=422)
    return [form[n].strip() for n in names]


def _int_field(value: str | None, default: int | None = None) -> int | None:
    """A non-negative integer Twilio field (a duration, a count, an error code), or `default` when it is not
    one. ASCII digits only ('²'.isdigit() is true, int('²') fails) and at most 9 of them (fits every column)."""
    text = (value or "").strip()
    if not text or not text.isascii() or not text.isdigit() or len(text) > 9:  # noqa: PLR2004
        return default
    return int(text)


def _sid(value: str, prefixes: tuple[str, ...], name: str) -> str:
    if not value.startswith(prefixes) or not value.isalnum() or len(value) > 64:  # noqa: PLR2004
        raise BadRequestError(f"{name} is not a Twilio SID", status_code=422)
    return value


def broker_for(ctx: AppContext, form: Mapping[str, str]) -> Broker:
    (to_raw,) = _require(form, "To")
    try:
        to = to_e164(to_raw)
    except InvalidPhone:
        raise BadRequestError("To is not a phone number", status_code=422) from None
    broker = ctx.broker_for(to)
    if broker is None:
        raise BadRequestError("To is not a configured broker number", status_code=404)
    return broker


def get_or_create_lead(session: Session, broker_id: int, phone: str) -> Lead:
    lead = session.exec(select(Lead).where(Lead.broker_id == broker_id, Lead.phone == phone)).first()
    if lead is not None:
        return lead
    lead = Lead(broker_id=broker_id, phone=phone)
    if not insert_once(session, lead):
        lead = session.exec(select(Lead).where(Lead.broker_id == broker_id, Lead.phone == phone)).one()
    return lead


def _claim_opener(session: Session, lead: Lead, cooldown: timedelta) -> bool:
    """Atomically take the right to send this lead's opener (once per cooldown window, across processes)."""
    now = utcnow()
    result = session.execute(
        update(Lead)
        .where(Lead.id == lead.id)
        .where((Lead.opener_at.is_(None)) | (Lead.opener_at < now - cooldown))
        .values(opener_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:
        session.refresh(lead)
        return True
    return False


def start_opener(session: Session, ctx: AppContext, *, broker: Broker, caller_raw: str, call_sid: str) -> tuple[str, list[int]]:
    """A missed call: decide whether the caller gets the opener; returns (reason, ids to send)."""
    try:
        caller = to_e164(caller_raw)
    except InvalidPhone:
        return "no opener: withheld or invalid caller ID", []
    if caller in ctx.own_numbers or caller in broker.do_not_text:
        return "no opener: the caller is a broker or team number", []
    if is_opted_out(session, broker.id, caller):
        return "no opener: the caller opted out", []
    lead = get_or_create_lead(session, broker.id, caller)
    if lead.closed_reason == "wrong_number":
        return "no opener: the number said it was a wrong number", []
    previous = (lead.opener_at, lead.automated_count)
    if not _claim_opener(session, lead, timedelta(hours=ctx.settings.opener_cooldown_hours)):
        return "no opener: cooldown (an opener went out recently)", []
    booking = bool(broker.booking_url)
    lead.automated_count = 0  # a new missed call starts a new conversation
    msg = queue_text(session, ctx, broker=broker, lead=lead, to=caller, purpose="opener",
                     template_id="opener_booking" if booking else "opener", dedupe_key=f"opener:{call_sid}")
    if msg is None or msg.status != "pending":
        # Not going out (known contact, breaker, cap, not textable, guard): the lead is not "opened", so its
        # replies reach the broker rather than a bot that never introduced itself, and no cooldown is used.
        lead.opener_at, lead.automated_count = previous
        session.add(lead)
        return f"no opener: {msg.last_error if msg else 'duplicate'}", []
    lead.state, lead.closed_reason, lead.summary_alert_sent = "opened", None, False
    lead.handoff_reasons, lead.asked = [], []
    lead.last_question = None if booking else "loan_type"
    session.add(lead)
    return "opener queued", [msg.id] if msg.id else []


def _missed(session: Session, ctx: AppContext, broker: Broker, form: Mapping[str, str], event: CallEvent) -> Outcome:
    reason, ids = start_opener(session, ctx, broker=broker, caller_raw=form.get("From", ""), call_sid=event.call_sid)
    event.reason = f"{event.reason}; {reason}" if event.reason else reason
    session.add(event)
    log(logger, logging.INFO, "missed call", call_sid=event.call_sid, caller=mask(form.get("From")),
        outcome=reason, broker_id=broker.id)
    return Outcome(twiml=twiml.missed_call(broker_name=broker.name, voicemail_action=_url(ctx, "/twilio/voice/voicemail")),
                   send_ids=ids)


def _url(ctx: AppContext, path: str) -> str:
    return ctx.settings.public_url + path


def handle_voice(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    """An incoming call: ring the broker (forwarding) or treat it as already missed (carrier-forwarded)."""
    broker = broker_for(ctx, form)
    call_sid = _sid(_require(form, "CallSid")[0], ("CA",), "CallSid")
    if was_forgotten(session, call_sid):
        return _refuse_replay(call_sid, twiml.hangup())
    forwarded = bool((form.get("ForwardedFrom") or "").strip()) or broker.mode == "forward_on_no_answer"
    event = CallEvent(call_sid=call_sid, kind="voice", status="", broker_id=broker.id,
                      caller=form.get("From"), missed=forwarded or None,
                      reason="forwarded on no answer" if forwarded else None)
    fresh = insert_once(session, event)
    if forwarded:
        if not fresh:
            return Outcome(twiml=twiml.missed_call(broker_name=broker.name,
                                                   voicemail_action=_url(ctx, "/twilio/voice/voicemail")))
        return _missed(session, ctx, broker, form, event)
    caller = form.get("From", "")
    try:
        caller_id: str | None = to_e164(caller)
    except InvalidPhone:
        caller_id = None  # Twilio then shows the Twilio number
    return Outcome(twiml=twiml.dial_broker(
        forward_to=broker.forward_to, caller_id=caller_id, ring_seconds=broker.ring_seconds,
        action=_url(ctx, "/twilio/voice/dial-status"),
        screen_url=_url(ctx, "/twilio/voice/screen") if broker.call_screening else None,
    ))


def classify_dial(session: Session, broker: Broker, call_sid: str, form: Mapping[str, str]) -> tuple[bool, str]:
    """(missed, why) for a <Dial> action callback.

    `no-answer`, `busy`, `failed` and `canceled` are misses. A `completed` leg is a miss when Twilio says the
    caller was never bridged to it (`DialBridged=false`: the broker's voicemail took it, or, with call
    screening, nobody pressed a key). When Twilio does not say, call screening decides: only a leg whose
    whisper was accepted with a key press (recorded by /twilio/voice/screen/accept) was a person.
    """
    status = form["DialCallStatus"].strip().lower()
    if status in MISSED_DIAL_STATUSES:
        return True, f"dial {status}"
    bridged = (form.get("DialBridged") or "").strip().lower()
    if bridged == "false":
        return True, f"dial {status} but never bridged (voicemail or an unaccepted screened leg)"
    if bridged == "true":
        return False, f"answered (dial {status}, bridged, {form.get('DialCallDuration') or '?'} s)"
    if broker.call_screening:
        accepted = session.exec(
            select(CallEvent).where(CallEvent.call_sid == call_sid, CallEvent.kind == "screen-accept")
        ).first()
        if accepted is None:
            return True, f"dial {status} but the broker never accepted the screened call (voicemail or declined)"
        return False, "answered (screened and accepted)"
    return False, f"answered (dial {status}, {form.get('DialCallDuration') or '?'} s)"


def handle_dial_status(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    broker = broker_for(ctx, form)
    call_sid, status = _require(form, "CallSid", "DialCallStatus")
    call_sid = _sid(call_sid, ("CA",), "CallSid")
    if status.lower() not in KNOWN_DIAL_STATUSES:
        raise BadRequestError("unknown DialCallStatus", status_code=422)
    if was_forgotten(session, call_sid):
        return _refuse_replay(call_sid, twiml.hangup())
    missed, why = classify_dial(session, broker, call_sid, form)
    duration = form.get("DialCallDuration")
    event = CallEvent(call_sid=call_sid, kind="dial-status", status=status.lower(), broker_id=broker.id,
                      caller=form.get("From"), missed=missed, reason=why,
                      duration=_int_field(duration))
    if not insert_once(session, event):
        if missed:
            return Outcome(twiml=twiml.missed_call(broker_name=broker.name,
                                                   voicemail_action=_url(ctx, "/twilio/voice/voicemail")))
        return Outcome(twiml=twiml.hangup())
    if missed:
        return _missed(session, ctx, broker, form, event)
    log(logger, logging.INFO, "answered call", call_sid=call_sid, broker_id=broker.id)
    return Outcome(twiml=twiml.hangup())


def handle_screen(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:  # noqa: ARG001
    """The whisper on the broker's leg (the Dial <Number url>)."""
    (_call_sid,) = _require(form, "CallSid")
    caller = form.get("From", "")
    return Outcome(twiml=twiml.screen_whisper(caller=caller, accept_url=_url(ctx, "/twilio/voice/screen/accept")))


def handle_screen_accept(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:  # noqa: ARG001
    """The broker pressed a key: a person, not a voicemail greeting, took the call; bridge it."""
    (call_sid,) = _require(form, "CallSid")
    parent = (form.get("ParentCallSid") or call_sid).strip()
    if not (form.get("Digits") or "").strip():
        return Outcome(twiml=twiml.hangup())
    insert_once(session, CallEvent(call_sid=_sid(parent, ("CA",), "ParentCallSid"), kind="screen-accept",
                                          status="accepted"))
    return Outcome(twiml=twiml.empty_voice())


def handle_voicemail(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    broker = broker_for(ctx, form)
    call_sid = _sid(_require(form, "CallSid")[0], ("CA",), "CallSid")
    duration = form.get("RecordingDuration")
    insert_once(session, CallEvent(
        call_sid=call_sid, kind="voicemail", status="recorded", broker_id=broker.id, caller=form.get("From"),
        duration=_int_field(duration),
        reason=(form.get("RecordingUrl") or "")[:300] or None,
    ))
    return Outcome(twiml=twiml.hangup())


def handle_call_status(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    broker = broker_for(ctx, form)
    call_sid, status = _require(form, "CallSid", "CallStatus")
    call_sid = _sid(call_sid, ("CA",), "CallSid")
    if status.lower() not in CALL_STATUSES:
        raise BadRequestError("unknown CallStatus", status_code=422)
    duration = form.get("CallDuration")
    insert_once(session, CallEvent(
        call_sid=call_sid, kind="status", status=status.lower(), broker_id=broker.id, caller=form.get("From"),
        duration=_int_field(duration),
    ))
    return Outcome(twiml=twiml.empty_voice())


def handle_inbound_sms(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    """Store the inbound text first; honour carrier keywords at once; the rest is processed after commit."""
    broker = broker_for(ctx, form)
    message_sid, from_raw = _require(form, "MessageSid", "From")
    message_sid = _sid(message_sid, ("SM", "MM"), "MessageSid")
    try:
        sender = to_e164(from_raw)
    except InvalidPhone:
        raise BadRequestError("From is not a phone number", status_code=422) from None
    body = form.get("Body") or ""
    if len(body) > MAX_SMS_BODY:
        raise BadRequestError("Body is longer than any SMS", status_code=413)
    opt_out_type = (form.get("OptOutType") or "").strip().upper() or None
    if opt_out_type and opt_out_type not in TWILIO_OPT_OUT_TYPES:
        opt_out_type = None
    num_media = form.get("NumMedia") or "0"
    if was_forgotten(session, message_sid):
        return _refuse_replay(message_sid)
    if sender in ctx.own_numbers:
        # The broker or the team texting a textback number (e.g. answering an alert): kept, never treated as a
        # borrower (no lead, no keyword handling, no alert about their own text).
        own = InboundMessage(message_sid=message_sid, broker_id=broker.id, lead_id=None, from_phone=sender,
                             body=body, status="processed", num_media=_int_field(num_media, 0) or 0)
        insert_once(session, own)
        log(logger, logging.INFO, "text from a broker number stored", message_sid=message_sid, broker_id=broker.id)
        return Outcome(twiml=twiml.empty_messaging())
    lead = get_or_create_lead(session, broker.id, sender)
    inbound = InboundMessage(message_sid=message_sid, broker_id=broker.id, lead_id=lead.id, from_phone=sender,
                             body=body, opt_out_type=opt_out_type,
                             num_media=_int_field(num_media, 0) or 0)
    if not insert_once(session, inbound):
        log(logger, logging.INFO, "duplicate inbound ignored", message_sid=message_sid)
        return Outcome(twiml=twiml.empty_messaging())
    log(logger, logging.INFO, "inbound stored", message_sid=message_sid, sender=mask(sender), broker_id=broker.id)
    from service.conversation import (  # noqa: PLC0415 - avoids an import cycle
        forward_settled, handle_keyword, opt_out_in_plain_words,
    )

    before = {"state": lead.state, "worked": lead.handoff_worked_at is not None}
    ids = handle_keyword(session, ctx, broker=broker, lead=lead, inbound=inbound)
    if ids is None:
        # An opt-out in plain words is final before the answer too (texts already queued never leave).
        ids = opt_out_in_plain_words(session, ctx, broker=broker, lead=lead, inbound=inbound)
    if ids is None:
        return Outcome(twiml=twiml.empty_messaging(), inbound_ids=[inbound.id] if inbound.id else [])
    if inbound.status == "processed":
        # Settled here (a keyword, a plain-words opt-out with no reason for a person): the broker still hears
        # of it when a person is about to work this lead.
        ids += forward_settled(session, ctx, broker=broker, lead=lead, inbound=inbound, **before)
        return Outcome(twiml=twiml.empty_messaging(), send_ids=ids)
    return Outcome(twiml=twiml.empty_messaging(), send_ids=ids, inbound_ids=[inbound.id] if inbound.id else [])


def _refuse_replay(sid: str, answer: str | None = None) -> Outcome:
    """A webhook for a SID whose rows were forgotten or purged: a replay (Twilio never reuses a SID)."""
    log(logger, logging.WARNING, "replayed webhook refused: its SID was forgotten", sid=sid)
    return Outcome(twiml=answer if answer is not None else twiml.empty_messaging())


def handle_sms_status(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:  # noqa: ARG001
    """Delivery status for one of our texts: recorded on the message; permanent errors marked on the lead."""
    message_sid, status = _require(form, "MessageSid", "MessageStatus")
    message_sid = _sid(message_sid, ("SM", "MM"), "MessageSid")
    status = status.lower()
    if status not in MESSAGE_STATUSES:
        raise BadRequestError("unknown MessageStatus", status_code=422)
    code_raw = (form.get("ErrorCode") or "").strip()
    code = _int_field(code_raw)
    if not insert_once(session, DeliveryEvent(message_sid=message_sid, status=status, error_code=code)):
        return Outcome(twiml=twiml.empty_messaging())
    msg = session.exec(select(OutboundMessage).where(OutboundMessage.twilio_sid == message_sid)).first()
    if msg is None:
        log(logger, logging.INFO, "status for an unknown message", message_sid=message_sid, status=status)
        return Outcome(twiml=twiml.empty_messaging())
    msg.delivery_status = status
    if code is not None:
        msg.error_code = code
    session.add(msg)
    ids: list[int] = []
    if code is not None and status in {"failed", "undelivered"}:
        from service.outbox import apply_error_to_lead  # noqa: PLC0415

        ids = apply_error_to_lead(ctx, session, msg, code)
    return Outcome(twiml=twiml.empty_messaging(), send_ids=ids)


def alert_reply(session: Session, ctx: AppContext, *, broker: Broker, lead: Lead, text: str, template_id: str = "alert_reply") -> list[int]:
    from service.conversation import excerpt  # noqa: PLC0415

    msgs = queue_alert(session, ctx, broker=broker, lead=lead, template_id=template_id,
                       values={"caller": lead.phone, "excerpt": excerpt(text)})
    return [m.id for m in msgs if m.id is not None and m.status == "pending"]
