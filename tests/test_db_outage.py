"""The phone line survives a database outage: webhooks answer from memory, spool what they could not store,
and the worker writes it once the database is back. The fallback endpoints answer without the database."""

from __future__ import annotations

import json
import threading
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from service import outbox
from service.models import CallEvent, InboundMessage, OptOut, OutboundMessage, utcnow
from service.replay import replay_spool
from tests.helpers import (
    BROKER_ALERT,
    BROKER_CELL,
    CALLER,
    PUBLIC_URL,
    call_params,
    sent_templates,
    sent_texts,
    sms_params,
    status_params,
)
from tests.outage import database_down

VOICE = "/twilio/voice"
DIAL = "/twilio/voice/dial-status"



def rows(ctx, model) -> list:
    with Session(ctx.engine) as session:
        return list(session.exec(select(model)))


def spooled(ctx) -> list[dict]:
    return [json.loads(line) for path in sorted(Path(ctx.settings.spool_dir).glob("*.jsonl"))
            if not path.name.startswith("dead-") for line in path.read_text().splitlines()]


def to_caller(route) -> list[dict[str, str]]:
    return [t for t in sent_texts(route) if t["To"] == CALLER]


def test_dial_broker_from_memory_when_database_is_down(client, post, twilio_api, ctx) -> None:
    """Reproduction: /twilio/voice answered 503 while the database was down, so the caller never rang through."""
    with database_down(ctx):
        response = post(client, VOICE, call_params())
    assert response.status_code == 200
    root = ET.fromstring(response.text)
    dial = root.find("Dial")
    assert dial is not None
    assert dial.get("action") == PUBLIC_URL + DIAL
    assert dial.find("Number").text == BROKER_CELL
    assert [r["path"] for r in spooled(ctx)] == [VOICE]


def test_write_spooled_webhooks_once_database_is_back(client, post, twilio_api, ctx) -> None:
    reply = sms_params("purchase", sid="SM" + "c" * 32)
    with database_down(ctx):
        assert post(client, VOICE, call_params()).status_code == 200
        missed = post(client, DIAL, call_params(DialCallStatus="no-answer"))
        assert missed.status_code == 200
        assert ET.fromstring(missed.text).find("Record") is not None  # the caller can still leave a voicemail
        assert post(client, DIAL, call_params(DialCallStatus="no-answer")).status_code == 200  # a Twilio retry
        assert post(client, "/twilio/sms", reply).status_code == 200
        assert ET.fromstring(post(client, "/twilio/sms", reply).text).tag == "Response"
        assert replay_spool(ctx).replayed == 0  # still down: nothing replayed, nothing lost
        assert len(spooled(ctx)) == 5
    assert rows(ctx, CallEvent) == []
    assert to_caller(twilio_api["messages"]) == []
    client.app.state.worker.run_once()
    kinds = sorted((e.kind, e.status) for e in rows(ctx, CallEvent))
    assert kinds == [("dial-status", "no-answer"), ("voice", "")]
    assert len(rows(ctx, InboundMessage)) == 1
    assert len(to_caller(twilio_api["messages"])) >= 1
    openers = [m for m in rows(ctx, OutboundMessage) if m.purpose == "opener"]
    assert len(openers) == 1
    assert spooled(ctx) == []
    client.app.state.worker.run_once()  # replaying is idempotent and the spool is empty: nothing doubles
    assert len([m for m in rows(ctx, OutboundMessage) if m.purpose == "opener"]) == 1


def test_alert_broker_instead_of_late_opener(client, post, twilio_api, ctx, clock) -> None:
    with database_down(ctx):
        post(client, DIAL, call_params(DialCallStatus="no-answer"))
    clock.move_to(utcnow() + timedelta(hours=2))
    client.app.state.worker.run_once()
    assert to_caller(twilio_api["messages"]) == []
    [alert] = [t for t in sent_texts(twilio_api["messages"]) if t["To"] == BROKER_ALERT]
    assert CALLER in alert["Body"]
    assert sent_templates(ctx, twilio_api["messages"], BROKER_ALERT) == ["alert_missed_late"]
    [event] = rows(ctx, CallEvent)
    assert event.missed


def test_send_opener_when_replay_is_prompt(client, post, twilio_api, ctx, clock) -> None:
    with database_down(ctx):
        post(client, DIAL, call_params(DialCallStatus="no-answer"))
    clock.move_to(utcnow() + timedelta(minutes=3))
    client.app.state.worker.run_once()
    assert len(to_caller(twilio_api["messages"])) == 1


def test_replay_spooled_keywords_in_order(client, post, twilio_api, ctx) -> None:
    post(client, DIAL, call_params(DialCallStatus="no-answer"))
    with database_down(ctx):
        post(client, "/twilio/sms", sms_params("START"))
        post(client, "/twilio/sms", sms_params("STOP"))
    client.app.state.worker.run_once()
    [state] = rows(ctx, OptOut)
    assert state.opted_out


