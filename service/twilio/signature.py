"""X-Twilio-Signature verification against the configured public URL (works behind a TLS proxy)."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator

from service.errors import SignatureError


def public_url_for(public_base: str, path: str, query: str) -> str:
    """The URL Twilio called: the configured public base, the path and the raw query string."""
    url = public_base.rstrip("/") + path
    return f"{url}?{query}" if query else url


def verify(*, token: str, url: str, params: Mapping[str, str], signature: str | None) -> None:
    """Raise SignatureError unless the signature matches the URL and every posted field."""
    if not signature:
        raise SignatureError("missing X-Twilio-Signature")
    if not RequestValidator(token).validate(url, dict(params), signature):
        raise SignatureError("X-Twilio-Signature does not match")


def sign(*, token: str, url: str, params: Mapping[str, str]) -> str:
    """The signature Twilio would send for this request (for the simulator and the tests)."""
    signature: str = RequestValidator(token).compute_signature(url, dict(params))
    return signature
