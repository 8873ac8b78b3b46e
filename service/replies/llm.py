"""The LLM fallback: one structured-output call that reads a borrower reply the rules could not settle.

The model answers with enums and booleans only (`LLMExtraction`, a strict JSON schema); it never writes text
that could reach a borrower. The borrower's reply is sent as data between delimiters it cannot forge
(`service.replies.delimiters`), with the date it was received and nothing else about the borrower;
`store=False`.

One hard wall-clock deadline bounds each extraction, retries and waits included: `timeout_s` from the call
to the answer or the failure. The call runs on the async SDK in the extractor's own event-loop thread under
`asyncio.timeout_at`, which cancels whatever is in flight when the deadline comes (a connect, a body that
trickles in a few bytes at a time, a wait before a retry). The SDK's own retries are off (they would honour a
`Retry-After` of up to two minutes); `max_retries` (0 or 1) retries a 429, a 408/409, a 5xx, a timeout or a
connection failure only when the wait it asks for (`Retry-After`, else a short backoff) still leaves time for
another attempt before the deadline; otherwise the call fails at once with the reason it had.

Every way the call can go wrong raises one exception, `LLMFailure` (service.replies.extraction, which lists
the reasons). The caller (`classify`) turns any failure into "a human takes it".

What the model may answer (`LLMExtraction`), the failure type and the prompt check live in
service.replies.extraction, which does not import the openai SDK; this module is the call itself.

The SDK's parse path is lazy: the first call in a process imports its chat resources and builds the response
format's schema and generic models, ~0.65 s of CPU on an idle machine and several seconds on a loaded one,
which a first reply would spend out of its deadline. Building the first extractor in a process runs that path
once against a canned answer through an in-process transport (nothing leaves the machine), so every reply's
deadline is spent on the endpoint.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import logging
import math
import random
import threading
import time
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
from pydantic import ValidationError

from service import metrics
from service.prompts import PROMPTS_DIR, Prompt
from service.replies.analysis import LoanType, Timeline
from service.replies.delimiters import delimiters, neutralise
from service.replies.extraction import LLMExtraction, LLMFailure, load_extraction_prompt
from service.replies.llm_fake import completion_json

logger = logging.getLogger("textback.replies.llm")

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
MAX_REPLY_CHARS = 1600  # Twilio's limit for one inbound message; anything longer is cut, never sent whole
MAX_COMPLETION_TOKENS = 256  # the JSON answer is ~80 tokens; a longer answer is a failure (`length`)
MIN_ATTEMPT_SECONDS = 0.5  # a retry is only worth making with at least this long left before the deadline
WATCHDOG_GRACE_SECONDS = 1.0  # the caller's own bound on top of the deadline, should the event loop stall
RETRYABLE_STATUS = frozenset({408, 409})  # and every 5xx; 429 is `rate_limited`

_WARM_BASE_URL = "http://textback-warm-up.invalid/v1"  # never dialled: the warm-up's transport is in-process
_warm_lock = threading.Lock()
_warmed = threading.Event()  # set once the parse path has run in this process

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_T = TypeVar("_T")

class _RedactRequestBodies(logging.Filter):
    """Drop the request body from the SDK's "Request options" debug record: it holds the borrower's text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict) and "json_data" in record.args:
            record.args = {**record.args, "json_data": "<redacted>"}
        return True


def _install_log_redaction() -> None:
    sdk_logger = logging.getLogger("openai._base_client")
    if not any(isinstance(existing, _RedactRequestBodies) for existing in sdk_logger.filters):
        sdk_logger.addFilter(_RedactRequestBodies())


_install_log_redaction()


class _Retryable(Exception):
    """One attempt failed in a way a second attempt might not; `wait` is what the server asked for."""

    def __init__(self, failure: LLMFailure, wait: float | None = None) -> None:
        super().__init__(failure.reason)
        self.failure = failure
        self.wait = wait