def test_answer_503_when_spool_cannot_be_written(client, post, twilio_api, ctx, tmp_path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    ctx.spool.directory = blocker / "spool"
    with database_down(ctx):
        assert post(client, VOICE, call_params()).status_code == 503
        assert post(client, "/twilio/sms", sms_params("hello")).status_code == 503


def test_refuse_bad_webhook_while_database_is_down_without_spooling(client, post, twilio_api, ctx) -> None:
    with database_down(ctx):
        assert post(client, VOICE, call_params(to="+13105550100")).status_code == 404
        assert post(client, VOICE, call_params(), signature="forged").status_code == 403
    assert spooled(ctx) == []


def test_dial_broker_from_voice_fallback_without_database(client, post, twilio_api, ctx) -> None:
    params = call_params(ErrorCode="11200", ErrorUrl=PUBLIC_URL + VOICE)
    with database_down(ctx):
        response = post(client, "/twilio/voice/fallback", params)
    assert response.status_code == 200
    dial = ET.fromstring(response.text).find("Dial")
    assert dial is not None
    assert dial.find("Number").text == BROKER_CELL
    client.app.state.worker.run_once()
    [event] = rows(ctx, CallEvent)
    assert event.kind == "voice"


def test_store_sms_from_fallback_once(client, post, twilio_api, ctx) -> None:
    params = sms_params("refinance", sid="SM" + "e" * 32, ErrorCode="11200")
    response = post(client, "/twilio/sms/fallback", params)
    assert response.status_code == 200
    assert ET.fromstring(response.text).tag == "Response"
    assert post(client, "/twilio/sms", params).status_code == 200  # the primary got through after all
    client.app.state.worker.run_once()
    assert len(rows(ctx, InboundMessage)) == 1


@pytest.mark.parametrize("path", ["/twilio/voice/fallback", "/twilio/sms/fallback"])
def test_refuse_fallback_signed_for_another_url(client, post, twilio_api, ctx, path) -> None:
    params = call_params() if "voice" in path else sms_params("hi")
    primary = path.removesuffix("/fallback")
    from service.twilio.signature import sign
    from tests.helpers import TWILIO_TOKEN

    signature = sign(token=TWILIO_TOKEN, url=PUBLIC_URL + primary, params=params)
    assert post(client, path, params, signature=signature).status_code == 403
    assert post(client, path, params, signature="nope").status_code == 403
    assert spooled(ctx) == []


def test_keep_every_record_when_writers_and_replayers_race(tmp_path) -> None:
    """Several processes append while others claim: each record is claimed exactly once."""
    from service.spool import Spool

    directory = tmp_path / "spool"
    writers = [Spool(directory) for _ in range(3)]
    replayers = [Spool(directory) for _ in range(2)]
    seen: list[str] = []
    seen_lock = threading.Lock()
    done = threading.Event()

    def write(index: int, spool: Spool) -> None:
        for n in range(150):
            spool.append("/twilio/sms", {"MessageSid": f"SM{index}-{n}"})

    def replay(spool: Spool) -> None:
        while True:
            finished = done.is_set()
            for claim in spool.claim():
                with seen_lock:
                    seen.extend(r.form["MessageSid"] for r in claim.records)
                claim.done()
            if finished:
                return

    threads = [threading.Thread(target=write, args=(i, s)) for i, s in enumerate(writers)]
    readers = [threading.Thread(target=replay, args=(s,)) for s in replayers]
    for thread in [*threads, *readers]:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    for thread in readers:
        thread.join()
    for claim in replayers[0].claim():
        seen.extend(r.form["MessageSid"] for r in claim.records)
        claim.done()
    expected = [f"SM{i}-{n}" for i in range(3) for n in range(150)]
    assert sorted(seen) == sorted(expected)
    assert list(directory.glob("*.jsonl")) == []


@pytest.mark.parametrize(
    ("path", "params", "element"),
    [
        (VOICE, call_params(ForwardedFrom="+14155550111"), "Record"),
        (DIAL, call_params(DialCallStatus="no-answer"), "Record"),
        (DIAL, call_params(DialCallStatus="completed", DialBridged="false"), "Record"),
        (DIAL, call_params(DialCallStatus="completed", DialBridged="true"), "Hangup"),
        (DIAL, call_params(DialCallStatus="completed"), "Record"),  # screened, acceptance unreadable: offer voicemail
        ("/twilio/voice/status", call_params(CallStatus="completed"), None),
        ("/twilio/voice/screen/accept", call_params(Digits="1"), None),
        ("/twilio/voice/voicemail", call_params(RecordingDuration="12", RecordingUrl="https://api.twilio.com/x"), "Hangup"),
        ("/twilio/sms/status", status_params("SM" + "f" * 32, "delivered"), None),
    ],
    ids=["forwarded-call", "dial-missed", "dial-unbridged", "dial-bridged", "dial-screened-unknown", "call-status",
         "screen-accept", "voicemail", "sms-status"],
)
def test_answer_every_webhook_from_memory_when_database_is_down(client, post, twilio_api, ctx, path, params,
                                                                element) -> None:
    with database_down(ctx):
        response = post(client, path, params)
    assert response.status_code == 200
    root = ET.fromstring(response.text)
    assert root.tag == "Response"
    if element is None:
        assert list(root) == []
    else:
        assert root.find(element) is not None
    assert [r["path"] for r in spooled(ctx)] == [path]
    client.app.state.worker.run_once()
    assert spooled(ctx) == []


def test_keep_spool_when_database_fails_again_mid_replay(client, post, twilio_api, ctx, monkeypatch) -> None:
    from sqlalchemy.exc import OperationalError

    from service.twilio import webhooks

    with database_down(ctx):
        post(client, DIAL, call_params(DialCallStatus="no-answer"))
        post(client, "/twilio/sms", sms_params("purchase"))
    real = webhooks.WEBHOOKS["/twilio/sms"]

    def flaky(session, context, form):
        raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    monkeypatch.setitem(webhooks.WEBHOOKS, "/twilio/sms", flaky)
    result = replay_spool(ctx)
    assert (result.replayed, result.left) == (1, 1)
    assert len(spooled(ctx)) == 2  # kept whole; the call is replayed again harmlessly
    monkeypatch.setitem(webhooks.WEBHOOKS, "/twilio/sms", real)
    client.app.state.worker.run_once()
    assert spooled(ctx) == []
    assert len(rows(ctx, InboundMessage)) == 1
    assert len([m for m in rows(ctx, OutboundMessage) if m.purpose == "opener"]) == 1


def test_set_aside_spooled_webhook_that_cannot_be_replayed(client, post, twilio_api, ctx, monkeypatch) -> None:
    from service.twilio import webhooks

    with database_down(ctx):
        post(client, "/twilio/voice/status", call_params(CallStatus="completed"))
        post(client, "/twilio/sms", sms_params("purchase"))

    def broken(session, context, form):
        raise RuntimeError("a bug")

    monkeypatch.setitem(webhooks.WEBHOOKS, "/twilio/voice/status", broken)
    result = replay_spool(ctx)
    assert (result.replayed, result.dead) == (1, 1)
    assert spooled(ctx) == []
    [dead] = list(Path(ctx.settings.spool_dir).glob("dead-*.jsonl"))
    assert json.loads(dead.read_text())["path"] == "/twilio/voice/status"
    assert len(rows(ctx, InboundMessage)) == 1


def test_skip_torn_last_line_of_a_crashed_writer(tmp_path) -> None:
    from service.spool import Spool

    spool = Spool(tmp_path / "spool")
    spool.append("/twilio/sms", {"MessageSid": "SM1"})
    spool.close()
    [path] = list((tmp_path / "spool").glob("spool-*.jsonl"))
    with path.open("ab") as handle:
        handle.write(b'{"v":1,"path":"/twilio/sms","form":{"Mess')
    [claim] = Spool(tmp_path / "spool").claim()
    assert [r.form["MessageSid"] for r in claim.records] == ["SM1"]
    assert claim.unreadable == 1
    claim.done()
    assert list((tmp_path / "spool").iterdir()) == []


def test_keep_spool_private(tmp_path) -> None:
    from service.spool import Spool

    spool = Spool(tmp_path / "spool")
    spool.append("/twilio/sms", {"Body": "my SSN is 123-45-6789"})
    [path] = list((tmp_path / "spool").glob("*.jsonl"))
    assert path.stat().st_mode & 0o077 == 0
    assert (tmp_path / "spool").stat().st_mode & 0o077 == 0


def test_keep_webhook_atomic_when_it_fails_after_first_write(client, post, twilio_api, ctx, monkeypatch) -> None:
    """A failure after the call event is written rolls everything back, so Twilio's retry (or the replay of the
    spooled webhook) gives the text, exactly once."""
    real = outbox.note_stored  # after the opener's row is written, on the new caller's path and the ordinary one
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return real(*args, **kwargs)

    monkeypatch.setattr("service.outbox.note_stored", flaky)
    params = call_params(DialCallStatus="no-answer")
    assert post(client, DIAL, params).status_code == 200  # the locked database: spooled, answered from memory
    assert to_caller(twilio_api["messages"]) == []  # nothing half-written
    assert post(client, DIAL, params).status_code == 200
    client.app.state.worker.run_once()  # replays the spooled copy: a no-op
    assert len(to_caller(twilio_api["messages"])) == 1
