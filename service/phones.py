"""Phone numbers: parse to E.164, and tell the ones we must never text automatically."""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

# What carriers and Twilio put in From when the caller ID is withheld.
_WITHHELD = {"anonymous", "restricted", "unknown", "private", "unavailable", "blocked", "266696687", "+266696687"}
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class InvalidPhone(ValueError):
    """The value is not a usable phone number."""


@lru_cache(maxsize=4096)
def to_e164(raw: str, *, region: str = "US") -> str:
    """Normalize a phone number to E.164, or raise InvalidPhone. Kept per input (a broker's own number is in
    every webhook; a number that is refused is parsed again each time)."""
    text = (raw or "").strip()
    if not text or text.lower() in _WITHHELD:
        raise InvalidPhone("withheld or empty caller ID")
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhone("not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def is_strict_e164(value: str) -> bool:
    """True for a syntactically valid, phonenumbers-valid E.164 string (what the brokers file requires)."""
    if not _E164.match(value or ""):
        return False
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(value, None))
    except phonenumbers.NumberParseException:
        return False


def mask(phone: str | None) -> str:
    """A number fit for logs: country code and last two digits only."""
    if not phone:
        return "-"
    digits = re.sub(r"\D", "", phone)
    if len(digits) <= 4:
        return "*" * len(digits)
    return f"+{digits[:1]}{'*' * (len(digits) - 3)}{digits[-2:]}"
