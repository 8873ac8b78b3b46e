"""Structured JSON logs with a request id; nothing here ever formats borrower text."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from service.phones import mask

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


# A number that may be a phone: 7+ digits, maybe with +, spaces, dots, dashes or brackets, not inside a word
# (a SID, a hash). Masked when it has 10+ digits, or 7+ after a '+' (a date's 8 digits are left alone).
_NUMBER = re.compile(r"(?<![A-Za-z0-9])\+?\(?\d[\d ().-]{5,}\d(?![A-Za-z0-9])")
_LINK_TOKEN = re.compile(r"(/l/)[^/?#\s]+")  # an alert's sign-in link: the path is the secret


def _mask_number(match: re.Match[str]) -> str:
    found = match.group()
    digits = sum(c.isdigit() for c in found)
    return mask(found) if digits >= 10 or (found.startswith("+") and digits >= 7) else found


def mask_phones(text: str) -> str:
    """`text` with every phone number in it masked as service.phones.mask masks one."""
    return _NUMBER.sub(_mask_number, text)


def mask_target(target: str) -> str:
    """A request's path and query fit for a log: percent-decoded (%2B14155550123 is a number too), phone numbers
    masked, a sign-in link's token replaced."""
    return mask_phones(_LINK_TOKEN.sub(r"\1<token>", unquote(target)))


class UvicornJsonFormatter(JsonFormatter):
    """uvicorn's error and access logs as textback's JSON lines: an access line becomes the event "request"
    with method, path (masked), status and client; any other line has its phone numbers masked."""

    def format(self, record: logging.LogRecord) -> str:
        copy = logging.makeLogRecord(record.__dict__)
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            client, method, target, version, status = args
            copy.fields = {"method": method, "path": mask_target(str(target)), "status": status,
                           "http_version": version, "client": client}
            copy.msg = "request"
        else:
            copy.msg = mask_phones(record.getMessage())
        copy.args = None
        return super().format(copy)


def uvicorn_log_config(level: str = "INFO", *, access_log: bool = True) -> dict[str, Any]:
    """uvicorn's `log_config`: its error log (at `level`, never below warning: its info lines repeat what serve
    prints) and, when `access_log`, one access line per request at info, both as JSON lines on stderr through
    UvicornJsonFormatter. Pass it with no `log_level` (which would override these levels)."""
    error_level = max(logging.getLevelNamesMapping().get(level.upper(), logging.INFO), logging.WARNING)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "service.logs.UvicornJsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": error_level, "propagate": False},
            "uvicorn.error": {"level": error_level},
            # No handler at all when off: uvicorn then skips formatting access lines altogether.
            "uvicorn.access": {"handlers": ["stderr"] if access_log else [], "level": "INFO",
                               "propagate": False},
        },
    }