class _EventLoopThread:
    """One asyncio event loop in a daemon thread, started on first use; coroutines are submitted from any
    thread and awaited there with a concurrent Future."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def close(self, last: Coroutine[Any, Any, object] | None = None) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            if last is not None:
                last.close()
            return
        if last is not None:
            try:
                asyncio.run_coroutine_threadsafe(last, loop).result(timeout=5)
            except Exception as exc:  # closing is best effort
                logger.warning("llm client close failed", extra={"fields": {"exc_type": type(exc).__name__}})
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()


class ReplyExtractor:
    """Calls an OpenAI-compatible chat-completions endpoint to read one reply into an `LLMExtraction`.

    `extract` is synchronous and thread-safe; the HTTP work happens on the extractor's own event loop (see
    the module docstring). `http_client` (an `httpx.AsyncClient`) is the test seam (respx, eval cassettes).
    `max_retries` is 0 or 1, and a retry is only made when it fits in the deadline.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        model: str,
        timeout_s: float = 8.0,
        max_retries: int = 1,
        http_client: httpx.AsyncClient | None = None,
        prompts_dir: Path = PROMPTS_DIR,
    ) -> None:
        if max_retries not in (0, 1):
            raise ValueError("max_retries must be 0 or 1")
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError("timeout_s must be a positive number of seconds")
        self.prompt: Prompt = load_extraction_prompt(prompts_dir)
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            # Passed explicitly so the SDK never falls back to reading OPENAI_BASE_URL itself.
            base_url=base_url or DEFAULT_OPENAI_BASE_URL,
            timeout=httpx.Timeout(timeout_s, connect=min(2.0, timeout_s)),
            max_retries=0,  # ours, below: the SDK's would wait out a Retry-After of up to two minutes
            http_client=http_client,
        )
        self._loop = _EventLoopThread("textback-llm-io")
        self._warm_parse_path()

    @property
    def prompt_name(self) -> str:
        return self.prompt.name

    @property
    def prompt_version(self) -> str:
        """The prompt's version with its content hash, e.g. `1.0.0+3f2a9c01b7de`."""
        return self.prompt.version_tag

    def messages(self, text: str, received_at: datetime) -> list[dict[str, str]]:
        """The chat messages sent for one reply (the reply as data between delimiters it cannot forge)."""
        day = received_at.date()
        data = _as_data(text)
        begin, end = delimiters(data)
        return self.prompt.render(
            begin=begin,
            end=end,
            received_date=f"{day.isoformat()} ({_WEEKDAYS[day.weekday()]})",
            reply_text=data,
        )

    def extract(self, text: str, received_at: datetime) -> LLMExtraction:
        """Read one reply within `timeout_s`; raises LLMFailure on any failure, never returns a partial answer."""
        started = time.monotonic()
        deadline = started + self.timeout_s
        future = self._loop.submit(self._extract(text, received_at, deadline))
        try:
            extraction = future.result(timeout=self.timeout_s + WATCHDOG_GRACE_SECONDS)
        except concurrent.futures.TimeoutError:
            future.cancel()
            failure = LLMFailure("timeout", detail="watchdog")
        except LLMFailure as caught:
            failure = caught
        else:
            logger.info(
                "llm extraction ok",
                extra={
                    "fields": {
                        "model": self.model,
                        "prompt_version": self.prompt_version,
                        "elapsed_ms": round((time.monotonic() - started) * 1000),
                    }
                },
            )
            metrics.llm_call("ok", time.monotonic() - started)
            return extraction
        metrics.llm_call(failure.reason, time.monotonic() - started)
        logger.warning(
            "llm extraction failed",
            extra={"fields": {"reason": failure.reason, "detail": failure.detail, "model": self.model,
                              "elapsed_ms": round((time.monotonic() - started) * 1000)}},
        )
        raise failure from None

    def close(self) -> None:
        self._loop.close(self._client.close())

    def _warm_parse_path(self) -> None:
        """Once per process: one parse of a canned answer through the SDK on this extractor's loop (see the
        module docstring). A failure is logged and left to the first real call, which fails closed."""
        with _warm_lock:
            if _warmed.is_set():
                return
            started = time.monotonic()
            try:
                self._loop.submit(_parse_canned(self.model)).result(timeout=30)
            except Exception as exc:  # the real call reports its own failure; start-up goes on
                logger.warning("llm warm-up failed", extra={"fields": {"exc_type": type(exc).__name__}})
                return
            _warmed.set()
            logger.info("llm parse path warmed",
                        extra={"fields": {"elapsed_ms": round((time.monotonic() - started) * 1000)}})

    async def _extract(self, text: str, received_at: datetime, deadline: float) -> LLMExtraction:
        messages = self.messages(text, received_at)
        try:
            # The event loop's clock is time.monotonic(), the clock `deadline` was taken from.
            async with asyncio.timeout_at(deadline):
                return await self._attempts(messages, deadline)
        except TimeoutError:
            raise LLMFailure("timeout", detail=f"deadline {self.timeout_s:g}s") from None

    async def _attempts(self, messages: list[dict[str, str]], deadline: float) -> LLMExtraction:
        attempt = 0
        while True:
            try:
                return await self._call(messages)
            except _Retryable as retry:
                attempt += 1
                if attempt > self.max_retries:
                    raise retry.failure from None
                wait = retry.wait if retry.wait is not None else _backoff(attempt)
                left = deadline - time.monotonic()
                if wait + MIN_ATTEMPT_SECONDS > left:
                    failure = retry.failure
                    hint = f"retry in {wait:.3g}s, {max(left, 0):.3g}s left"
                    raise LLMFailure(failure.reason, detail=f"{failure.detail}; {hint}" if failure.detail
                                     else hint) from None
                await asyncio.sleep(wait)

    async def _call(self, messages: list[dict[str, str]]) -> LLMExtraction:
        # Every `raise ... from None` below is deliberate: the SDK's and pydantic's exceptions carry the
        # model's output (which can echo the borrower's words), and a chained traceback would log it.
        try:
            completion = await self._client.chat.completions.parse(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                response_format=LLMExtraction,
                temperature=self.prompt.temperature,
                max_completion_tokens=MAX_COMPLETION_TOKENS,
                store=False,
            )
        except openai.LengthFinishReasonError:
            raise LLMFailure("length") from None
        except openai.ContentFilterFinishReasonError:
            raise LLMFailure("refusal", detail="content_filter") from None
        except openai.RateLimitError as exc:
            raise _Retryable(LLMFailure("rate_limited", detail="429"), _retry_after(exc.response)) from None
        except openai.APITimeoutError:  # a subclass of APIConnectionError: keep it first
            raise _Retryable(LLMFailure("timeout")) from None
        except openai.APIConnectionError as exc:
            raise _Retryable(LLMFailure("connection", detail=type(exc.__cause__ or exc).__name__)) from None
        except openai.APIStatusError as exc:
            failure = LLMFailure("api_error", detail=str(exc.status_code))
            if exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500:
                raise _Retryable(failure, _retry_after(exc.response)) from None
            raise failure from None
        except openai.OpenAIError as exc:
            raise LLMFailure("api_error", detail=type(exc).__name__) from None
        except ValidationError as exc:
            raise _validation_failure(exc) from None
        except Exception as exc:  # the SDK does not validate a 200 body; see below
            # A 200 whose body is not a chat completion (an HTML page from a proxy, JSON without `choices`)
            # surfaces from the SDK's parser as AttributeError/TypeError. The contract is "never crash".
            raise LLMFailure("api_error", detail=f"malformed response ({type(exc).__name__})") from None

        if not completion.choices:
            raise LLMFailure("api_error", detail="no choices")
        message = completion.choices[0].message
        if message.refusal:
            raise LLMFailure("refusal")
        if message.parsed is None:
            raise LLMFailure("invalid_json", detail="empty content")
        return message.parsed


