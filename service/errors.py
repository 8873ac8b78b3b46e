"""textback's exceptions, in one small module to avoid import loops.

TextbackError
├── ConfigError          settings or brokers file are wrong; start-up stops with the message
│   └── StartupError     a start-up check failed (port in use, live mode's public URL, database unreachable)
├── PolicyError          a file under policies/ is invalid (names the file and the field)
├── NumberBusy           a send could not take its number's opt-out lock in time; retried later
├── SeedRefused          `textback demo seed` will not fill this database (credentials, a CRM, real leads)
├── RetentionRefused     a purge period shorter than the retention policy's, not forced with a reason
├── MigrationRefused     the database cannot be upgraded as it is (duplicates, unknown revision); unchanged
└── WebhookError         a Twilio webhook is unacceptable; carries the HTTP status to answer with
    ├── SignatureError   missing or wrong X-Twilio-Signature (403)
    ├── BadRequestError  malformed or unknown input (400 / 404 / 413 / 422)
    ├── NotStoredError   the webhook could not be stored anywhere right now; Twilio retries it (503)
    └── ApiError         an API or console request refused (401, 403, 404, 409, 415, 422, 429), with details
                         and headers (Retry-After)
        └── GuardNotReady  the output guard loading after a restart failed or took too long: nothing is
                           stored, the work is tried again (Twilio's fallback, the queue) (503)

service.app.error_to_response is the one place these (and database errors) become HTTP answers.
"""

from __future__ import annotations


class TextbackError(Exception):
    """Base class for every error textback raises on purpose."""


class ConfigError(TextbackError):
    """The configuration (settings or brokers file) is invalid."""


class StartupError(ConfigError):
    """Start-up cannot go on (service.startup_errors); the message names the setting or option and the fix."""


class PolicyError(TextbackError):
    """A policy file is invalid; the message names the file, the line (when known) and the field."""

    def __init__(self, path: str, field: str | None, message: str, *, line: int | None = None) -> None:
        self.path = path
        self.field = field
        self.message = message
        self.line = line
        where = f"{path}:{line}" if line is not None else path
        where = f"{where}: {field}" if field else where
        super().__init__(f"{where}: {message}")


class NumberBusy(TextbackError):
    """A send could not take its number's opt-out lock in time (an opt-out change held it): retry it later."""


class SeedRefused(TextbackError):
    """`textback demo seed` will not run here: it would text real people, feed a CRM demo leads, or mix demo
    history with real leads. The message says which, and what to do instead."""


class RetentionRefused(TextbackError):
    """A purge would delete communications the retention policy keeps (policies/retention/retention.yaml), and
    was not forced with a reason; nothing was deleted. The message names the policy file and the minimum."""


class MigrationRefused(TextbackError):
    """The database cannot be brought to this release's schema as it is (rows that would break a unique
    constraint, a revision this release does not know); nothing was changed. The message says what and where."""


class WebhookError(TextbackError):
    """A webhook request that must be refused; `status_code` is what Twilio gets back."""

    status_code = 400

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code


class SignatureError(WebhookError):
    """The request's X-Twilio-Signature is missing or does not match."""

    status_code = 403


class BadRequestError(WebhookError):
    """The request is malformed, oversized or names something unknown."""


class NotStoredError(WebhookError):
    """Neither the database nor the spool could take the webhook: answering 503 makes Twilio retry it."""

    status_code = 503


class ApiError(WebhookError):
    """An API or console request that must be refused (401 sign in, 403 CSRF, 404 not yours, 409, 422...)."""

    def __init__(self, message: str, *, status_code: int, details: object | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.details = details
        self.headers = headers or {}  # e.g. Retry-After on a 429


class GuardNotReady(ApiError):
    """The output guard that a restart loads in the background (service.policy.guard) failed or did not load in
    time: no verdict, so the work is not done and nothing is stored. It is tried again (Twilio's fallback URL
    and the spool, a reply back in the queue, the console's retry) by this process or the next, never stored
    as blocked. The process is stopping meanwhile."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; retry later", status_code=503, headers={"Retry-After": "5"})


# PostgreSQL's SQLSTATEs for a value past its type: numeric_value_out_of_range, datetime_field_overflow.
_OUT_OF_RANGE_STATES = frozenset({"22003", "22008"})


def out_of_range(exc: BaseException) -> bool:
    """A number or date from the request past what can be stored or computed: an OverflowError (SQLite's driver,
    datetime arithmetic) or PostgreSQL refusing the value. Bad input, never a server failure."""
    if isinstance(exc, OverflowError):
        return True
    orig = getattr(exc, "orig", None)  # a SQLAlchemy DBAPIError wraps the driver's error
    return getattr(orig, "sqlstate", None) in _OUT_OF_RANGE_STATES


# The years a date in a request may name: past them a day's end or a time zone's offset cannot be computed
# (9999-12-31), and nothing textback keeps is older than 1970.
DATE_YEARS = (1970, 2999)


def date_out_of_range(text: str, year: int) -> str | None:
    """Why the date `text` (in `year`) is refused, or None when its year is one a request may name."""
    low, high = DATE_YEARS
    return None if low <= year <= high else f"{text!r} is out of range (a date from {low} to {high})"
