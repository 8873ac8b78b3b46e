"""X-Twilio-Signature verification against the configured public URL (works behind a TLS proxy).

A signature that does not match is logged at WARNING once per path in a process, with the URL it was checked
against (never the token or the signature) and what to check: after that, only counted at DEBUG. A wrong
TEXTBACK_PUBLIC_URL refuses every webhook, and one line per path says why without flooding the log."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping
from urllib.parse import urlsplit

from twilio.request_validator import RequestValidator

from service.errors import SignatureError
from service.logs import log
from service.redact import redact

logger = logging.getLogger("textback.signature")

MISMATCH_HINT = ("TEXTBACK_PUBLIC_URL must be exactly the scheme and host Twilio calls (behind a proxy, the public "
                 "https URL); check the number's webhook URL in the Twilio console")

_mismatches: Counter[str] = Counter()  # per path, this process
_mismatches_lock = threading.Lock()


def public_url_for(public_base: str, path: str, query: str) -> str:
    """The URL Twilio called: the configured public base, the path and the raw query string."""
    url = public_base.rstrip("/") + path
    return f"{url}?{query}" if query else url


def _log_mismatch(url: str) -> None:
    parts = urlsplit(url)
    path = parts.path
    # The query is the caller's to write: its long digit runs (a phone number) are masked.
    url = parts._replace(query=redact(parts.query, keep=200) if parts.query else "").geturl()
    with _mismatches_lock:
        _mismatches[path] += 1
        count = _mismatches[path]
    if count == 1:
        log(logger, logging.WARNING, "webhook signature does not match", path=path, checked_url=url,
            hint=MISMATCH_HINT)
    else:
        log(logger, logging.DEBUG, "webhook signature does not match", path=path, mismatches=count)


def verify(*, token: str, url: str, params: Mapping[str, str], signature: str | None) -> None:
    """Raise SignatureError unless the signature matches the URL and every posted field."""
    if not signature:
        raise SignatureError("missing X-Twilio-Signature")
    if not RequestValidator(token).validate(url, dict(params), signature):
        _log_mismatch(url)
        raise SignatureError("X-Twilio-Signature does not match")


def sign(*, token: str, url: str, params: Mapping[str, str]) -> str:
    """The signature Twilio would send for this request (for the simulator and the tests)."""
    signature: str = RequestValidator(token).compute_signature(url, dict(params))
    return signature
