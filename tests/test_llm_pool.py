"""LLM work runs in its own bounded pool: webhooks, sends and the sweep never wait for it.

Replies the rules cannot settle go to the LLM pool; their LLM calls hang until the deadline. Meanwhile an
unrelated missed call must get its opener at once: the Messages API sees the opener before any text that
could only follow an LLM call (the handoff acknowledgements and alerts). Replies that find the pool full wait
in the database, as received, for the sweep, which hands them to the pool and returns without waiting.
"""

from __future__ import annotations

import threading

import httpx
import pytest
from sqlmodel import Session, select

from service.models import InboundMessage
from tests.helpers import call_params, sms_params, twilio_created
from tests.llm_helpers import HangingStream, signed_post
from tests.test_conversation import DIAL, OPENAI
from tests.test_conversation_llm import UNCLEAR

REPLIERS = ["+14155550131", "+14155550132", "+14155550133", "+14155550134"]
NEWCOMER = "+14155550139"
POOL = 2
DEADLINE = 6.0  # long enough that posting the replies and the missed call never outlasts it


@pytest.fixture
def settings_env() -> dict[str, object]:
    return {"openai_api_key": "sk-test-not-real", "llm_timeout_seconds": DEADLINE, "llm_concurrency": POOL}


class Events:
    """What reached the mocked APIs, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[str] = []

    def add(self, item: str) -> None:
        with self._lock:
            self.items.append(item)

    def index(self, prefix: str) -> int:
        with self._lock:
            return next(i for i, item in enumerate(self.items) if item.startswith(prefix))

    def count(self, prefix: str) -> int:
        with self._lock:
            return sum(item.startswith(prefix) for item in self.items)


def statuses(ctx) -> dict[str, str]:
    with Session(ctx.engine) as session:
        rows = session.exec(select(InboundMessage).where(InboundMessage.body == UNCLEAR)).all()
    return {row.from_phone: row.status for row in rows}


def test_send_opener_at_once_while_llm_calls_hang(client, post, twilio_api, ctx, clock) -> None:
    from datetime import timedelta

    events = Events()
    release = threading.Event()  # never set before the deadline: every LLM call hangs until it

    def messages(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        events.add(f"send {form['To']}")
        return twilio_created(request)

    def llm(request: httpx.Request) -> httpx.Response:
        events.add("llm-start")
        return httpx.Response(200, headers={"content-type": "application/json"},
                              stream=HangingStream(release, limit=DEADLINE + 1))

    twilio_api["messages"].side_effect = messages
    twilio_api.post(OPENAI).mock(side_effect=llm)
    for number, caller in enumerate(REPLIERS):
        post(client, DIAL, call_params("CA" + str(number) * 32, caller=caller, DialCallStatus="no-answer"))
    try:
        events.add("replies")
        for caller in REPLIERS:
            assert signed_post(client, "/twilio/sms", sms_params(UNCLEAR, sender=caller)).status_code == 200
        assert signed_post(client, DIAL, call_params("CA" + "9" * 32, caller=NEWCOMER,
                                                     DialCallStatus="no-answer")).status_code == 200
        # The opener went out before any text that follows an LLM call; only POOL replies went to the LLM.
        opener = events.index(f"send {NEWCOMER}")
        between = events.items[events.index("replies") + 1 : opener]
        assert not [item for item in between if item.startswith("send")], events.items
        assert statuses(ctx) == {**dict.fromkeys(REPLIERS[:POOL], "processing"),
                                 **dict.fromkeys(REPLIERS[POOL:], "received")}
        worker = client.app.state.worker  # the LLM pool, and the send lane its texts go to
        assert worker.wait_idle(DEADLINE + 10)
        # The calls hit their deadline: a person takes each of those replies (acknowledgement and alert).
        after = events.items[opener + 1 :]
        assert all(f"send {caller}" in after for caller in REPLIERS[:POOL]), events.items
        assert statuses(ctx) == {**dict.fromkeys(REPLIERS[:POOL], "processed"),
                                 **dict.fromkeys(REPLIERS[POOL:], "received")}
        assert events.count("llm-start") == POOL

        # The sweep hands the waiting replies to the pool and returns while their calls still hang.
        clock.shift(timedelta(seconds=10))
        client.app.state.worker.run_once()
        events.add("sweep-returned")
        assert worker.wait_idle(DEADLINE + 10)
    finally:
        release.set()
    swept = events.items[events.index("sweep-returned") :]
    assert events.count("llm-start") == len(REPLIERS)
    assert all(f"send {caller}" in swept for caller in REPLIERS[POOL:]), events.items
    assert set(statuses(ctx).values()) == {"processed"}


@pytest.fixture
def rules_only(settings_env: dict[str, object]) -> None:
    settings_env["openai_api_key"] = None


def test_process_reply_inline_when_no_llm_configured(rules_only: None, client, post, twilio_api, ctx) -> None:
    post(client, DIAL, call_params(DialCallStatus="no-answer"))

    post(client, "/twilio/sms", sms_params(UNCLEAR))

    assert client.app.state.worker.llm is None
    assert set(statuses(ctx).values()) == {"processed"}
