"""The LLM fallback: one structured-output call that reads a borrower reply the rules could not settle.

The model answers with enums and booleans only (`LLMExtraction`, a strict JSON schema); it never writes text
that could reach a borrower. The borrower's reply is sent as data between fixed delimiters, with the date it
was received and nothing else about the borrower; `store=False`.

Every way the call can go wrong raises one exception, `LLMFailure`, whose `reason` is one of:

    api_error         the endpoint answered with an error status (after the one retry for 5xx), or a
                      200 whose body is not a chat completion (HTML from a proxy, no choices)
    rate_limited      HTTP 429 (after the one retry)
    timeout           no answer within `timeout_s` (after the one retry)
    connection        could not connect (after the one retry)
    refusal           the model refused (`message.refusal`) or the content filter stopped it
    length            the answer was cut off (`finish_reason == "length"`)
    invalid_json      the content is not JSON (garbage, truncated JSON, or empty content)
    schema_violation  JSON that breaks the schema: a value outside an enum, an extra field, a missing field
                      (a partial object), a wrong type

`detail` adds a short machine-made hint (HTTP status, exception class, failing field names); neither the
reason nor the detail ever contains borrower or model text, so both are safe to log and store. The caller
(`classify`) turns any failure into "a human takes it".
"""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime
from enum import StrEnum
from typing import Literal, get_args

import httpx
import openai
from pydantic import BaseModel, ConfigDict, ValidationError

from service.errors import TextbackError
from service.prompts import Prompt, PromptError, load_prompt
from service.replies.analysis import LoanType, Timeline

logger = logging.getLogger("textback.replies.llm")

PROMPT_NAME = "reply_extraction"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
BEGIN = "<borrower_sms>"
END = "</borrower_sms>"
MAX_REPLY_CHARS = 1600  # Twilio's limit for one inbound message; anything longer is cut, never sent whole
MAX_COMPLETION_TOKENS = 256  # the JSON answer is ~80 tokens; a longer answer is a failure (`length`)

_DELIMITER_LOOKALIKE = re.compile(r"<\s*/?\s*borrower[\s_-]*sms\b[^>]*>", re.IGNORECASE)
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

FailureReason = Literal[
    "api_error",
    "rate_limited",
    "timeout",
    "connection",
    "refusal",
    "length",
    "invalid_json",
    "schema_violation",
]
FAILURE_REASONS: frozenset[str] = frozenset(get_args(FailureReason))


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


class LLMFailure(TextbackError):
    """The LLM could not give a usable answer; `reason` is one of FAILURE_REASONS (see the module docstring)."""

    def __init__(self, reason: FailureReason, *, detail: str | None = None) -> None:
        if reason not in FAILURE_REASONS:
            raise ValueError(f"unknown LLM failure reason {reason!r}")
        self.reason: FailureReason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class LLMHandoffReason(StrEnum):
    """The handoff reasons the model may propose. rate_lock, closing and deadline are decided by rules only."""

    RATE_OR_TERMS = "rate_or_terms"
    PREAPPROVAL = "preapproval"
    HUMAN_REQUEST = "human_request"
    COMPLAINT = "complaint"


