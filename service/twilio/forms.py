"""What Twilio posts to each webhook, read into one frozen dataclass per form and validated as it is read.

A form that cannot be used raises BadRequestError carrying the HTTP status to answer: 422 for a missing or
malformed field, 404 for a `To` that is no broker's number, 413 for a body longer than any SMS. Each `parse`
checks the fields in the order the handlers always have, so the same bad request gets the same answer. Nothing
here reads the database; the broker a form names is looked up in the brokers held in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from service.errors import BadRequestError
from service.models import Broker
from service.phones import InvalidPhone, to_e164

MISSED_DIAL_STATUSES = {"no-answer", "busy", "failed", "canceled"}
ANSWERED_DIAL_STATUSES = {"completed", "answered"}
KNOWN_DIAL_STATUSES = MISSED_DIAL_STATUSES | ANSWERED_DIAL_STATUSES
CALL_STATUSES = {"queued", "ringing", "in-progress", "completed", "busy", "failed", "no-answer", "canceled", "initiated"}
MESSAGE_STATUSES = {
    "accepted", "scheduled", "queued", "sending", "sent", "delivered", "undelivered", "failed", "read",
    "receiving", "received", "canceled", "partially_delivered",
}
# How far along its way a text is at each status. Twilio does not promise the order of status callbacks, so one
# that arrives late never moves a text back ("delivered", then a late "sent", stays delivered); the final ones
# share the last stage but "read", and among them the latest word wins.
_STATUS_STAGE = {
    "accepted": 0, "scheduled": 0, "queued": 1, "sending": 2, "sent": 3, "partially_delivered": 3, "delivered": 4,
    "undelivered": 4, "failed": 4, "canceled": 4, "read": 5,
}


def moves_forward(stored: str | None, reported: str) -> bool:
    """Whether a reported delivery status may replace the stored one (never a step back)."""
    return _STATUS_STAGE.get(reported, 0) >= _STATUS_STAGE.get(stored or "", -1)


TWILIO_OPT_OUT_TYPES = {"STOP", "START", "HELP"}
MAX_SMS_BODY = 1600
MAX_SID_CHARS = 64
MAX_DIGITS = 9  # an integer field fits every column
MAX_RECORDING_URL = 300

CALL_SID = ("CA",)
MESSAGE_SID = ("SM", "MM")
RECORDING_SID = ("RE",)

# The broker a Twilio number belongs to (AppContext.broker_for), or None.
BrokerLookup = Callable[[str], Broker | None]


def require(form: Mapping[str, str], *names: str) -> list[str]:
    """The named fields, stripped; 422 naming every one that is missing or blank."""
    missing = [n for n in names if not (form.get(n) or "").strip()]
    if missing:
        raise BadRequestError(f"missing required field(s): {', '.join(missing)}", status_code=422)
    return [form[n].strip() for n in names]


def int_field(value: str | None, default: int | None = None) -> int | None:
    """A non-negative integer Twilio field (a duration, a count, an error code), or `default` when it is not
    one. ASCII digits only ('²'.isdigit() is true, int('²') fails) and at most 9 of them (fits every column)."""
    text = (value or "").strip()
    if not text or not text.isascii() or not text.isdigit() or len(text) > MAX_DIGITS:
        return default
    return int(text)


def sid(value: str, prefixes: tuple[str, ...], name: str) -> str:
    """`value` when it is a Twilio SID with one of `prefixes`; 422 naming the field otherwise."""
    if not value.startswith(prefixes) or not value.isalnum() or len(value) > MAX_SID_CHARS:
        raise BadRequestError(f"{name} is not a Twilio SID", status_code=422)
    return value


def sid_or_none(value: str | None, prefixes: tuple[str, ...]) -> str | None:
    """An optional SID: the SID, or None when the field is absent or not one."""
    text = (value or "").strip()
    return text if text.startswith(prefixes) and text.isalnum() and len(text) <= MAX_SID_CHARS else None


def call_sid(form: Mapping[str, str]) -> str:
    """The required CallSid, checked to be a call's SID."""
    return sid(require(form, "CallSid")[0], CALL_SID, "CallSid")


def broker_for(lookup: BrokerLookup, form: Mapping[str, str]) -> Broker:
    """The broker whose Twilio number the form was sent `To`."""
    (to_raw,) = require(form, "To")
    try:
        to = to_e164(to_raw)
    except InvalidPhone:
        raise BadRequestError("To is not a phone number", status_code=422) from None
    broker = lookup(to)
    if broker is None:
        raise BadRequestError("To is not a configured broker number", status_code=404)
    return broker


def recording_link(raw: str | None) -> str | None:
    """Twilio's RecordingUrl as a link the broker can open (MP3), or None when it is not an https URL."""
    url = (raw or "").strip()
    if not url.startswith("https://") or any(c.isspace() for c in url) or len(url) > MAX_RECORDING_URL:
        return None
    tail = url.rsplit("/", 1)[-1]
    return url if "." in tail else url + ".mp3"


