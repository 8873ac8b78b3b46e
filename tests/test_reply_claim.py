"""A reply is acted on once. When a slow LLM call outlives `stale_processing_seconds`, the sweep takes the
reply back and processes it; the first processing, when it finally gets its answer, finds its claim gone and
writes and sends nothing (before: two texts to the borrower and a false "ready" alert to the broker)."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import httpx
import pytest
from sqlmodel import Session, select

from service.models import Decision, InboundMessage
from service.replies.llm_fake import completion_json
from tests.helpers import CALLER, sent_templates, sms_params
from tests.llm_helpers import HangingStream, signed_post
from tests.test_conversation import OPENAI, missed, to_borrower, to_broker
from tests.test_conversation_llm import LLM_ANSWER, UNCLEAR


@pytest.fixture
def settings_env() -> dict[str, object]:
    # The deadline is long enough that the first call is still waiting when the sweep comes round.
    return {"openai_api_key": "sk-test-not-real", "llm_timeout_seconds": 20.0}


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def inbound(ctx) -> InboundMessage:
    with Session(ctx.engine) as session:
        return session.exec(select(InboundMessage).where(InboundMessage.body == UNCLEAR)).one()


def test_process_reply_once_when_sweep_reclaims_slow_extraction(client, post, twilio_api, ctx, clock) -> None:
    release, first_started = threading.Event(), threading.Event()
    body = json.dumps(completion_json(json.dumps(LLM_ANSWER))).encode()
    calls: list[httpx.Request] = []

    def llm(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:  # the slow one: answers only when released
            first_started.set()
            return httpx.Response(200, headers={"content-type": "application/json"},
                                  stream=HangingStream(release, limit=30, body=body))
        return httpx.Response(200, json=completion_json(json.dumps(LLM_ANSWER)))

    twilio_api.post(OPENAI).mock(side_effect=llm)
    missed(client, post)
    webhook = threading.Thread(target=signed_post, args=(client, "/twilio/sms", sms_params(UNCLEAR)), daemon=True)
    webhook.start()
    try:
        assert first_started.wait(15), "the first LLM call never started"
        # The first processing is still waiting for the model when its claim goes stale: the sweep takes over.
        clock.shift(timedelta(seconds=ctx.settings.stale_processing_seconds + 10))
        client.app.state.worker.run_once()
        wait_for(lambda: inbound(ctx).status == "processed", 15, "the sweep to process the reply")
    finally:
        release.set()
    webhook.join(30)
    assert client.app.state.worker.wait_idle(30)

    row = inbound(ctx)
    assert len(calls) == 2
    assert (row.status, row.attempts) == ("processed", 2)
    with Session(ctx.engine) as session:
        decisions = session.exec(select(Decision).where(Decision.inbound_id == row.id)).all()
    assert [d.action for d in decisions] == ["ask:applied_elsewhere"]
    borrower = to_borrower(twilio_api["messages"])
    assert len(borrower) == 2  # the opener and one question, not two answers to one reply
    assert sent_templates(ctx, twilio_api["messages"], CALLER)[1] == "ask_applied_elsewhere"
    assert to_broker(twilio_api["messages"]) == []  # no false "ready for a callback" alert
