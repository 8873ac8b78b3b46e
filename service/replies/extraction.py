"""What the LLM fallback may answer, how it fails, and the prompt written for it; no openai SDK import.

`LLMExtraction` is the model's whole answer: enums and booleans only, strict, so it never carries text that
could reach a borrower. `check_prompt` holds ``prompts/reply_extraction.md`` against it at start-up. The call
itself (deadline, retries, event loop) is service.replies.llm; this module is light so `classify` and the
evals can name these types without paying the ~1.5 s SDK import.

Every way the call can go wrong raises one exception, `LLMFailure`, whose `reason` is one of:

    api_error         the endpoint answered with an error status (after the one retry for 5xx), or a
                      200 whose body is not a chat completion (HTML from a proxy, no choices)
    rate_limited      HTTP 429 (after the one retry, or at once when the Retry-After outlasts the deadline)
    timeout           no answer within the deadline
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

from enum import Enum
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

from service.errors import TextbackError
from service.prompts import PROMPTS_DIR, Prompt, PromptError, load_prompt
from service.replies.analysis import HandoffReason, LoanType, Timeline

PROMPT_NAME = "reply_extraction"
PROMPT_VARIABLES = frozenset({"begin", "end", "received_date", "reply_text"})

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


class LLMFailure(TextbackError):
    """The LLM could not give a usable answer; `reason` is one of FAILURE_REASONS (see the module docstring)."""

    def __init__(self, reason: FailureReason, *, detail: str | None = None) -> None:
        if reason not in FAILURE_REASONS:
            raise ValueError(f"unknown LLM failure reason {reason!r}")
        self.reason: FailureReason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


# The model may propose every handoff reason (rate_lock, closing, deadline and transaction_issue included):
# it can only add reasons to what the rules found, never remove one (see `service.replies.classify.merge`).
LLMHandoffReason = HandoffReason


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


def check_prompt(prompt: Prompt) -> Prompt:
    """Hold a prompt against `LLMExtraction`: the schema it names, the fields its `Fields:` list describes,
    the values it offers for each enum field and the variables it uses. PromptError names the file."""
    where = str(prompt.path)
    if prompt.output_schema != LLMExtraction.__name__:
        raise PromptError(f"{where}: output_schema is {prompt.output_schema!r}, expected {LLMExtraction.__name__!r}")
    listed = list(prompt.listed_fields)
    expected = list(LLMExtraction.model_fields)
    missing = [name for name in expected if name not in listed]
    extra = [name for name in listed if name not in expected]
    repeated = sorted({name for name in listed if listed.count(name) > 1})
    if missing or extra or repeated:
        problems = [f"{label} {names}" for label, names in
                    (("missing", missing), ("not in the schema", extra), ("listed twice", repeated)) if names]
        raise PromptError(f"{where}: the 'Fields:' list disagrees with {LLMExtraction.__name__}: "
                          + "; ".join(problems))
    body = "\n".join(section.template.template for section in prompt.sections)
    for name, values in _enum_values().items():
        unnamed = [value for value in values if f'"{value}"' not in body]
        if unnamed:
            raise PromptError(f"{where}: the prompt never offers {name} value(s) {unnamed} that the schema allows")
    if prompt.variables != PROMPT_VARIABLES:
        raise PromptError(f"{where}: uses variables {sorted(prompt.variables)}, expected {sorted(PROMPT_VARIABLES)}")
    if set(prompt.sections_using("reply_text")) != {"user"}:
        raise PromptError(f"{where}: $reply_text must appear in user sections only")
    return prompt


def load_extraction_prompt(prompts_dir: Path = PROMPTS_DIR) -> Prompt:
    """Load `reply_extraction.md` from `prompts_dir` and check it against the output schema."""
    return check_prompt(load_prompt(PROMPT_NAME, prompts_dir=prompts_dir))


def _enum_values() -> dict[str, list[str]]:
    """For each LLMExtraction field holding an enum (or a list of one), the values the schema allows."""
    out: dict[str, list[str]] = {}
    for name, info in LLMExtraction.model_fields.items():
        annotation: Any = info.annotation
        for candidate in (annotation, *get_args(annotation)):
            if isinstance(candidate, type) and issubclass(candidate, Enum):
                out[name] = [member.value for member in candidate]
    return out
