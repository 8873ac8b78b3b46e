"""What happens on each webhook: missed call -> opener; inbound text -> keyword, reply handling, alerts.

Handlers call these functions inside one transaction; each returns the TwiML to answer with and the work to
start once the transaction has committed (texts to send, inbound messages to process). Nothing here talks
to Twilio's API directly: texts are rows, sent by the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import update
from sqlmodel import Session, select

from service.db import insert_once
from service.errors import BadRequestError
from service.logs import log
from service.alerts import excerpt, queue_alert
from service.conversation import (
    forward_settled,
    handle_keyword,
    mark_opened,
    opt_out_in_plain_words,
    text_borrower,
)
from service.models import Broker, CallEvent, DeliveryEvent, InboundMessage, Lead, OutboundMessage, Purpose, utcnow
from service.phones import InvalidPhone, mask, to_e164
from service.privacy import was_forgotten
from service.sender import apply_error_to_lead
from service.store import get_or_create_lead, is_opted_out
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
# A voicemail shorter than this is a hang-up at the beep (Twilio trims silence), not a message.
MIN_VOICEMAIL_SECONDS = 2
# How much of a voicemail transcript an alert carries (Twilio's body limit is 1600 characters).
TRANSCRIPT_CHARS = 1000

# When a webhook is replayed from the spool (service.replay): the time Twilio delivered it.
replayed_at: ContextVar[datetime | None] = ContextVar("replayed_at", default=None)


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
    received = replayed_at.get()
    if received is not None and utcnow() - received > timedelta(seconds=ctx.settings.replay_opener_max_age_seconds):
        # Stored only once the database came back: an opener this late reads as spam, not as an answer to the
        # call. The broker gets the missed caller instead.
        when = received.astimezone(ZoneInfo(broker.timezone)).strftime("%a %I:%M %p").replace(" 0", " ")
        alerts = queue_alert(session, ctx, broker=broker, lead=lead, template_id="alert_missed_late",
                             values={"caller": caller, "when": when}, dedupe_key=f"late:{call_sid}")
        minutes = int((utcnow() - received).total_seconds() // 60)
        return f"no opener: stored {minutes} min late (database outage); broker alerted", _pending(alerts)
    previous = (lead.opener_at, lead.automated_count)
    if not _claim_opener(session, lead, timedelta(hours=ctx.settings.opener_cooldown_hours)):
        return "no opener: cooldown (an opener went out recently)", []
    booking = bool(broker.booking_url)
    lead.automated_count = 0  # a new missed call starts a new conversation
    queued = text_borrower(session, ctx, broker=broker, lead=lead, to=caller, purpose=Purpose.opener,
                           template_id="opener_booking" if booking else "opener", dedupe_key=f"opener:{call_sid}")
    msg = queued.msg if queued else None
    if msg is None or msg.status != "pending":
        # Not going out (known contact, breaker, cap, not textable, guard): the lead is not "opened", so its
        # replies reach the broker rather than a bot that never introduced itself, and no cooldown is used.
        lead.opener_at, lead.automated_count = previous
        session.add(lead)
        return f"no opener: {msg.last_error if msg else 'duplicate'}", []
    mark_opened(session, lead, booking=booking)
    return "opener queued", [msg.id] if msg.id else []


def _missed(session: Session, ctx: AppContext, broker: Broker, form: Mapping[str, str], event: CallEvent) -> Outcome:
    reason, ids = start_opener(session, ctx, broker=broker, caller_raw=form.get("From", ""), call_sid=event.call_sid)
    event.reason = f"{event.reason}; {reason}" if event.reason else reason
    session.add(event)
    log(logger, logging.INFO, "missed call", call_sid=event.call_sid, caller=mask(form.get("From")),
        outcome=reason, broker_id=broker.id)
    return Outcome(twiml=_missed_twiml(ctx, broker), send_ids=ids)


def _url(ctx: AppContext, path: str) -> str:
    return ctx.settings.public_url + path


def _missed_twiml(ctx: AppContext, broker: Broker) -> str:
    """The caller hears the missed-call message and can leave a voicemail (transcribed when the broker asks)."""
    transcribe = _url(ctx, "/twilio/voice/transcription") if broker.transcribe_voicemail else None
    return twiml.missed_call(broker_name=broker.name, voicemail_action=_url(ctx, "/twilio/voice/voicemail"),
                             transcribe_callback=transcribe)


def _dial_twiml(ctx: AppContext, broker: Broker, form: Mapping[str, str]) -> str:
    """Ring the broker's cell, showing the caller's number; the dial action says whether it was missed."""
    try:
        caller_id: str | None = to_e164(form.get("From", ""))
    except InvalidPhone:
        caller_id = None  # Twilio then shows the Twilio number
    return twiml.dial_broker(
        forward_to=broker.forward_to, caller_id=caller_id, ring_seconds=broker.ring_seconds,
        action=_url(ctx, "/twilio/voice/dial-status"),
        screen_url=_url(ctx, "/twilio/voice/screen") if broker.call_screening else None,
    )


def _is_forwarded(broker: Broker, form: Mapping[str, str]) -> bool:
    return bool((form.get("ForwardedFrom") or "").strip()) or broker.mode == "forward_on_no_answer"


def handle_voice(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    """An incoming call: ring the broker (forwarding) or treat it as already missed (carrier-forwarded)."""
    broker = broker_for(ctx, form)
    call_sid = _sid(_require(form, "CallSid")[0], ("CA",), "CallSid")
    if was_forgotten(session, call_sid):
        return _refuse_replay(call_sid, twiml.hangup())
    forwarded = _is_forwarded(broker, form)
    event = CallEvent(call_sid=call_sid, kind="voice", status="", broker_id=broker.id,
                      caller=form.get("From"), missed=forwarded or None,
                      reason="forwarded on no answer" if forwarded else None)
    fresh = insert_once(session, event)
    if forwarded:
        if not fresh:
            return Outcome(twiml=_missed_twiml(ctx, broker))
        return _missed(session, ctx, broker, form, event)
    return Outcome(twiml=_dial_twiml(ctx, broker, form))


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
            return Outcome(twiml=_missed_twiml(ctx, broker))
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
    """The <Record> action: the broker gets the caller, the length and the recording link, once per recording.

    A recording shorter than MIN_VOICEMAIL_SECONDS is a hang-up at the beep, not a message: it is recorded but
    not alerted (the missed call itself was handled already: opener, or an alert when none could go). A length
    Twilio does not give is alerted: a needless alert costs less than a lost message."""
    broker = broker_for(ctx, form)
    call_sid = _sid(_require(form, "CallSid")[0], ("CA",), "CallSid")
    duration = _int_field(form.get("RecordingDuration"))
    link = _recording_link(form.get("RecordingUrl"))
    hang_up = duration is not None and duration < MIN_VOICEMAIL_SECONDS
    event = CallEvent(
        call_sid=call_sid, kind="voicemail", status="recorded", broker_id=broker.id, caller=form.get("From"),
        duration=duration, reason=f"hang-up at the beep ({duration} s): no voicemail alert" if hang_up else link,
    )
    if not insert_once(session, event) or hang_up:
        return Outcome(twiml=twiml.hangup())
    caller, lead = _caller_and_lead(session, broker, form)
    recording = _sid_or_none(form.get("RecordingSid"), ("RE",))
    alerts = queue_alert(session, ctx, broker=broker, lead=lead, template_id="alert_voicemail",
                         values={"caller": caller, "duration": "?" if duration is None else str(duration),
                                 "recording_url": link or "(no link from Twilio)"},
                         dedupe_key=f"voicemail:{recording or call_sid}")
    log(logger, logging.INFO, "voicemail", call_sid=call_sid, duration=duration, broker_id=broker.id,
        caller=mask(form.get("From")), alerts=len(alerts))
    return Outcome(twiml=twiml.hangup(), send_ids=_pending(alerts))


def handle_transcription(session: Session, ctx: AppContext, form: Mapping[str, str]) -> Outcome:
    """Twilio's transcription of a voicemail (the <Record transcribeCallback>): the transcript goes to the broker,
    once per recording. It is the caller's own words: it goes into the alert and nowhere else (never a log)."""
    call_sid = _sid(_require(form, "CallSid")[0], ("CA",), "CallSid")
    broker = _transcription_broker(session, ctx, form, call_sid)
    status = (form.get("TranscriptionStatus") or "").strip().lower()[:20] or "unknown"
    recording = _sid_or_none(form.get("RecordingSid"), ("RE",))
    event = CallEvent(call_sid=call_sid, kind="transcription", status=status, broker_id=broker.id,
                      caller=form.get("From"), reason=recording)
    if not insert_once(session, event):
        return Outcome(twiml=twiml.empty_voice())
    text = (form.get("TranscriptionText") or "").strip()
    voicemail = session.exec(
        select(CallEvent).where(CallEvent.call_sid == call_sid, CallEvent.kind == "voicemail")).first()
    short = voicemail is not None and voicemail.duration is not None and voicemail.duration < MIN_VOICEMAIL_SECONDS
    if status != "completed" or not text or short:
        log(logger, logging.INFO, "voicemail transcript not sent", call_sid=call_sid, status=status,
            empty=not text, hang_up=short, broker_id=broker.id)
        return Outcome(twiml=twiml.empty_voice())
    caller, lead = _caller_and_lead(session, broker, form)
    alerts = queue_alert(session, ctx, broker=broker, lead=lead, template_id="alert_voicemail_transcript",
                         values={"caller": caller, "excerpt": excerpt(text, TRANSCRIPT_CHARS)},
                         dedupe_key=f"transcript:{recording or call_sid}")
    log(logger, logging.INFO, "voicemail transcript", call_sid=call_sid, chars=len(text), broker_id=broker.id)
    return Outcome(twiml=twiml.empty_voice(), send_ids=_pending(alerts))


