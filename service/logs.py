"""Structured JSON logs with a request id; nothing here ever formats borrower text."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            event["request_id"] = rid
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            event.update(extra)
        if record.exc_info and record.exc_info[0] is not None:
            event["exc_type"] = record.exc_info[0].__name__
        return json.dumps(event, default=str)


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for every `textback.*` logger. Process-wide: only the process entry points call it
    (`textback serve` / `worker`, service.asgi, an in-process `simulate`), never create_app."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("textback")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines would carry phone numbers


def log(logger: logging.Logger, level: int, event: str, **fields: object) -> None:
    """Log one event with structured fields (callers pass masked numbers and redacted text only)."""
    logger.log(level, event, extra={"fields": fields})
