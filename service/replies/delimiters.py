"""The borrower's reply as data for the LLM: between delimiters nothing in the reply can forge or close.

Two layers, so that neither has to be perfect:

1. `neutralise` replaces anything in the reply that reads like a delimiter (`<borrower_sms...>`,
   `</borrower_sms...>`, with or without its brackets) or like the "Received date:" label with `[removed]`.
   It matches on a *skeleton* of the text, the way a reader (or a model) sees it rather than the way it is
   encoded: HTML entities, percent and backslash escapes decoded (repeatedly, so double encoding does not
   hide anything), compatibility forms folded (NFKD: full-width `＜／`, small forms, mathematical letters),
   zero-width and other invisible format characters and combining marks dropped, case folded, and letters
   from other scripts that look like Latin ones (Cyrillic `о е а р с`, Greek `ο ρ`, small capitals...)
   mapped to them. Each skeleton character remembers which characters of the original it came from, so the
   original text is kept as written except for the spans that were neutralised.
2. `delimiters` makes the real delimiter lines unforgeable: they carry a nonce derived from the data itself
   (`<borrower_sms_3f2a9c01b7de4455>`), so closing the block would take writing the hash of one's own
   message inside it. The nonce is derived, not random, so the same reply always makes the same request
   (eval cassettes replay it byte for byte).
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata

REMOVED = "[removed]"
NONCE_CHARS = 16

# Letters from other scripts (after NFKD and case folding) that read as the Latin letter they map to.
_CONFUSABLES = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "ь": "b", "ъ": "b", "с": "c", "ԁ": "d", "е": "e", "ё": "e", "э": "e", "г": "r",
    "һ": "h", "н": "h", "і": "i", "ї": "i", "ӏ": "l", "ј": "j", "к": "k", "м": "m", "п": "n", "о": "o",
    "р": "p", "ԛ": "q", "ѕ": "s", "т": "t", "у": "y", "ү": "y", "ѡ": "w", "ԝ": "w", "ш": "w", "х": "x",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "u", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w",
    # Latin small capitals and other look-alikes
    "ı": "i", "ȷ": "j", "ɑ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ɢ": "g", "ɡ": "g", "ʜ": "h",
    "ɪ": "i", "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ɾ": "r",
    "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z",
    # Brackets and slashes that NFKD leaves alone
    "‹": "<", "«": "<", "〈": "<", "⟨": "<", "❮": "<", "❬": "<", "⦉": "<", "⧼": "<", "ᐸ": "<",
    "›": ">", "»": ">", "〉": ">", "⟩": ">", "❯": ">", "❭": ">", "⦊": ">", "⧽": ">", "ᐳ": ">",
    "⁄": "/", "∕": "/", "⧸": "/", "╱": "/", "＼": "/", "\\": "/",
})
# Invisible characters that are not in the format (Cf) or combining (Mn, Me) categories.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800")

# Escapes a reader would decode: HTML character references, percent-encoding, backslash escapes.
_ESCAPE = re.compile(
    r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});?"
    r"|%[0-9a-fA-F]{2}"
    r"|\\(?:u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|x[0-9a-fA-F]{2})"
)
_MAX_DECODE_ROUNDS = 4


def _letters(word: str) -> str:
    """`word` with up to two separators (spaces, dots, underscores...) allowed between its letters."""
    return r"[\W_]{0,2}".join(re.escape(letter) for letter in word)


_WORD = _letters("borrower") + r"[\W_]{0,3}" + _letters("sms")
# On the skeleton: an opening or closing delimiter, with or without its brackets and whatever it carries.
DELIMITER_LIKE = re.compile(r"(?:<[\s/]*|/\s*)?" + _WORD + r"(?:[^<>\n]{0,80}>)?")
_DATE_LABEL_LIKE = re.compile(_letters("received") + r"[\W_]{0,3}" + _letters("date") + r"\s*:")


def _decode(piece: str) -> str:
    if piece.startswith("&"):
        return html.unescape(piece)
    if piece.startswith("%"):
        return chr(int(piece[1:], 16))
    try:
        return chr(int(piece[2:], 16))
    except (ValueError, OverflowError):
        return piece


Chars = list[tuple[str, int, int]]  # (character, start, end of the original span it came from)


def _fold(chars: Chars) -> Chars:
    """Compatibility forms folded (NFKD), invisible format characters and combining marks dropped."""
    out: Chars = []
    for char, start, end in chars:
        for part in unicodedata.normalize("NFKD", char):
            if unicodedata.category(part) not in {"Cf", "Mn", "Me"} and part not in _INVISIBLE:
                out.append((part, start, end))
    return out


def _decode_once(chars: Chars) -> Chars | None:
    """Every escape decoded once, or None when there was nothing to decode."""
    joined = "".join(char for char, _, _ in chars)
    out: Chars = []
    last = 0
    for match in _ESCAPE.finditer(joined):
        value = _decode(match.group())
        if value == match.group():
            continue
        out.extend(chars[last : match.start()])
        start, end = chars[match.start()][1], chars[match.end() - 1][2]
        out.extend((char, start, end) for char in value)
        last = match.end()
    if not out and last == 0:
        return None
    return out + chars[last:]


def skeleton(text: str) -> tuple[str, list[tuple[int, int]]]:
    """The text as a reader sees it (see the module docstring), and for each of its characters the span of
    the original text it came from."""
    chars = _fold([(char, index, index + 1) for index, char in enumerate(text)])
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = _decode_once(chars)
        if decoded is None:
            break
        chars = _fold(decoded)
    folded: list[str] = []
    spans: list[tuple[int, int]] = []
    for char, start, end in chars:
        for letter in char.casefold().translate(_CONFUSABLES):
            folded.append(letter)
            spans.append((start, end))
    return "".join(folded), spans


def neutralise(text: str) -> str:
    """`text` with every delimiter look-alike and "Received date:" look-alike replaced by `[removed]`."""
    folded, spans = skeleton(text)
    cuts: list[tuple[int, int]] = []
    for pattern in (DELIMITER_LIKE, _DATE_LABEL_LIKE):
        for match in pattern.finditer(folded):
            if match.end() > match.start():
                cuts.append((spans[match.start()][0], spans[match.end() - 1][1]))
    if not cuts:
        return text
    out: list[str] = []
    position = 0
    for start, end in sorted(cuts):
        if end <= position:
            continue
        out.append(text[position : max(start, position)])
        out.append(REMOVED)
        position = end
    out.append(text[position:])
    return "".join(out)


def delimiters(data: str) -> tuple[str, str]:
    """The opening and closing delimiter lines for this (already neutralised) data."""
    nonce = hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()[:NONCE_CHARS]
    return f"<borrower_sms_{nonce}>", f"</borrower_sms_{nonce}>"