def _pending(msgs: list[OutboundMessage]) -> list[int]:
    return [m.id for m in msgs if m.id is not None and m.status == "pending"]


def _transcription_broker(session: Session, ctx: AppContext, form: Mapping[str, str], call_sid: str) -> Broker:
    """The broker a transcription belongs to: by To, or (should Twilio leave To out) by the call it transcribes."""
    if (form.get("To") or "").strip():
        return broker_for(ctx, form)
    event = session.exec(
        select(CallEvent).where(CallEvent.call_sid == call_sid, CallEvent.broker_id.is_not(None))).first()
    broker = next((b for b in ctx.brokers_by_number.values() if event is not None and b.id == event.broker_id), None)
    if broker is None:
        raise BadRequestError("missing required field(s): To", status_code=422)
    return broker


def _caller_and_lead(session: Session, broker: Broker, form: Mapping[str, str]) -> tuple[str, Lead | None]:
    """How an alert names the caller, and their lead when there is one (never created here)."""
    try:
        caller = to_e164(form.get("From", ""))
    except InvalidPhone:
        return "a withheld number", None
    lead = session.exec(select(Lead).where(Lead.broker_id == broker.id, Lead.phone == caller)).first()
    return caller, lead


def _recording_link(raw: str | None) -> str | None:
    """Twilio's RecordingUrl as a link the broker can open (MP3), or None when it is not an https URL."""
    url = (raw or "").strip()
    if not url.startswith("https://") or any(c.isspace() for c in url) or len(url) > 300:  # noqa: PLR2004
        return None
    tail = url.rsplit("/", 1)[-1]
    return url if "." in tail else url + ".mp3"


