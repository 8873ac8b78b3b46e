"""Cached TwiML answers are the very bytes a fresh build gives, per distinct arguments."""

from __future__ import annotations

import pytest

from service.twilio import twiml

VOICEMAIL = "https://textback.example.com/twilio/voice/voicemail"
TRANSCRIBE = "https://textback.example.com/twilio/voice/transcription"


@pytest.mark.parametrize(("name", "transcribe"), [
    ("Dana Whitfield", None), ("Dana Whitfield", TRANSCRIBE), ("Marcus Chen", None), ("O'Brien & <Sons>", None)])
def test_build_missed_call_twiml_same_bytes_when_cached(name, transcribe) -> None:
    fresh = twiml.missed_call.__wrapped__(broker_name=name, voicemail_action=VOICEMAIL, transcribe_callback=transcribe)
    first = twiml.missed_call(broker_name=name, voicemail_action=VOICEMAIL, transcribe_callback=transcribe)
    again = twiml.missed_call(broker_name=name, voicemail_action=VOICEMAIL, transcribe_callback=transcribe)
    assert first == again == fresh
    assert name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in first


def test_build_missed_call_twiml_per_broker() -> None:
    dana = twiml.missed_call(broker_name="Dana Whitfield", voicemail_action=VOICEMAIL, transcribe_callback=None)
    marcus = twiml.missed_call(broker_name="Marcus Chen", voicemail_action=VOICEMAIL, transcribe_callback=None)
    assert "Dana Whitfield" in dana
    assert "Marcus Chen" in marcus
    assert "Dana" not in marcus


@pytest.mark.parametrize("build", [twiml.empty_voice, twiml.hangup, twiml.empty_messaging])
def test_build_constant_twiml_same_bytes_when_cached(build) -> None:
    assert build() == build() == build.__wrapped__()
