"""Opaque page cursors for the API's lists: the last id of a page, tagged with what it counts."""

from __future__ import annotations

import base64
import binascii

from service.errors import ApiError


def encode_cursor(kind: str, row_id: int) -> str:
    """The cursor of the page after row `row_id` of a `kind` list ("lead", "delivery")."""
    return base64.urlsafe_b64encode(f"{kind}:{row_id}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> int:
    """The row id a cursor continues after; 400 naming `cursor` for anything this API did not hand out for `kind`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    tag, _, number = raw.partition(":")
    if tag != kind or not number.isdigit() or len(number) > 18:
        raise ApiError("cursor: not a cursor this API handed out (use next_cursor as given)", status_code=400)
    return int(number)