def _sid_or_none(value: str | None, prefixes: tuple[str, ...]) -> str | None:
    text = (value or "").strip()
    return text if text.startswith(prefixes) and text.isalnum() and len(text) <= 64 else None  # noqa: PLR2004


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
    if status in {"failed", "undelivered"} and (code is not None or msg.audience == "broker"):
        ids = apply_error_to_lead(ctx, session, msg, code)
    return Outcome(twiml=twiml.empty_messaging(), send_ids=ids)


def offline_answer(ctx: AppContext, path: str, form: Mapping[str, str]) -> str:
    """The TwiML a webhook answers with when the database cannot be reached (its form is spooled and replayed
    later): what the handler would say, from what the process holds in memory. The form is checked as the
    handler checks it, so a bad request still gets its 4xx. KeyError for a path with no such answer."""
    voice = path.startswith("/twilio/voice")
    if path in {"/twilio/voice/screen", "/twilio/voice/screen/accept"}:
        (_call_sid,) = _require(form, "CallSid")
        if path == "/twilio/voice/screen":
            return twiml.screen_whisper(caller=form.get("From", ""),
                                        accept_url=_url(ctx, "/twilio/voice/screen/accept"))
        return twiml.empty_voice() if (form.get("Digits") or "").strip() else twiml.hangup()
    if path == "/twilio/sms/status":
        message_sid, status = _require(form, "MessageSid", "MessageStatus")
        _sid(message_sid, ("SM", "MM"), "MessageSid")
        if status.lower() not in MESSAGE_STATUSES:
            raise BadRequestError("unknown MessageStatus", status_code=422)
        return twiml.empty_messaging()
    if path == "/twilio/voice/transcription":
        _sid(_require(form, "CallSid")[0], ("CA",), "CallSid")
        return twiml.empty_voice()
    broker = broker_for(ctx, form)
    if path == "/twilio/sms":
        message_sid, _from = _require(form, "MessageSid", "From")
        _sid(message_sid, ("SM", "MM"), "MessageSid")
        return twiml.empty_messaging()
    if not voice:
        raise KeyError(path)
    _sid(_require(form, "CallSid")[0], ("CA",), "CallSid")
    if path == "/twilio/voice":
        return _missed_twiml(ctx, broker) if _is_forwarded(broker, form) else _dial_twiml(ctx, broker, form)
    if path == "/twilio/voice/dial-status":
        (status,) = _require(form, "DialCallStatus")
        status = status.lower()
        if status not in KNOWN_DIAL_STATUSES:
            raise BadRequestError("unknown DialCallStatus", status_code=422)
        bridged = (form.get("DialBridged") or "").strip().lower()
        # Without the database the screen acceptance cannot be read: with screening, an unbridged-or-unknown
        # leg is offered the voicemail (a caller who did talk to the broker has usually hung up by now).
        missed = status in MISSED_DIAL_STATUSES or bridged == "false" or (bridged != "true" and broker.call_screening)
        return _missed_twiml(ctx, broker) if missed else twiml.hangup()
    if path == "/twilio/voice/status":
        (status,) = _require(form, "CallStatus")
        if status.lower() not in CALL_STATUSES:
            raise BadRequestError("unknown CallStatus", status_code=422)
        return twiml.empty_voice()
    if path == "/twilio/voice/voicemail":
        return twiml.hangup()
    raise KeyError(path)
