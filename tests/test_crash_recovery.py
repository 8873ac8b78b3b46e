"""Crash recovery: the real service as a subprocess, SIGKILLed with work in flight, then restarted.

One crash cycle per database (module-scoped, it costs two service start-ups), three things in flight when
the process dies:

1. an opener whose request reached Twilio (the mock stored the message, then hung: the answer was lost);
2. an opener whose request never got processed (the mock hung without storing anything);
3. an inbound reply stored and claimed, its processing stuck in an LLM call that never answers.

After the restart the first must be reconciled against Twilio's message list and NOT sent again, the second
must be sent exactly once, and the reply must be processed. The restarted process treats claims older than
a few seconds as abandoned (`TEXTBACK_STALE_CLAIM_SECONDS`, `TEXTBACK_STALE_PROCESSING_SECONDS`; the defaults,
90 s and 120 s, are what production waits; the latter must outlast twice the LLM deadline plus 5 s, so the
restarted process also gets a 1 s LLM deadline), which stands in for the time a real restart would take.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from benchmarks.mock_twilio import MockTwilio
from service.db import make_engine
from service.models import Decision, InboundMessage, OutboundMessage
from service.twilio import fake
from tests.helpers import (
    BROKERS_YAML,
    POLICIES,
    PUBLIC_URL,
    REPO,
    TWILIO_SID,
    TWILIO_TOKEN,
    dial_params,
    sms_params,
)
from tests.outage import SilentListener

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

POSTGRES_URL = os.environ.get("TEXTBACK_TEST_POSTGRES_URL")
DB_KINDS = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])

REACHED = "+14155550161"  # the opener that reached Twilio before the kill
NOT_REACHED = "+14155550162"  # the opener that never got processed
REPLIER = "+14155550163"  # the borrower whose reply was being processed
UNSETTLED_REPLY = "well it kind of depends on a few things honestly"  # the rules leave this to the LLM

START_TIMEOUT = 120.0  # guardrails takes seconds to import; a loaded CI machine is slower still
SETTLE_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def textback_command() -> list[str]:
    script = Path(sys.executable).with_name("textback")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from service.cli import main; main()"]


def service_env(overrides: dict[str, str]) -> dict[str, str]:
    """The parent's environment without any textback/Twilio/OpenAI setting, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEXTBACK_", "TWILIO_", "OPENAI_"))}
    env.update(overrides)
    return env


