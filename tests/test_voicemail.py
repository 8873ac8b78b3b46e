"""A voicemail reaches the broker: who called, how long, the recording link, and Twilio's transcript when on."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from service.models import CallEvent
from tests.helpers import (
    BROKER,
    BROKER2,
    BROKER_ALERT,
    BROKERS_YAML,
    CALLER,
    PUBLIC_URL,
    TWILIO_SID,
    call_params,
    sent_texts,
)

DIAL = "/twilio/voice/dial-status"
VOICEMAIL = "/twilio/voice/voicemail"
TRANSCRIPTION = "/twilio/voice/transcription"
RECORDING_SID = "RE" + "a" * 32
RECORDING_URL = f"https://api.twilio.com/2010-04-01/Accounts/{TWILIO_SID}/Recordings/{RECORDING_SID}"
TRANSCRIPT = "Hi this is Maria, my rate lock expires Friday and my SSN ends 6789, please call me back"


@pytest.fixture
def brokers_file(tmp_path: Path) -> Path:
    """Dana transcribes her voicemails; Marcus does not."""
    path = tmp_path / "brokers.yaml"
    path.write_text(BROKERS_YAML.replace("    call_screening: true\n",
                                         "    call_screening: true\n    transcribe_voicemail: true\n", 1))
    return path


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    logger = logging.getLogger("textback")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def voicemail(duration: str | None = "23", to: str = BROKER, **extra: str) -> dict[str, str]:
    params = call_params(to=to, CallStatus="completed", RecordingSid=RECORDING_SID, RecordingUrl=RECORDING_URL,
                         **extra)
    if duration is not None:
        params["RecordingDuration"] = duration
    return params


def transcription(text: str = TRANSCRIPT, status: str = "completed", to: str = BROKER) -> dict[str, str]:
    return call_params(to=to, CallStatus="completed", RecordingSid=RECORDING_SID, RecordingUrl=RECORDING_URL,
                       TranscriptionSid="TR" + "b" * 32, TranscriptionStatus=status, TranscriptionText=text,
                       TranscriptionUrl=f"https://api.twilio.com/2010-04-01/Accounts/{TWILIO_SID}/Transcriptions/TR{'b' * 32}")


def to_team(route) -> list[dict[str, str]]:
    return [t for t in sent_texts(route) if t["To"] == BROKER_ALERT]


def test_alert_broker_with_caller_length_and_link_when_voicemail_left(client, post, twilio_api) -> None:
    """Reproduction: a voicemail was recorded but the broker was never told."""
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    before = len(to_team(twilio_api["messages"]))
    response = post(client, VOICEMAIL, voicemail("23"))
    assert response.status_code == 200
    assert ET.fromstring(response.text).find("Hangup") is not None
    alerts = to_team(twilio_api["messages"])[before:]
    assert len(alerts) == 1
    body = alerts[0]["Body"]
    assert CALLER in body
    assert "23 s" in body
    assert RECORDING_URL in body
    assert alerts[0]["From"] == BROKER


def test_alert_voicemail_once_when_twilio_retries(client, post, twilio_api) -> None:
    for _ in range(3):
        assert post(client, VOICEMAIL, voicemail("40")).status_code == 200
    assert len(to_team(twilio_api["messages"])) == 1


@pytest.mark.parametrize(
    ("duration", "alerted"),
    [("0", False), ("1", False), ("2", True), ("119", True), (None, True), ("", True), ("abc", True)],
)
def test_alert_voicemail_only_when_caller_said_something(client, post, twilio_api, ctx, duration, alerted) -> None:
    """0-1 s is a hang-up at the beep: the missed call itself was handled already, so no voicemail alert.
    An unknown length is alerted (better a needless alert than a lost message)."""
    post(client, VOICEMAIL, voicemail(duration))
    assert bool(to_team(twilio_api["messages"])) is alerted
    with Session(ctx.engine) as session:
        [event] = session.exec(select(CallEvent).where(CallEvent.kind == "voicemail")).all()
    assert event.status == "recorded"


def test_say_withheld_caller_in_voicemail_alert(client, post, twilio_api) -> None:
    post(client, VOICEMAIL, voicemail("12", From="anonymous", Caller="anonymous"))
    [alert] = to_team(twilio_api["messages"])
    assert "withheld" in alert["Body"]


def test_ask_twilio_to_transcribe_only_when_broker_enables_it(client, post, twilio_api) -> None:
    dana = ET.fromstring(post(client, DIAL, call_params(DialCallStatus="no-answer")).text).find("Record")
    assert dana is not None
    assert dana.get("transcribe") == "true"
    assert dana.get("transcribeCallback") == PUBLIC_URL + TRANSCRIPTION
    marcus = ET.fromstring(post(client, DIAL, call_params(call_sid="CA" + "3" * 32, to=BROKER2,
                                                          DialCallStatus="no-answer")).text).find("Record")
    assert marcus is not None
    assert marcus.get("transcribe") is None
    assert marcus.get("transcribeCallback") is None


def test_send_transcript_to_broker_once_and_never_to_logs(client, post, twilio_api, logged) -> None:
    post(client, VOICEMAIL, voicemail("31"))
    for _ in range(2):
        assert post(client, TRANSCRIPTION, transcription()).status_code == 200
    alerts = to_team(twilio_api["messages"])
    assert len(alerts) == 2  # the voicemail, then its transcript
    assert "Friday" in alerts[1]["Body"]
    assert CALLER in alerts[1]["Body"]
    logged_text = " ".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in logged)
    assert "Maria" not in logged_text
    assert "Friday" not in logged_text


@pytest.mark.parametrize(("status", "text"), [("failed", ""), ("completed", "   ")])
def test_send_no_transcript_alert_when_transcription_has_nothing(client, post, twilio_api, status, text) -> None:
    post(client, VOICEMAIL, voicemail("31"))
    assert post(client, TRANSCRIPTION, transcription(text=text, status=status)).status_code == 200
    assert len(to_team(twilio_api["messages"])) == 1


def test_refuse_unsigned_transcription(client, post, twilio_api) -> None:
    response = post(client, TRANSCRIPTION, transcription(), signature="bogus")
    assert response.status_code == 403
    assert to_team(twilio_api["messages"]) == []


def test_reject_unknown_brokers_file_value_for_transcription(tmp_path: Path) -> None:
    from service.brokers import load_brokers
    from service.errors import ConfigError

    path = tmp_path / "brokers.yaml"
    path.write_text(BROKERS_YAML.replace("    call_screening: true\n",
                                         "    call_screening: true\n    transcribe_voicemail: sometimes\n", 1))
    with pytest.raises(ConfigError, match="transcribe_voicemail"):
        load_brokers(path)
