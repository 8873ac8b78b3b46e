"""One hard wall-clock deadline per LLM call: retries, Retry-After waits and a slow body all fit inside it.

The real openai SDK over its own HTTP client; respx answers as the endpoint would, including bodies that
arrive a few bytes at a time or never. Each call runs under a watchdog so that a call that ignores its
deadline fails the test quickly instead of holding it for minutes.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import respx

from service.replies.extraction import LLMFailure
from service.replies.llm import ReplyExtractor
from service.replies.llm_fake import completion_json, error_json
from tests.llm_helpers import HangingStream, TrickleStream
from tests.test_reply_llm import BASE_URL, COMPLETIONS, RECEIVED, TEXT, answer

SLACK = 1.5  # generous: the box is shared; this bounds correctness, it is not a performance claim


def within(seconds: float, call: Callable[[], Any]) -> dict[str, Any]:
    """Run `call` in a daemon thread; its result or error and elapsed time, or fail after `seconds`."""
    box: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            box["result"] = call()
        except BaseException as exc:  # handed to the test
            box["error"] = exc
        box["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"the extraction was still running after {seconds} s: the deadline did not hold")
    return box


def make_extractor(timeout_s: float) -> ReplyExtractor:
    # No http_client: the SDK's own client, as the service uses it (respx intercepts its transport).
    return ReplyExtractor(api_key="sk-test-not-a-real-key", base_url=BASE_URL, model="gpt-4o-mini",
                          timeout_s=timeout_s, max_retries=1)


@pytest.fixture
def extractors() -> Iterator[Callable[[float], ReplyExtractor]]:
    made: list[ReplyExtractor] = []

    def make(timeout_s: float) -> ReplyExtractor:
        made.append(make_extractor(timeout_s))
        return made[-1]

    yield make
    for extractor in made:
        extractor.close()


def failure(box: dict[str, Any]) -> LLMFailure:
    error = box.get("error")
    assert isinstance(error, LLMFailure), f"expected LLMFailure, got {box!r}"
    return error


def retry_after_date(seconds: float) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda: {"retry-after": "118"}, id="retry-after-seconds"),
        pytest.param(lambda: {"retry-after-ms": "118000"}, id="retry-after-ms"),
        pytest.param(lambda: {"retry-after": retry_after_date(118)}, id="retry-after-http-date"),
    ],
)
def test_extract_reply_429_long_retry_after_fails_at_once_as_rate_limited(
    extractors: Callable[[float], ReplyExtractor], respx_mock: respx.MockRouter,
    headers: Callable[[], dict[str, str]],
) -> None:
    route = respx_mock.post(COMPLETIONS).respond(
        429, json=error_json("Rate limit reached", "requests", "rate_limit_exceeded"), headers=headers())
    # A deadline far from the first request's own cost on a starved machine (a 2 s one was once used up by the
    # request itself, which then failed as a timeout), and still far below the 118 s asked.
    extractor = extractors(10.0)

    box = within(10.0 + SLACK, lambda: extractor.extract(TEXT, RECEIVED))

    assert failure(box).reason == "rate_limited"
    assert box["elapsed"] < 5.0  # neither slept nor waited out its deadline
    assert route.call_count == 1  # waiting 118 s cannot fit in a 10 s deadline: no sleep, no retry


def test_extract_reply_retry_after_longer_than_remaining_never_sleeps(
    extractors: Callable[[float], ReplyExtractor], respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post(COMPLETIONS).respond(
        503, json=error_json("Overloaded", "server_error"), headers={"retry-after": "3.5"})
    extractor = extractors(3.0)

    box = within(3.0 + SLACK, lambda: extractor.extract(TEXT, RECEIVED))

    assert failure(box).reason == "api_error"
    assert box["elapsed"] < 3.5  # it never slept the 3.5 s it was asked to wait
    assert route.call_count == 1


def test_extract_reply_short_retry_after_retries_within_deadline(
    extractors: Callable[[float], ReplyExtractor], respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post(COMPLETIONS).mock(side_effect=[
        httpx.Response(429, json=error_json("Rate limit reached", "requests"), headers={"retry-after": "0.3"}),
        httpx.Response(200, json=completion_json(answer(loan_type="purchase"))),
    ])
    extractor = extractors(3.0)

    box = within(3.0 + SLACK, lambda: extractor.extract(TEXT, RECEIVED))

    assert box["result"].loan_type == "purchase"
    assert route.call_count == 2
    assert 0.3 <= box["elapsed"] < 3.0 + SLACK


def test_extract_reply_trickled_body_cut_at_deadline(
    extractors: Callable[[float], ReplyExtractor], respx_mock: respx.MockRouter,
) -> None:
    body = json.dumps(completion_json(answer())).encode()  # ~900 bytes, 4 every 50 ms: ~11 s in all
    route = respx_mock.post(COMPLETIONS).mock(side_effect=lambda request: httpx.Response(
        200, headers={"content-type": "application/json"}, stream=TrickleStream(body, chunk=4, interval=0.05)))
    extractor = extractors(1.0)

    box = within(1.0 + SLACK, lambda: extractor.extract(TEXT, RECEIVED))

    assert failure(box).reason == "timeout"
    assert box["elapsed"] < 1.0 + SLACK
    assert route.call_count == 1  # the deadline is spent: no retry


def test_extract_reply_hanging_body_cut_at_deadline(
    extractors: Callable[[float], ReplyExtractor], respx_mock: respx.MockRouter,
) -> None:
    release = threading.Event()
    respx_mock.post(COMPLETIONS).mock(side_effect=lambda request: httpx.Response(
        200, headers={"content-type": "application/json"}, stream=HangingStream(release, limit=30)))
    extractor = extractors(1.0)
    try:
        box = within(1.0 + SLACK, lambda: extractor.extract(TEXT, RECEIVED))
    finally:
        release.set()

    assert failure(box).reason == "timeout"
    assert box["elapsed"] < 1.0 + SLACK


def test_extract_reply_slow_first_attempt_leaves_no_time_for_retry(
    extractors: Callable[[float], ReplyExtractor], respx_mock: respx.MockRouter,
) -> None:
    body = json.dumps(error_json("The server had an error", "server_error")).encode()
    route = respx_mock.post(COMPLETIONS).mock(side_effect=lambda request: httpx.Response(
        500, headers={"content-type": "application/json", "retry-after-ms": "5"},
        stream=TrickleStream(body, chunk=8, interval=0.1)))  # ~1.1 s per attempt
    extractor = extractors(1.5)

    box = within(1.5 + SLACK, lambda: extractor.extract(TEXT, RECEIVED))

    assert failure(box).reason in {"api_error", "timeout"}
    assert box["elapsed"] < 1.5 + SLACK
    assert route.call_count <= 2
