"""TwiML answers, built with the twilio SDK's VoiceResponse / MessagingResponse.

The answer that depends only on a broker's fields and the public URL (the missed-call message) and the
constant ones are built once per distinct arguments and kept (bounded): ElementTree per request was a
measurable share of a missed call's CPU. The strings are immutable, so a cached answer is the same bytes."""

from __future__ import annotations

from functools import cache, lru_cache

from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import Dial, Gather, VoiceResponse

MISSED_MESSAGE = (
    "Sorry, {name} can't take your call right now. We'll text you at this number in a moment. "
    "To leave a voicemail, speak after the tone."
)


def dial_broker(*, forward_to: str, caller_id: str | None, ring_seconds: int, action: str, screen_url: str | None) -> str:
    """Ring the broker's cell; the dial action tells us whether the call was missed."""
    response = VoiceResponse()
    dial = Dial(timeout=ring_seconds, action=action, method="POST", caller_id=caller_id, answer_on_bridge=True)
    if screen_url:
        dial.number(forward_to, url=screen_url, method="POST")
    else:
        dial.number(forward_to)
    response.append(dial)
    return str(response)


@lru_cache(maxsize=1024)  # per broker: its name and the public URL
def missed_call(*, broker_name: str, voicemail_action: str, transcribe_callback: str | None = None) -> str:
    """The caller hears a short message and can leave a voicemail (transcribed by Twilio when a callback is
    given: Twilio transcribes recordings of up to 2 minutes, hence max_length)."""
    response = VoiceResponse()
    response.say(MISSED_MESSAGE.format(name=broker_name))
    transcription = {"transcribe": True, "transcribe_callback": transcribe_callback} if transcribe_callback else {}
    response.record(max_length=120, play_beep=True, action=voicemail_action, method="POST", timeout=5,
                    **transcription)
    response.hangup()
    return str(response)


def screen_whisper(*, caller: str, accept_url: str) -> str:
    """Played to the broker only: a key press connects; a voicemail greeting never presses a key."""
    response = VoiceResponse()
    gather = Gather(num_digits=1, action=accept_url, method="POST", timeout=6)
    # Only ASCII digits are spoken: the From field is caller-controlled, and a control character in it would
    # make the TwiML invalid XML (Twilio then drops the call instead of whispering to the broker).
    gather.say(f"textback: call from {spoken_digits(caller)}. Press any key to connect.")
    response.append(gather)
    response.hangup()
    return str(response)


def spoken_digits(number: str) -> str:
    """A phone number as Twilio should say it: its last ten ASCII digits one by one (a caller-controlled field
    may hold anything; a control character would make the TwiML invalid XML)."""
    digits = "".join(c for c in number if c in "0123456789")[-10:]
    return " ".join(digits) if digits else "an unknown number"


def bridge(*, borrower: str, caller_id: str, action: str) -> str:
    """Click-to-call, on the user's leg once they answer: say who, then dial the borrower from the business
    number; the dial action says whether the borrower was reached."""
    response = VoiceResponse()
    response.say(f"Connecting you to {spoken_digits(borrower)}.")
    dial = Dial(caller_id=caller_id, action=action, method="POST", timeout=30)
    dial.number(borrower)
    response.append(dial)
    return str(response)


def say_and_hang_up(message: str) -> str:
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)


@cache
def empty_voice() -> str:
    return str(VoiceResponse())


@cache
def hangup() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)


@cache
def empty_messaging() -> str:
    return str(MessagingResponse())