class LLMExtraction(BaseModel):
    """The model's whole answer. Strict: every field required, nothing extra, no free text."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    loan_type: LoanType
    timeline: Timeline
    applied_elsewhere: bool | None
    wrong_number: bool
    not_interested: bool
    opt_out_request: bool
    callback_requested: bool
    handoff_reasons: list[LLMHandoffReason]


class ReplyExtractor:
    """Calls an OpenAI-compatible chat-completions endpoint to read one reply into an `LLMExtraction`.

    `http_client` is the test seam (respx, eval cassettes). `max_retries` is the SDK's: 0 or 1, since one
    retry is the most a borrower waiting on a webhook can afford.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        model: str,
        timeout_s: float = 8.0,
        max_retries: int = 1,
        http_client: httpx.Client | None = None,
    ) -> None:
        if max_retries not in (0, 1):
            raise ValueError("max_retries must be 0 or 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        prompt = load_prompt(PROMPT_NAME)
        if prompt.output_schema != LLMExtraction.__name__:
            raise PromptError(
                f"{prompt.path.name}: output_schema is {prompt.output_schema!r}, "
                f"expected {LLMExtraction.__name__!r}"
            )
        self.prompt: Prompt = prompt
        self.model = model
        self._client = openai.OpenAI(
            api_key=api_key,
            # Passed explicitly so the SDK never falls back to reading OPENAI_BASE_URL itself.
            base_url=base_url or DEFAULT_OPENAI_BASE_URL,
            timeout=httpx.Timeout(timeout_s, connect=min(2.0, timeout_s)),
            max_retries=max_retries,
            http_client=http_client,
        )

    @property
    def prompt_name(self) -> str:
        return self.prompt.name

    @property
    def prompt_version(self) -> str:
        """The prompt's version with its content hash, e.g. `1.0.0+3f2a9c01b7de`."""
        return self.prompt.version_tag

    def messages(self, text: str, received_at: datetime) -> list[dict[str, str]]:
        """The chat messages sent for one reply (the reply as data between BEGIN and END)."""
        day = received_at.date()
        return self.prompt.render(
            begin=BEGIN,
            end=END,
            received_date=f"{day.isoformat()} ({_WEEKDAYS[day.weekday()]})",
            reply_text=_as_data(text),
        )

    def extract(self, text: str, received_at: datetime) -> LLMExtraction:
        """Read one reply; raises LLMFailure on any failure, never returns a partial answer."""
        started = time.perf_counter()
        try:
            extraction = self._call(text, received_at)
        except LLMFailure as failure:
            logger.warning(
                "llm extraction failed",
                extra={"fields": {"reason": failure.reason, "detail": failure.detail, "model": self.model}},
            )
            raise
        logger.info(
            "llm extraction ok",
            extra={
                "fields": {
                    "model": self.model,
                    "prompt_version": self.prompt_version,
                    "elapsed_ms": round((time.perf_counter() - started) * 1000),
                }
            },
        )
        return extraction

    def close(self) -> None:
        self._client.close()

    def _call(self, text: str, received_at: datetime) -> LLMExtraction:
        # Every `raise ... from None` below is deliberate: the SDK's and pydantic's exceptions carry the
        # model's output (which can echo the borrower's words), and a chained traceback would log it.
        try:
            completion = self._client.chat.completions.parse(
                model=self.model,
                messages=self.messages(text, received_at),  # type: ignore[arg-type]
                response_format=LLMExtraction,
                temperature=self.prompt.temperature,
                max_completion_tokens=MAX_COMPLETION_TOKENS,
                store=False,
            )
        except openai.LengthFinishReasonError:
            raise LLMFailure("length") from None
        except openai.ContentFilterFinishReasonError:
            raise LLMFailure("refusal", detail="content_filter") from None
        except openai.RateLimitError:
            raise LLMFailure("rate_limited", detail="429") from None
        except openai.APITimeoutError:  # a subclass of APIConnectionError: keep it first
            raise LLMFailure("timeout") from None
        except openai.APIConnectionError as exc:
            raise LLMFailure("connection", detail=type(exc.__cause__ or exc).__name__) from None
        except openai.APIStatusError as exc:
            raise LLMFailure("api_error", detail=str(exc.status_code)) from None
        except openai.OpenAIError as exc:
            raise LLMFailure("api_error", detail=type(exc).__name__) from None
        except ValidationError as exc:
            raise _validation_failure(exc) from None
        except Exception as exc:  # noqa: BLE001 - the SDK does not validate a 200 body; see below
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


def _as_data(text: str) -> str:
    """The reply as it goes between the delimiters: cut to MAX_REPLY_CHARS, delimiter look-alikes removed."""
    return _DELIMITER_LOOKALIKE.sub("[removed]", text[:MAX_REPLY_CHARS])


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
