"""Redaction for logs: borrower text never reaches a log as written."""

from __future__ import annotations

import re

from service.sensitive import mask_sensitive

_LONG_NUMBER = re.compile(r"\d(?:[\s.-]?\d){3,}")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")


def redact(text: str | None, *, keep: int = 0) -> str:
    """Mask sensitive numbers (service.sensitive), every run of 4+ digits and email addresses.

    With keep > 0 the result is also cut to that many characters; keep=0 returns only the length.
    """
    if text is None:
        return "-"
    if keep <= 0:
        return f"<{len(text)} chars>"
    masked = _EMAIL.sub("<email>", _LONG_NUMBER.sub(lambda m: "#" * len(m.group()), mask_sensitive(text)))
    return masked[:keep] + ("..." if len(masked) > keep else "")
