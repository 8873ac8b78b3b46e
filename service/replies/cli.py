"""`textback classify`: borrower replies as JSON lines in, one `ReplyAnalysis` JSON line out per input line.

Input, one object a line::

    {"text": "refi asap pls", "received_at": "2025-11-14T17:05:00Z"}

`received_at` is optional (default: now, UTC); a time without an offset is read as UTC. Other keys are
errors, so a misspelt `recieved_at` cannot silently become "now". A line that cannot be read gets
`{"error": "line N: ..."}` in its place (the message never repeats the line's content) and the command exits 1
after answering every other line. Output line N always answers input line N.

The LLM is used only when `OPENAI_API_KEY` is set and `--no-llm` is not given. It is configured by the
service's own settings (`service.settings.Settings`, read here and nowhere below): `OPENAI_BASE_URL` and
`TEXTBACK_LLM_MODEL` pick the endpoint and the model, `TEXTBACK_LLM_TIMEOUT_SECONDS` bounds each call and
`TEXTBACK_PROMPTS_DIR` holds the prompt. An invalid setting or prompt stops the command with its message.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

from service.errors import TextbackError
from service.replies.classify import build_extractor
from service.replies.classify import classify as classify_reply
from service.settings import Settings, describe_invalid

if TYPE_CHECKING:
    from service.replies.llm import ReplyExtractor
    from service.settings import Settings

INPUT_KEYS = frozenset({"text", "received_at"})


class InputLineError(ValueError):
    """One input line is unusable; the message is safe to print (it never quotes the line)."""


def extractor_from_settings(settings: Settings) -> ReplyExtractor | None:
    """The LLM extractor the service would use with these settings, or None when no API key is set."""
    return build_extractor(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        model=settings.llm_model,
        timeout_s=settings.llm_timeout_seconds,
        prompts_dir=settings.prompts_dir,
    )


def _settings() -> Settings:

    try:
        return Settings()
    except ValidationError as exc:
        raise click.ClickException(describe_invalid(exc)) from None


def parse_line(line: str, *, now: datetime) -> tuple[str, datetime]:
    """The text and received time from one input line, or InputLineError."""
    if not line.strip():
        raise InputLineError("empty line")
    try:
        item: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputLineError(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(item, dict):
        raise InputLineError("expected a JSON object")
    unknown = sorted(set(item) - INPUT_KEYS)
    if unknown:
        # Key names are the caller's, not borrower text; still, cut them short.
        raise InputLineError(f"unknown key(s) {[key[:40] for key in unknown]}; expected text, received_at")
    text = item.get("text")
    if "text" not in item:
        raise InputLineError("missing 'text'")
    if not isinstance(text, str):
        raise InputLineError("'text' must be a string")
    return text, _received_at(item.get("received_at"), now=now)


def _received_at(value: object, *, now: datetime) -> datetime:
    if value is None:
        return now
    if not isinstance(value, str):
        raise InputLineError("'received_at' must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputLineError("'received_at' is not an ISO-8601 date-time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@click.command()
@click.option("--no-llm", is_flag=True, help="Rules only, even when OPENAI_API_KEY is set.")
@click.option(
    "--policies",
    "policies_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The policies directory holding inbound/ rules [default: as serve finds it: TEXTBACK_POLICIES_DIR, "
    "./policies, else the copy shipped with textback].",
)
def classify(no_llm: bool, policies_dir: Path | None) -> None:
    """Analyse borrower replies: JSON lines {"text", "received_at"?} on stdin, one analysis per line out."""
    from service.replies.rules import load_rules  # lazy: `textback --help` stays fast

    settings: Settings | None
    if policies_dir is None:
        settings = read = _settings()
        policies_dir = read.policies_dir
    else:
        settings = None if no_llm else _settings()  # --policies --no-llm: the settings are not needed
    try:
        rules = load_rules(policies_dir)
        extractor = None if settings is None or no_llm else extractor_from_settings(settings)
    except TextbackError as exc:
        raise click.ClickException(str(exc)) from None

    stdin = click.open_file("-")  # stdin as click opens it (click.get_text_stream is deprecated)
    bad_lines = 0
    try:
        for number, line in enumerate(stdin, start=1):
            try:
                text, received_at = parse_line(line, now=datetime.now(UTC))
            except InputLineError as exc:
                bad_lines += 1
                _emit({"error": f"line {number}: {exc}"})
                continue
            analysis = classify_reply(text, received_at, rules=rules, extractor=extractor)
            _emit(analysis.model_dump(mode="json"))
    finally:
        if extractor is not None:
            extractor.close()
    if bad_lines:
        click.echo(f"textback classify: {bad_lines} line(s) could not be read", err=True)
        click.get_current_context().exit(1)


def _emit(payload: dict[str, Any]) -> None:
    click.echo(json.dumps(payload, ensure_ascii=False))
