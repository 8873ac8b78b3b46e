"""Calls: a missed call -> the opener text; dial classification, call screening and voicemail alerts.

Each function takes a parsed form (service.twilio.forms) inside the webhook's transaction and returns the
Outcome: the TwiML the caller hears and the texts to send once the transaction commits. The opener is claimed
atomically (one per cooldown window, across processes) and queued through the outbox like every text.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import update
from sqlmodel import Session, col, select

from service import cases, events, hours, new_caller, next_step
from service.access import Principal
from service.alerts import excerpt, pending_ids, queue_alert
from service.conversation import mark_opened, text_borrower
from service.db import insert_once
from service.errors import BadRequestError
from service.events import EventKind
from service.logs import log
from service.models import Broker, CallEvent, Lead, Purpose, utcnow
from service.optout_lock import describe
from service.phones import InvalidPhone, mask, to_e164
from service.store import lead_for, opt_out_state, saved_id
from service.takeover import human_acted, locked_lead
from service.twilio import twiml
from service.twilio.forms import (
    MISSED_DIAL_STATUSES,
    CallForm,
    CallStatusForm,
    DialStatusForm,
    ScreenAcceptForm,
    ScreenForm,
    TranscriptionForm,
    VoicemailForm,
)
from service.twilio.outcome import Outcome

if TYPE_CHECKING:
    from service.context import AppContext

# The logger name the call events have always been logged under (operators filter on it).
logger = logging.getLogger("textback.flow")

# A voicemail shorter than this is a hang-up at the beep (Twilio trims silence), not a message.
MIN_VOICEMAIL_SECONDS = 2
# How much of a voicemail transcript an alert carries (Twilio's body limit is 1600 characters).
TRANSCRIPT_CHARS = 1000

# When a webhook is replayed from the spool (service.replay): the time Twilio delivered it.
replayed_at: ContextVar[datetime | None] = ContextVar("replayed_at", default=None)


# -- the opener ---------------------------------------------------------------------------------------------

def _claim_opener(session: Session, lead: Lead, cooldown: timedelta) -> bool:
    """Atomically take the right to send this lead's opener (once per cooldown window, across processes)."""
    now = utcnow()
    result = session.exec(
        update(Lead)
        .where(col(Lead.id) == lead.id)
        .where(col(Lead.opener_at).is_(None) | (col(Lead.opener_at) < now - cooldown))
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
    state = opt_out_state(session, saved_id(broker), caller, ctx.sending_policy.opt_out_scope)
    if state is not None and state.opted_out:
        return f"no opener: the caller {describe(state)}", []
    lead, created = lead_for(session, saved_id(broker), caller)
    lead.missed_call_at = utcnow()
    session.add(lead)
    in_hours = None if broker.hours is None else hours.is_open(broker, lead.missed_call_at)
    events.record(session, broker=broker, lead=lead, kind=EventKind.missed_call, actor="borrower",
                  data={"call_sid": call_sid, "in_hours": in_hours}, created=created)
    if lead.closed_reason == "wrong_number":
        return "no opener: the number said it was a wrong number", []
    if lead.closed_reason == "not_interested":
        # They were told "we won't text you again" (closing_not_interested): calling again may mean they changed
        # their mind, which a person finds out by calling, not the bot by texting.
        alerts = queue_alert(session, ctx, broker=broker, lead=lead, template_id="alert_called_again_closed",
                             values={"caller": caller}, dedupe_key=f"again:{call_sid}")
        return "no opener: the caller said not interested (promised no more texts); broker alerted", pending_ids(alerts)
    if lead.human_at is not None and lead.missed_call_at - lead.human_at < timedelta(
            hours=ctx.settings.opener_cooldown_hours):
        # A person is working this lead: the caller calling again goes to them, not to the bot.
        alerts = queue_alert(session, ctx, broker=broker, lead=lead, template_id="alert_called_again",
                             values={"caller": caller}, dedupe_key=f"again:{call_sid}")
        return "no opener: a person is working this lead; they were alerted", pending_ids(alerts)
    received = replayed_at.get()
    if received is not None and utcnow() - received > timedelta(seconds=ctx.settings.replay_opener_max_age_seconds):
        # Stored only once the database came back: an opener this late reads as spam, not as an answer to the
        # call. The broker gets the missed caller instead.
        when = received.astimezone(ZoneInfo(broker.timezone)).strftime("%a %I:%M %p").replace(" 0", " ")
        alerts = queue_alert(session, ctx, broker=broker, lead=lead, template_id="alert_missed_late",
                             values={"caller": caller, "when": when}, dedupe_key=f"late:{call_sid}")
        minutes = int((utcnow() - received).total_seconds() // 60)
        return f"no opener: stored {minutes} min late (database outage); broker alerted", pending_ids(alerts)
    previous = (lead.opener_at, lead.automated_count)
    if not _claim_opener(session, lead, timedelta(hours=ctx.settings.opener_cooldown_hours)):
        return "no opener: cooldown (an opener went out recently)", []
    booking = bool(broker.booking_url)
    lead.automated_count = 0  # a new missed call starts a new conversation
    # Today's opener, or the one that says when a person will call (with a client, out of hours).
    template_id, values = next_step.choose(session, ctx, broker=broker, kind="opener", to=caller,
                                           purpose=Purpose.opener, booking=booking)
    queued = text_borrower(session, ctx, broker=broker, lead=lead, to=caller, purpose=Purpose.opener,
                           template_id=template_id, values=values, dedupe_key=f"opener:{call_sid}")
    msg = queued.msg if queued else None
    if msg is None or msg.status != "pending":
        # Not going out (known contact, breaker, cap, not textable, guard): the lead is not "opened", so its
        # replies reach the broker rather than a bot that never introduced itself, and no cooldown is used.
        lead.opener_at, lead.automated_count = previous
        session.add(lead)
        return f"no opener: {msg.last_error if msg else 'duplicate'}", []
    mark_opened(session, lead, booking=booking)
    events.record(session, broker=broker, lead=lead, kind=EventKind.opener,
                  data={"message_id": msg.id, "template_id": msg.template_id})
    return "opener queued", [msg.id] if msg.id else []


def _missed(session: Session, ctx: AppContext, broker: Broker, caller: str | None, event: CallEvent) -> Outcome:
    reason, ids = start_opener(session, ctx, broker=broker, caller_raw=caller or "", call_sid=event.call_sid)
    event.reason = f"{event.reason}; {reason}" if event.reason else reason
    session.add(event)
    log(logger, logging.INFO, "missed call", call_sid=event.call_sid, caller=mask(caller),
        outcome=reason, broker_id=broker.id)
    return Outcome(twiml=missed_call_twiml(ctx, broker), send_ids=ids)


def _missed_known(session: Session, ctx: AppContext, broker: Broker, caller: str | None, event: CallEvent,
                  facts: new_caller.Facts | None) -> Outcome | None:
    """A missed call decided from `facts` (service.new_caller's one read): a duplicate delivery, or a new
    caller's opener in a handful of statements. None: the ordinary path (insert the event, start_opener)."""
    if facts is None:
        return None
    if facts.stored:
        return Outcome(twiml=missed_call_twiml(ctx, broker))
    if replayed_at.get() is not None:
        return None  # from the spool: start_opener judges how late it is
    ids = new_caller.open_opener(session, ctx, broker=broker, event=event, facts=facts)
    if ids is None:
        return None
    log(logger, logging.INFO, "missed call", call_sid=event.call_sid, caller=mask(caller),
        outcome=new_caller.REASON, broker_id=broker.id)
    return Outcome(twiml=missed_call_twiml(ctx, broker), send_ids=ids)


# -- what the caller hears ----------------------------------------------------------------------------------

def _url(ctx: AppContext, path: str) -> str:
    return ctx.settings.public_url + path


def missed_call_twiml(ctx: AppContext, broker: Broker) -> str:
    """The caller hears the missed-call message and can leave a voicemail (transcribed when the broker asks)."""
    transcribe = _url(ctx, "/twilio/voice/transcription") if broker.transcribe_voicemail else None
    return twiml.missed_call(broker_name=broker.name, voicemail_action=_url(ctx, "/twilio/voice/voicemail"),
                             transcribe_callback=transcribe)


def dial_twiml(ctx: AppContext, broker: Broker, caller: str | None) -> str:
    """Ring the broker's cell, showing the caller's number; the dial action says whether it was missed."""
    try:
        caller_id: str | None = to_e164(caller or "")
    except InvalidPhone:
        caller_id = None  # Twilio then shows the Twilio number
    return twiml.dial_broker(
        forward_to=broker.forward_to, caller_id=caller_id, ring_seconds=broker.ring_seconds,
        action=_url(ctx, "/twilio/voice/dial-status"),
        screen_url=_url(ctx, "/twilio/voice/screen") if broker.call_screening else None,
    )


def screen_twiml(ctx: AppContext, caller: str) -> str:
    """The whisper on the broker's leg: who is calling, and press a key to take it."""
    return twiml.screen_whisper(caller=caller, accept_url=_url(ctx, "/twilio/voice/screen/accept"))


def is_forwarded(broker: Broker, forwarded_from: bool) -> bool:
    """The call reached us only because the broker's phone did not answer: it is already missed."""
    return forwarded_from or broker.mode == "forward_on_no_answer"


def incoming_call_twiml(ctx: AppContext, call: CallForm) -> str:
    """What an incoming call is answered with: the missed-call message when it was forwarded, else the dial."""
    if is_forwarded(call.broker, call.forwarded_from):
        return missed_call_twiml(ctx, call.broker)
    return dial_twiml(ctx, call.broker, call.caller)


# -- the calls ----------------------------------------------------------------------------------------------

def incoming_call(session: Session, ctx: AppContext, call: CallForm, facts: new_caller.Facts | None = None) -> Outcome:
    """Ring the broker (forwarding) or treat the call as already missed (carrier-forwarded). `facts`: what
    service.new_caller read for a forwarded call (the handler checked it for a replay)."""
    broker = call.broker
    forwarded = is_forwarded(broker, call.forwarded_from)
    event = CallEvent(call_sid=call.call_sid, kind="voice", status="", broker_id=broker.id,
                      caller=call.caller, missed=forwarded or None,
                      reason="forwarded on no answer" if forwarded else None)
    known = _missed_known(session, ctx, broker, call.caller, event, facts) if forwarded else None
    if known is not None:
        return known
    fresh = insert_once(session, event)
    if forwarded:
        if not fresh:
            return Outcome(twiml=missed_call_twiml(ctx, broker))
        return _missed(session, ctx, broker, call.caller, event)
    return Outcome(twiml=dial_twiml(ctx, broker, call.caller))


def classify_dial(session: Session, dial: DialStatusForm) -> tuple[bool, str]:
    """(missed, why) for a <Dial> action callback.

    `no-answer`, `busy`, `failed` and `canceled` are misses. A `completed` leg is a miss when Twilio says the
    caller was never bridged to it (`DialBridged=false`: the broker's voicemail took it, or, with call
    screening, nobody pressed a key). When Twilio does not say, call screening decides: only a leg whose
    whisper was accepted with a key press (recorded by /twilio/voice/screen/accept) was a person.
    """
    status = dial.status
    if status in MISSED_DIAL_STATUSES:
        return True, f"dial {status}"
    if dial.bridged == "false":
        return True, f"dial {status} but never bridged (voicemail or an unaccepted screened leg)"
    if dial.bridged == "true":
        return False, f"answered (dial {status}, bridged, {dial.duration_text or '?'} s)"
    if dial.broker.call_screening:
        accepted = session.exec(
            select(CallEvent).where(CallEvent.call_sid == dial.call_sid, CallEvent.kind == "screen-accept")
        ).first()
        if accepted is None:
            return True, f"dial {status} but the broker never accepted the screened call (voicemail or declined)"
        return False, "answered (screened and accepted)"
    return False, f"answered (dial {status}, {dial.duration_text or '?'} s)"


def missed_without_database(broker: Broker, status: str, bridged: str) -> bool:
    """classify_dial from memory only (the database is down): the screen acceptance cannot be read, so with
    screening an unbridged-or-unknown leg is offered the voicemail (a caller who did talk to the broker has
    usually hung up by now)."""
    return status in MISSED_DIAL_STATUSES or bridged == "false" or (bridged != "true" and broker.call_screening)


def missed_by_status(dial: DialStatusForm) -> bool:
    """classify_dial's misses that the form alone shows (no read)."""
    return dial.status in MISSED_DIAL_STATUSES or dial.bridged == "false"


def dial_ended(session: Session, ctx: AppContext, dial: DialStatusForm, facts: new_caller.Facts | None = None) -> Outcome:
    """The broker's leg ended: a miss gets the missed-call message and the opener; an answer hangs up.
    `facts`: what service.new_caller read for a miss the form shows (the handler checked it for a replay)."""
    broker = dial.broker
    missed, why = classify_dial(session, dial)
    event = CallEvent(call_sid=dial.call_sid, kind="dial-status", status=dial.status, broker_id=broker.id,
                      caller=dial.caller, missed=missed, reason=why, duration=dial.duration)
    known = _missed_known(session, ctx, broker, dial.caller, event, facts) if missed else None
    if known is not None:
        return known
    if not insert_once(session, event):
        if missed:
            return Outcome(twiml=missed_call_twiml(ctx, broker))
        return Outcome(twiml=twiml.hangup())
    if missed:
        return _missed(session, ctx, broker, dial.caller, event)
    log(logger, logging.INFO, "answered call", call_sid=dial.call_sid, broker_id=broker.id)
    _answered(session, ctx, broker, dial.caller, dial.call_sid)
    return Outcome(twiml=twiml.hangup())


def _answered(session: Session, ctx: AppContext, broker: Broker, caller_raw: str | None, call_sid: str) -> None:
    """The broker answered a caller who is a lead: a `call_answered` event (a repeat call when nobody had reached
    them yet, service.cases). While their missed-call case is open, the broker on the phone with them is human
    contact, which takes the lead over (service.takeover) as a callback would."""
    try:
        caller = to_e164(caller_raw or "")
    except InvalidPhone:
        return
    found = session.exec(select(Lead).where(Lead.broker_id == broker.id, Lead.phone == caller)).first()
    if found is None or found.id is None:
        return
    lead = locked_lead(session, found.id) or found
    case = cases.latest(session, found.id)
    now = utcnow()
    events.record(session, broker=broker, lead=lead, kind=EventKind.call_answered, actor=broker.forward_to,
                  actor_name=broker.name, data={"call_sid": call_sid}, at=now)
    if case is not None and cases.is_open(case, now):
        person = Principal(kind="phone", name=broker.name, broker_ids=frozenset({saved_id(broker)}),
                           phone=broker.forward_to)
        human_acted(session, ctx, broker=broker, lead=lead, principal=person, how="answered_call",
                    data={"call_sid": call_sid})


def record_call_status(session: Session, status: CallStatusForm) -> Outcome:
    """The call's own status callback: recorded, once per status."""
    insert_once(session, CallEvent(
        call_sid=status.call_sid, kind="status", status=status.status, broker_id=status.broker.id,
        caller=status.caller, duration=status.duration,
    ))
    return Outcome(twiml=twiml.empty_voice())


def screen_accepted(session: Session, accept: ScreenAcceptForm) -> Outcome:
    """The broker pressed a key: a person, not a voicemail greeting, took the call; bridge it."""
    if accept.accepted_call_sid is None:
        return Outcome(twiml=twiml.hangup())
    insert_once(session, CallEvent(call_sid=accept.accepted_call_sid, kind="screen-accept", status="accepted"))
    return Outcome(twiml=twiml.empty_voice())


def screen(ctx: AppContext, form: ScreenForm) -> Outcome:
    """The whisper on the broker's leg (the Dial <Number url>)."""
    return Outcome(twiml=screen_twiml(ctx, form.caller))


# -- voicemail ----------------------------------------------------------------------------------------------

def voicemail_recorded(session: Session, ctx: AppContext, vm: VoicemailForm) -> Outcome:
    """The broker gets the caller, the length and the recording link, once per recording; a hang-up at the
    beep is recorded but not alerted."""
    broker, duration, link = vm.broker, vm.duration, vm.link
    hang_up = duration is not None and duration < MIN_VOICEMAIL_SECONDS
    event = CallEvent(
        call_sid=vm.call_sid, kind="voicemail", status="recorded", broker_id=broker.id, caller=vm.caller,
        duration=duration, reason=f"hang-up at the beep ({duration} s): no voicemail alert" if hang_up else link,
    )
    if not insert_once(session, event) or hang_up:
        return Outcome(twiml=twiml.hangup())
    caller, lead = _caller_and_lead(session, broker, vm.caller)
    alerts = queue_alert(session, ctx, broker=broker, lead=lead, template_id="alert_voicemail",
                         values={"caller": caller, "duration": "?" if duration is None else str(duration),
                                 "recording_url": link or "(no link from Twilio)"},
                         dedupe_key=f"voicemail:{vm.recording_sid or vm.call_sid}")
    log(logger, logging.INFO, "voicemail", call_sid=vm.call_sid, duration=duration, broker_id=broker.id,
        caller=mask(vm.caller), alerts=len(alerts))
    return Outcome(twiml=twiml.hangup(), send_ids=pending_ids(alerts))


def transcription_received(session: Session, ctx: AppContext, tr: TranscriptionForm) -> Outcome:
    """The transcript goes to the broker, once per recording; it is the caller's own words: it goes into the
    alert and nowhere else (never a log)."""
    broker = tr.broker or _transcription_broker(session, ctx, tr.call_sid)
    event = CallEvent(call_sid=tr.call_sid, kind="transcription", status=tr.status, broker_id=broker.id,
                      caller=tr.caller, reason=tr.recording_sid)
    if not insert_once(session, event):
        return Outcome(twiml=twiml.empty_voice())
    voicemail = session.exec(
        select(CallEvent).where(CallEvent.call_sid == tr.call_sid, CallEvent.kind == "voicemail")).first()
    short = voicemail is not None and voicemail.duration is not None and voicemail.duration < MIN_VOICEMAIL_SECONDS
    if tr.status != "completed" or not tr.text or short:
        log(logger, logging.INFO, "voicemail transcript not sent", call_sid=tr.call_sid, status=tr.status,
            empty=not tr.text, hang_up=short, broker_id=broker.id)
        return Outcome(twiml=twiml.empty_voice())
    caller, lead = _caller_and_lead(session, broker, tr.caller)
    alerts = queue_alert(session, ctx, broker=broker, lead=lead, template_id="alert_voicemail_transcript",
                         values={"caller": caller, "excerpt": excerpt(tr.text, TRANSCRIPT_CHARS)},
                         dedupe_key=f"transcript:{tr.recording_sid or tr.call_sid}")
    log(logger, logging.INFO, "voicemail transcript", call_sid=tr.call_sid, chars=len(tr.text), broker_id=broker.id)
    return Outcome(twiml=twiml.empty_voice(), send_ids=pending_ids(alerts))


def _transcription_broker(session: Session, ctx: AppContext, call_sid: str) -> Broker:
    """The broker a transcription belongs to when Twilio left `To` out: by the call it transcribes."""
    event = session.exec(
        select(CallEvent).where(CallEvent.call_sid == call_sid, col(CallEvent.broker_id).is_not(None))).first()
    broker = next((b for b in ctx.brokers_by_number.values() if event is not None and b.id == event.broker_id), None)
    if broker is None:
        raise BadRequestError("missing required field(s): To", status_code=422)
    return broker


def _caller_and_lead(session: Session, broker: Broker, caller_raw: str | None) -> tuple[str, Lead | None]:
    """How an alert names the caller, and their lead when there is one (never created here)."""
    try:
        caller = to_e164(caller_raw or "")
    except InvalidPhone:
        return "a withheld number", None
    lead = session.exec(select(Lead).where(Lead.broker_id == broker.id, Lead.phone == caller)).first()
    return caller, lead