def forwarded_from(form: Mapping[str, str]) -> bool:
    """The carrier forwarded the call to the Twilio number (the broker's own phone did not answer)."""
    return bool((form.get("ForwardedFrom") or "").strip())


@dataclass(frozen=True)
class CallForm:
    """/twilio/voice: an incoming call to a broker's number."""

    broker: Broker
    call_sid: str
    caller: str | None  # `From` as sent (None when absent): withheld numbers are not E.164
    forwarded_from: bool

    @classmethod
    def parse(cls, form: Mapping[str, str], lookup: BrokerLookup) -> CallForm:
        broker = broker_for(lookup, form)
        return cls(broker=broker, call_sid=call_sid(form), caller=form.get("From"),
                   forwarded_from=forwarded_from(form))


def _call_and_status(form: Mapping[str, str], lookup: BrokerLookup, field: str,
                     known: Collection[str]) -> tuple[Broker, str, str]:
    """A call status callback's broker, CallSid and status (lower case): 422 for a status Twilio never sends."""
    broker = broker_for(lookup, form)
    sid_text, status = require(form, "CallSid", field)
    checked = sid(sid_text, CALL_SID, "CallSid")
    if status.lower() not in known:
        raise BadRequestError(f"unknown {field}", status_code=422)
    return broker, checked, status.lower()


@dataclass(frozen=True)
class DialStatusForm:
    """/twilio/voice/dial-status: the <Dial action> callback once the broker's leg ended."""

    broker: Broker
    call_sid: str
    status: str  # DialCallStatus, lower case, one of KNOWN_DIAL_STATUSES
    bridged: str  # DialBridged, lower case: "true", "false" or "" when Twilio does not say
    duration_text: str | None  # DialCallDuration as sent (for the reason recorded on the call)
    caller: str | None

    @property
    def duration(self) -> int | None:
        return int_field(self.duration_text)

    @classmethod
    def parse(cls, form: Mapping[str, str], lookup: BrokerLookup) -> DialStatusForm:
        broker, checked, status = _call_and_status(form, lookup, "DialCallStatus", KNOWN_DIAL_STATUSES)
        return cls(broker=broker, call_sid=checked, status=status,
                   bridged=(form.get("DialBridged") or "").strip().lower(),
                   duration_text=form.get("DialCallDuration"), caller=form.get("From"))


@dataclass(frozen=True)
class CallStatusForm:
    """/twilio/voice/status: the call's own status callback."""

    broker: Broker
    call_sid: str
    status: str  # lower case, one of CALL_STATUSES
    duration: int | None
    caller: str | None

    @classmethod
    def parse(cls, form: Mapping[str, str], lookup: BrokerLookup) -> CallStatusForm:
        broker, checked, status = _call_and_status(form, lookup, "CallStatus", CALL_STATUSES)
        return cls(broker=broker, call_sid=checked, status=status,
                   duration=int_field(form.get("CallDuration")), caller=form.get("From"))


@dataclass(frozen=True)
class ScreenForm:
    """/twilio/voice/screen: the broker's leg answered; the whisper is about to play."""

    call_sid: str
    caller: str  # `From`, or "" when absent

    @classmethod
    def parse(cls, form: Mapping[str, str]) -> ScreenForm:
        (sid_text,) = require(form, "CallSid")
        return cls(call_sid=sid_text, caller=form.get("From", ""))


@dataclass(frozen=True)
class ScreenAcceptForm:
    """/twilio/voice/screen/accept: the whisper's <Gather> result on the broker's leg."""

    call_sid: str
    accepted_call_sid: str | None  # the caller's call (ParentCallSid) when a key was pressed, else None

    @classmethod
    def parse(cls, form: Mapping[str, str]) -> ScreenAcceptForm:
        (sid_text,) = require(form, "CallSid")
        parent = (form.get("ParentCallSid") or sid_text).strip()
        if not (form.get("Digits") or "").strip():
            return cls(call_sid=sid_text, accepted_call_sid=None)
        return cls(call_sid=sid_text, accepted_call_sid=sid(parent, CALL_SID, "ParentCallSid"))


@dataclass(frozen=True)
class VoicemailForm:
    """/twilio/voice/voicemail: the <Record action> once the caller's voicemail is recorded."""

    broker: Broker
    call_sid: str
    duration: int | None  # RecordingDuration, None when Twilio does not give one
    link: str | None  # recording_link(RecordingUrl)
    recording_sid: str | None
    caller: str | None

    @classmethod
    def parse(cls, form: Mapping[str, str], lookup: BrokerLookup) -> VoicemailForm:
        broker = broker_for(lookup, form)
        return cls(broker=broker, call_sid=call_sid(form), duration=int_field(form.get("RecordingDuration")),
                   link=recording_link(form.get("RecordingUrl")),
                   recording_sid=sid_or_none(form.get("RecordingSid"), RECORDING_SID), caller=form.get("From"))


