"""SMS encoding facts: GSM-7 membership and segment counts."""

from __future__ import annotations

_GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = "^{}\\[~]|€\f"
_BASIC = frozenset(_GSM7_BASIC)
_EXT = frozenset(_GSM7_EXTENDED)


def is_gsm7(text: str) -> bool:
    return all(ch in _BASIC or ch in _EXT for ch in text)


def non_gsm7_chars(text: str) -> list[str]:
    return sorted({ch for ch in text if ch not in _BASIC and ch not in _EXT})


def segments(text: str) -> int:
    """How many SMS segments the text takes (GSM-7: 160/153; otherwise UCS-2: 70/67 code units)."""
    if is_gsm7(text):
        units = sum(2 if ch in _EXT else 1 for ch in text)
        single, multi = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
    if units <= single:
        return 1
    return -(-units // multi)