@dataclass
class ServiceProcess:
    """`textback serve` in a subprocess (one process: SIGKILL takes the worker thread down with it)."""

    env: dict[str, str]
    workdir: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # our own console script
            [*textback_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"textback serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        pytest.fail(f"textback serve did not start in {START_TIMEOUT} s:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def post(self, path: str, params: dict[str, str]) -> httpx.Response:
        """A webhook signed exactly as Twilio signs it, on a fresh connection."""
        headers = fake.signature_headers(token=TWILIO_TOKEN, public_url=PUBLIC_URL, path=path, form=params)
        return httpx.post(self.url + path, data=params, headers=headers, timeout=30)



def wait_until(predicate: Callable[[], Any], timeout: float, what: str, on_fail: Callable[[], str] = str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{on_fail()}")


def crash_database_url(kind: str, tmp: Path) -> Iterator[str]:
    """A SQLite file, or a database of our own next to TEXTBACK_TEST_POSTGRES_URL's (never shared)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'crash.db'}"
        return
    import psycopg

    parts = urlsplit(POSTGRES_URL or "")
    # One per test process: pytest-xdist's workers run crash tests at the same time.
    name = f"{parts.path.lstrip('/') or 'textback'}_crash_{os.getpid()}"
    admin = urlunsplit(parts._replace(path="/postgres", scheme="postgresql"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Crash:
    """What happened in one crash cycle, for the tests to check."""

    engine: Engine
    mock: MockTwilio
    before_kill: dict[str, Any]
    inbound_sid: str


def outbound_rows(engine: Engine) -> list[OutboundMessage]:
    with Session(engine) as session:
        return list(session.exec(select(OutboundMessage).order_by(OutboundMessage.id)))


def opener(engine: Engine, phone: str) -> OutboundMessage | None:
    return next((m for m in outbound_rows(engine) if m.to_phone == phone and m.purpose == "opener"), None)


def inbound_row(engine: Engine, sid: str) -> InboundMessage | None:
    with Session(engine) as session:
        return session.exec(select(InboundMessage).where(InboundMessage.message_sid == sid)).first()


def dial(call_sid: str, caller: str) -> dict[str, str]:
    return dial_params("no-answer", call_sid, caller)


@pytest.fixture(scope="module", params=DB_KINDS)
def crash(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crash]:
    tmp = tmp_path_factory.mktemp(f"crash-{request.param}")
    brokers = tmp / "brokers.yaml"
    brokers.write_text(BROKERS_YAML)
    db_urls = crash_database_url(request.param, tmp)
    database_url = next(db_urls)
    engine = make_engine(database_url)
    llm = SilentListener()  # an LLM API that hangs
    mock = MockTwilio(account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN).start()
    base_env = {
        "TEXTBACK_DATABASE_URL": database_url, "TEXTBACK_PUBLIC_URL": PUBLIC_URL,
        "TEXTBACK_BROKERS_FILE": str(brokers), "TEXTBACK_POLICIES_DIR": str(POLICIES),
        "TEXTBACK_PROMPTS_DIR": str(REPO / "prompts"),
        "TEXTBACK_TWILIO_API_URL": mock.url, "TEXTBACK_TWILIO_LOOKUP_URL": mock.url,
        "TWILIO_ACCOUNT_SID": TWILIO_SID, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "OPENAI_API_KEY": "sk-test-crash", "OPENAI_BASE_URL": f"http://127.0.0.1:{llm.port}/v1",
        "TEXTBACK_LLM_TIMEOUT_SECONDS": "120", "TEXTBACK_SEND_TIMEOUT_SECONDS": "120",
        "TEXTBACK_STALE_CLAIM_SECONDS": "300", "TEXTBACK_STALE_PROCESSING_SECONDS": "300",
        "TEXTBACK_WORKER_POLL_SECONDS": "0.2", "TEXTBACK_SEND_RETRY_BASE_SECONDS": "0.1",
        "TEXTBACK_LOG_LEVEL": "INFO",
    }
    first = ServiceProcess(env=service_env(base_env), workdir=tmp, log_path=tmp / "first.log")
    second = ServiceProcess(env=service_env({**base_env, "TEXTBACK_SEND_TIMEOUT_SECONDS": "1",
                                              "TEXTBACK_STALE_CLAIM_SECONDS": "8",
                                              "TEXTBACK_LLM_TIMEOUT_SECONDS": "1",
                                              "TEXTBACK_STALE_PROCESSING_SECONDS": "7"}),
                            workdir=tmp, log_path=tmp / "second.log")

    def state() -> str:
        rows = [(m.id, m.to_phone, m.purpose, m.status, m.attempts, m.unknown_outcome, m.last_error)
                for m in outbound_rows(engine)]
        creates = [(r.create_index, r.form.get("To"), r.status, r.fault) for r in mock.creates()]
        return (f"outbound: {rows}\nmock creates: {creates}\nfirst log:\n{first.log_tail()}\n"
                f"second log:\n{second.log_tail()}")

    try:
        mock.hang(2, seconds=300, create=True)  # REACHED: stored by "Twilio", the answer never comes
        mock.hang(3, seconds=300, create=False)  # NOT_REACHED: never processed
        first.start()
        # A borrower gets the opener (create 1) and replies with something only the LLM could settle.
        assert first.post("/twilio/voice/dial-status", dial("CA" + "3" * 32, REPLIER)).status_code == 200
        wait_until(lambda: (o := opener(engine, REPLIER)) and o.status == "sent", SETTLE_TIMEOUT,
                   "the replier's opener", state)
        reply = sms_params(UNSETTLED_REPLY, sender=REPLIER)
        assert first.post("/twilio/sms", reply).status_code == 200
        wait_until(lambda: (row := inbound_row(engine, reply["MessageSid"])) and row.status == "processing",
                   SETTLE_TIMEOUT, "the reply stuck in processing", state)
        wait_until(lambda: llm.accepted, SETTLE_TIMEOUT, "the LLM call", state)
        # Two missed calls whose openers hang at "Twilio".
        assert first.post("/twilio/voice/dial-status", dial("CA" + "1" * 32, REACHED)).status_code == 200
        wait_until(lambda: len(mock.creates()) >= 2, SETTLE_TIMEOUT, "the REACHED send", state)
        assert first.post("/twilio/voice/dial-status", dial("CA" + "2" * 32, NOT_REACHED)).status_code == 200
        wait_until(lambda: len(mock.creates()) >= 3, SETTLE_TIMEOUT, "the NOT_REACHED send", state)
        before = {
            "reached": opener(engine, REACHED), "not_reached": opener(engine, NOT_REACHED),
            "inbound": inbound_row(engine, reply["MessageSid"]),
            "messages": mock.messages(), "creates": mock.creates(),
        }
        first.kill()
        llm.close()  # after the restart the LLM is down: the reply must still be handled (by a person)
        second.start()
        wait_until(
            lambda: all((o := opener(engine, p)) and o.status == "sent" for p in (REACHED, NOT_REACHED))
            and (row := inbound_row(engine, reply["MessageSid"])) and row.status == "processed"
            # the reply's handoff texts are queued by the processing and sent a moment later (the borrower's
            # acknowledgement may wait for the end of quiet hours; that wait is not in flight)
            and not [m for m in outbound_rows(engine) if m.status == "sending" or _due(m)],
            SETTLE_TIMEOUT, "recovery after the restart", state,
        )
        yield Crash(engine=engine, mock=mock, before_kill=before, inbound_sid=reply["MessageSid"])
    finally:
        first.kill()
        second.kill()
        llm.close()
        mock.stop()
        engine.dispose()
        next(db_urls, None)


def _due(row: OutboundMessage) -> bool:
    return row.status == "pending" and row.next_attempt_at <= datetime.now(UTC)


def _messages_to(mock: MockTwilio, phone: str) -> list[dict[str, Any]]:
    return [m for m in mock.messages() if m["to"] == phone]


def _creates_to(mock: MockTwilio, phone: str) -> list[Any]:
    return [r for r in mock.creates() if r.form.get("To") == phone]


def test_kill_leaves_sends_in_flight_before_restart(crash: Crash) -> None:
    before = crash.before_kill
    assert before["reached"].status == "sending"
    assert before["not_reached"].status == "sending"
    assert before["inbound"].status == "processing"
    assert [m["to"] for m in before["messages"]] == [REPLIER, REACHED]


def test_reconcile_opener_after_kill_when_send_reached_twilio(crash: Crash) -> None:
    row = opener(crash.engine, REACHED)
    assert row is not None
    messages = _messages_to(crash.mock, REACHED)
    assert len(messages) == 1, "the opener must not be sent again"
    assert len(_creates_to(crash.mock, REACHED)) == 1
    assert row.status == "sent"
    assert row.twilio_sid == messages[0]["sid"]
    assert row.unknown_outcome is False
    assert any(r.query.get("To") == REACHED for r in crash.mock.lists()), "reconciled via the message list"


def test_send_opener_once_after_kill_when_send_never_reached_twilio(crash: Crash) -> None:
    row = opener(crash.engine, NOT_REACHED)
    assert row is not None
    messages = _messages_to(crash.mock, NOT_REACHED)
    assert len(messages) == 1
    creates = _creates_to(crash.mock, NOT_REACHED)
    assert [c.fault for c in creates] == ["hang", None]
    assert row.status == "sent"
    assert row.twilio_sid == messages[0]["sid"]
    assert any(r.query.get("To") == NOT_REACHED for r in crash.mock.lists()), "looked before resending"


def test_process_stored_reply_after_kill_mid_processing(crash: Crash) -> None:
    row = inbound_row(crash.engine, crash.inbound_sid)
    assert row is not None
    assert row.status == "processed"
    assert row.attempts == 2  # claimed by the killed process, then by the restarted one
    with Session(crash.engine) as session:
        decisions = list(session.exec(select(Decision).where(Decision.inbound_id == row.id)))
    assert len(decisions) == 1
    assert decisions[0].action == "handoff"  # the LLM is down after the restart: a person takes it


def test_send_each_opener_exactly_once_after_restart(crash: Crash) -> None:
    opener_bodies = {m.body for m in outbound_rows(crash.engine) if m.template_id == "opener"}
    for phone in (REPLIER, REACHED, NOT_REACHED):
        openers = [m for m in _messages_to(crash.mock, phone) if m["body"] in opener_bodies]
        assert len(openers) == 1, phone
    assert not [m for m in outbound_rows(crash.engine) if m.status == "sending"]