@dataclass(frozen=True)
class TranscriptionForm:
    """/twilio/voice/transcription: Twilio's transcript of a voicemail (the <Record transcribeCallback>)."""

    call_sid: str
    broker: Broker | None  # by `To`; None when Twilio left `To` out (the handler finds it by the call)
    status: str  # TranscriptionStatus, lower case, at most 20 characters, "unknown" when absent
    text: str  # the caller's own words: for the alert only, never a log
    recording_sid: str | None
    caller: str | None

    @classmethod
    def parse(cls, form: Mapping[str, str], lookup: BrokerLookup) -> TranscriptionForm:
        checked = call_sid(form)
        broker = broker_for(lookup, form) if (form.get("To") or "").strip() else None
        return cls(call_sid=checked, broker=broker,
                   status=(form.get("TranscriptionStatus") or "").strip().lower()[:20] or "unknown",
                   text=(form.get("TranscriptionText") or "").strip(),
                   recording_sid=sid_or_none(form.get("RecordingSid"), RECORDING_SID), caller=form.get("From"))


@dataclass(frozen=True)
class InboundSmsForm:
    """/twilio/sms: a text to a broker's number."""

    broker: Broker
    message_sid: str
    sender: str  # E.164
    body: str
    opt_out_type: str | None  # Twilio's STOP / START / HELP handling, when it applied
    num_media: int

    @classmethod
    def parse(cls, form: Mapping[str, str], lookup: BrokerLookup) -> InboundSmsForm:
        broker = broker_for(lookup, form)
        sid_text, from_raw = require(form, "MessageSid", "From")
        checked = sid(sid_text, MESSAGE_SID, "MessageSid")
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
        return cls(broker=broker, message_sid=checked, sender=sender, body=body, opt_out_type=opt_out_type,
                   num_media=int_field(form.get("NumMedia") or "0", 0) or 0)


@dataclass(frozen=True)
class SmsStatusForm:
    """/twilio/sms/status: the delivery status of one of our texts."""

    message_sid: str
    status: str  # lower case, one of MESSAGE_STATUSES
    error_code: int | None

    @classmethod
    def parse(cls, form: Mapping[str, str]) -> SmsStatusForm:
        sid_text, status = require(form, "MessageSid", "MessageStatus")
        checked = sid(sid_text, MESSAGE_SID, "MessageSid")
        if status.lower() not in MESSAGE_STATUSES:
            raise BadRequestError("unknown MessageStatus", status_code=422)
        return cls(message_sid=checked, status=status.lower(),
                   error_code=int_field((form.get("ErrorCode") or "").strip()))


def human_call_id(form: Mapping[str, str]) -> int:
    """The click-to-call's id (`call` in the URL textback gave Twilio, merged into the form once verified)."""
    value = int_field(form.get("call"))
    if value is None:
        raise BadRequestError("call is not a click-to-call id", status_code=422)
    return value


@dataclass(frozen=True)
class BridgeForm:
    """/twilio/voice/bridge?call=<id>: the user answered textback's call; connect them to the borrower."""

    human_call_id: int
    call_sid: str

    @classmethod
    def parse(cls, form: Mapping[str, str]) -> BridgeForm:
        return cls(human_call_id=human_call_id(form), call_sid=call_sid(form))


@dataclass(frozen=True)
class BridgeStatusForm:
    """/twilio/voice/bridge-status?call=<id>: the <Dial> to the borrower ended (its action callback)."""

    human_call_id: int
    call_sid: str
    status: str
    duration: int | None

    @classmethod
    def parse(cls, form: Mapping[str, str]) -> BridgeStatusForm:
        call_id, sid_text = human_call_id(form), call_sid(form)
        (status,) = require(form, "DialCallStatus")
        if status.lower() not in KNOWN_DIAL_STATUSES:
            raise BadRequestError("unknown DialCallStatus", status_code=422)
        return cls(human_call_id=call_id, call_sid=sid_text, status=status.lower(),
                   duration=int_field(form.get("DialCallDuration")))


@dataclass(frozen=True)
class BridgeCallStatusForm:
    """/twilio/voice/bridge-call-status?call=<id>: the call to the user ended (the Calls API statusCallback)."""

    human_call_id: int
    call_sid: str
    status: str
    duration: int | None

    @classmethod
    def parse(cls, form: Mapping[str, str]) -> BridgeCallStatusForm:
        call_id, sid_text = human_call_id(form), call_sid(form)
        (status,) = require(form, "CallStatus")
        if status.lower() not in CALL_STATUSES:
            raise BadRequestError("unknown CallStatus", status_code=422)
        return cls(human_call_id=call_id, call_sid=sid_text, status=status.lower(),
                   duration=int_field(form.get("CallDuration")))
