"""What an OpenAI-compatible chat-completions endpoint answers, built once: completion bodies and error bodies.

The tests (through respx), the benchmarks (through a local HTTP server) and anything else that stands in for
the model use these, so the shape the SDK parses lives in one place, next to the client in `replies/llm.py`.
Nothing here decides anything; it only shapes data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

OPENAI_URL = "https://api.openai.com/v1"
COMPLETIONS_PATH = "/chat/completions"
MODEL = "gpt-4o-mini-2024-07-18"


def completions_url(base_url: str = OPENAI_URL) -> str:
    """The chat-completions endpoint under an OpenAI-compatible base URL (`.../v1`)."""
    return base_url.rstrip("/") + COMPLETIONS_PATH


def completion_json(content: str | None, *, finish_reason: str = "stop", refusal: str | None = None,
                    model: str = MODEL) -> dict[str, Any]:
    """A `chat.completion` body shaped like the live API's (as in openai-python's own snapshot tests): one
    choice whose message carries `content` (or a `refusal`), ending for `finish_reason`."""
    return {
        "id": "chatcmpl-AbC123xyzTextback0001",
        "object": "chat.completion",
        "created": 1763139900,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": 512,
            "completion_tokens": 61,
            "total_tokens": 573,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_560af6e559",
    }


def extraction_json(fields: Mapping[str, object], *, model: str = MODEL) -> dict[str, Any]:
    """A completion whose content is these extraction fields as JSON (what the model answers when it obeys)."""
    return completion_json(json.dumps(dict(fields)), model=model)


def error_json(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    """An API error body (`{"error": {...}}`): a 429 carries `("Rate limit reached", "requests",
    "rate_limit_exceeded")`, a 500 `(..., "server_error")`."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