async def _parse_canned(model: str) -> LLMExtraction:
    """The SDK's parse path end to end over an in-process transport that answers one canned completion."""
    canned = LLMExtraction(
        loan_type=LoanType.UNKNOWN, timeline=Timeline.UNKNOWN, applied_elsewhere=None, wrong_number=False,
        not_interested=False, opt_out_request=False, callback_requested=False, handoff_reasons=[],
    )
    body = completion_json(canned.model_dump_json(), model=model)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    async with httpx.AsyncClient(transport=transport) as http_client:
        client = openai.AsyncOpenAI(api_key="warm-up", base_url=_WARM_BASE_URL, max_retries=0,
                                    http_client=http_client)
        completion = await client.chat.completions.parse(
            model=model,
            messages=[{"role": "user", "content": "warm-up"}],
            response_format=LLMExtraction,
            temperature=0,
            max_completion_tokens=MAX_COMPLETION_TOKENS,
            store=False,
        )
    parsed = completion.choices[0].message.parsed
    if parsed != canned:
        raise LLMFailure("invalid_json", detail="warm-up answer did not round-trip")
    return parsed


def _backoff(attempt: int) -> float:
    """The wait before retry `attempt` when the server named none: 0.5 s doubling, with jitter."""
    return min(0.5 * 2.0 ** (attempt - 1), 8.0) * (1 - 0.25 * random.random())  # noqa: S311 - jitter


def _retry_after(response: httpx.Response | None) -> float | None:
    """The wait a response asks for (`retry-after-ms`, `retry-after` in seconds or as an HTTP date), if any."""
    if response is None:
        return None
    headers = response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            parsed = email.utils.parsedate_tz(value) if name == "retry-after" else None
            if parsed is None:
                continue
            seconds = email.utils.mktime_tz(parsed) - time.time()
        if math.isfinite(seconds):
            return max(seconds, 0.0)
    return None


def _as_data(text: str) -> str:
    """The reply as it goes between the delimiters: look-alikes of a delimiter or of the "Received date:"
    label neutralised, then cut to MAX_REPLY_CHARS (anything longer is never sent whole)."""
    return neutralise(text)[:MAX_REPLY_CHARS]


def _validation_failure(exc: ValidationError) -> LLMFailure:
    errors = exc.errors(include_input=False, include_url=False)
    if any(error["type"] == "json_invalid" for error in errors):
        return LLMFailure("invalid_json")
    # Only field names from the schema: an extra key is named by the model, so it is never echoed.
    fields = sorted(
        str(error["loc"][0]) if error["loc"] and error["loc"][0] in LLMExtraction.model_fields else "(other)"
        for error in errors
    )
    fields = sorted(set(fields))
    kinds = sorted({error["type"] for error in errors})
    return LLMFailure("schema_violation", detail=f"{','.join(kinds)} at {','.join(fields)}")
