"""How an outbound text is normalised before the output guard's rules run: disguises undone, one spelling.

`normalize` folds what a writer (or a model) could use to slip a figure past the rules' regexes: look-alike
and full-width characters (NFKC), emoji and keycap digits, non-ASCII digits and signs, fractions, spaced-out
letters and decimals ("s i x", "5 . 9"), leetspeak in rule words ("s1x"), spelled-out numbers ("five point
nine" -> "5.9") and percent-escaped URLs. The output guard (service.policy.guard) and the template checks
(service.templates, service.policy.required_content) read texts through it; it is pure and imports nothing
heavy.
"""

from __future__ import annotations

import re
import unicodedata
from itertools import takewhile
from urllib.parse import unquote

_QUOTES = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"}
)
_URL = re.compile(r"(?P<host>(?:https?://|www\.)[^\s/?#]*)(?P<rest>\S*)", re.IGNORECASE)
_URL_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_URL_SEPARATORS = re.compile(r"[/?=&#+_~;|-]+")
_SPACED_DECIMAL = re.compile(r"(?<=\d)\s*([.,])\s*(?=\d)")
# Marks left after NFKC: emoji variation selectors and the keycap (6\ufe0f\u20e3), strike-through and other
# combining overlays drawn over a digit. Letters with accents are single code points after NFKC and stay.
_DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Me"})
_EMOJI_DIGITS = {"\U0001f51f": "10"}  # keycap ten has no decomposition
# Runs of three or more single characters with one separator between them: "s i x", "r.a.t.e", "H-U-D".
_SPACED_LETTERS = re.compile(
    r"(?<![\w@$])[a-z0-9@$](?P<sep>[ .\-_*])[a-z0-9@$](?:(?P=sep)[a-z0-9@$])+(?![\w@$])", re.IGNORECASE
)
# A word written with look-alike digits or symbols: "s1x", "f1ve", "tw0", "z3r0", "n0", "p3rcent", "s!x".
_LEET_WORD = re.compile(
    r"(?<![\w@$!|])(?=[\w@$!|]*[a-z])(?=[\w@$!|]*[0-9@$!|])[\w@$!|]{2,14}(?![\w@$|])", re.IGNORECASE
)
_LEET = {
    "0": "o", "1": "il", "2": "z", "3": "e", "4": "a", "5": "s", "6": "sgb", "7": "t", "8": "b", "9": "g",
    "@": "a", "$": "s", "!": "i", "|": "il",
}
_LEET_MAX = 4  # look-alike characters per word; more is not a word worth decoding
# The words the outbound rules read. A disguised token is decoded only when it spells one of them, so
# "401k", "3rd", "5pm" and "NMLS123456" are left alone.
_RULE_WORDS = frozenset(
    """zero oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
    sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred
    thousand million grand half quarter eighth eighths percent pct point points pts rate rates apr fixed
    down no nothing money zero cash free fee fees waived closing cost costs lock locked approved guaranteed
    government hud fha""".split()
)


# Percent-like signs NFKC leaves alone: Arabic percent, per mille, per ten thousand (a figure either way).
# The Arabic decimal and thousands separators become "." and ",". (℅, "care of", becomes "c/o" under NFKC.)
_SIGNS = str.maketrans({"\u066a": "%", "\u2030": "%", "\u2031": "%", "\u066b": ".", "\u066c": ",",
                        "\u2044": "/", "\u2215": "/"})
# Vulgar fractions ("6⅛", "5½") and super/subscript ones ("5¹⁄₂") become " 1/8" so they do not fuse with the
# digit before them under NFKC ("5½" -> "5 1/2", never "51/2").
_VULGAR = re.compile("[\u00bc-\u00be\u2150-\u215e\u2189]")
_SUPER_SUB_FRACTION = re.compile("([\u00b9\u00b2\u00b3\u2070-\u2079]+)\u2044([\u2080-\u2089]+)")
# A figure with a letter standing in for a digit: "5.O%", "6.S", "5.9O", "5.l%" (O->0, I/l->1, S->5).
_LETTER_FIGURE = re.compile(r"(?<![\w.,])([0-9OoIlSs]{1,2})([.,])([0-9OoIlSs]{1,3})(?![\w])")
_LETTER_DIGITS = str.maketrans({"O": "0", "o": "0", "I": "1", "l": "1", "S": "5", "s": "5"})

_UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine".split())}
_TEENS = {w: i + 10 for i, w in enumerate(
    "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: (i + 2) * 10 for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_NUMBER_WORD = "|".join(sorted([*_UNITS, *_TEENS, *_TENS, *_SCALES, "oh", "point", "and"], key=len, reverse=True))
_NUMBER_RUN = re.compile(rf"\b(?:{_NUMBER_WORD})(?:[\s-]+(?:{_NUMBER_WORD}))*\b", re.IGNORECASE)
_WORD_DOT_WORD = re.compile(rf"\b({'|'.join(_UNITS)}|{'|'.join(_TEENS)})\.({'|'.join(_UNITS)})\b", re.IGNORECASE)


def _decode_leet(token: str) -> str:
    """The rule word a disguised token spells ("s1x" -> "six"), or the token unchanged."""
    lowered = token.lower()
    if sum(ch in _LEET for ch in lowered) > _LEET_MAX:
        return token
    candidates = [""]
    for ch in lowered:
        choices = _LEET.get(ch, ch) if not ch.isalpha() else ch
        candidates = [c + choice for c in candidates for choice in choices]
    return next((word for word in candidates if word in _RULE_WORDS), token)


def _ascii_digits(ch: str) -> str:
    """Any Unicode digit (Arabic-Indic, dingbat circled) as an ASCII digit; other characters unchanged."""
    if ch in _EMOJI_DIGITS:
        return _EMOJI_DIGITS[ch]
    if ch.isascii():
        return ch
    digit = unicodedata.digit(ch, None)
    return str(digit) if digit is not None else ch


def normalize(text: str) -> str:
    """The text as the rules see it.

    NFKC (fullwidth, superscript and mathematical digits and signs become ASCII); other Unicode digits
    (dingbat circled, Arabic-Indic, keycap ten) become ASCII digits; invisible format characters and
    leftover combining marks removed (zero-width spaces used to split "5.9\u200b9%", the keycap and
    variation selector of "6\ufe0f\u20e3"); curly quotes and dashes straightened; "5 . 99" joined to "5.99";
    spaced-out letters joined ("s i x" -> "six"); rule words written with look-alike digits decoded
    ("s1x" -> "six", "n0" -> "no"); and links decoded first (percent-escapes, path and query split into
    words), so a figure hidden in a booking link ("?promo=6%25APR") is read like any other.
    """
    text = _URL.sub(_decoded_url, text)
    text = _SUPER_SUB_FRACTION.sub(r" \1/\2", text)
    text = _VULGAR.sub(lambda m: " " + unicodedata.normalize("NFKC", m.group(0)), text).translate(_SIGNS)
    text = unicodedata.normalize("NFKC", text).translate(_SIGNS)
    text = "".join(_ascii_digits(ch) for ch in text if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    text = _SPACED_DECIMAL.sub(r"\1", text.translate(_QUOTES))
    text = _LETTER_FIGURE.sub(_letter_figure, _decode_words(text))
    return _spelled_numbers(_WORD_DOT_WORD.sub(r"\1 point \2", text))


def _letter_figure(m: re.Match[str]) -> str:
    """"5.O" -> "5.0" when the token has a real digit and a stand-in letter; anything else unchanged."""
    whole = m.group(0)
    if not any(ch.isdigit() for ch in whole) or whole.isdigit() or not any(ch.isalpha() for ch in whole):
        return whole
    return m.group(1).translate(_LETTER_DIGITS) + m.group(2) + m.group(3).translate(_LETTER_DIGITS)


def _spelled_numbers(text: str) -> str:
    """Compound spelled-out numbers as digits, so every figure rule reads them: "twenty-one hundred" ->
    "2,100", "fifteen hundred" -> "1,500", "twenty-five" -> "25", "six point two five" -> "6.25". A lone
    number word ("six", "twenty") is left as a word: it is as often a time or a count as a figure, and the
    rules read those words in context."""
    return _NUMBER_RUN.sub(lambda m: _convert_run(m.group(0)), text)


def _convert_run(run: str) -> str:
    tokens = re.split(r"([\s-]+)", run)
    words, seps = tokens[0::2], tokens[1::2]
    out: list[str] = []
    i = 0
    while i < len(words):
        end, value = _parse_number(words, i)
        if value is None or end - i < 2:  # not a number, or a lone word: keep the word as written
            out.append(words[i] + (seps[i] if i < len(seps) else ""))
            i += 1
            continue
        out.append(value + (seps[end - 1] if end - 1 < len(seps) else ""))
        i = end
    return "".join(out)


def _parse_number(words: list[str], start: int) -> tuple[int, str | None]:
    """The longest well-formed number starting at words[start]: (end index, digits) or (start, None)."""
    total, current, last = 0, 0, ""
    best: tuple[int, str | None] = (start, None)
    i = start
    while i < len(words):
        word = words[i].lower()
        if word in _UNITS and last in ("", "tens", "hundred", "and"):
            current += _UNITS[word]
            last = "unit"
        elif word in _TEENS and last in ("", "hundred", "and"):
            current += _TEENS[word]
            last = "teen"
        elif word in _TENS and last in ("", "hundred", "and"):
            current += _TENS[word]
            last = "tens"
        elif word == "hundred" and last in ("unit", "teen", "tens") and current < 100:
            current *= 100
            last = "hundred"
        elif word in ("thousand", "million") and last in ("unit", "teen", "tens", "hundred"):
            total += current * _SCALES[word]
            current, last = 0, "hundred"
        elif word == "and" and last == "hundred":
            last = "and"
            i += 1
            continue  # "and" only counts when a number follows it
        elif word == "point" and last in ("unit", "teen", "tens") and total == 0:
            after = [0 if w.lower() == "oh" else _UNITS.get(w.lower(), -1) for w in words[i + 1 : i + 4]]
            digits = [str(d) for d in takewhile(lambda d: d >= 0, after)]
            if digits:
                return i + 1 + len(digits), f"{current}.{''.join(digits)}"
            break
        else:
            break
        i += 1
        value = total + current
        best = (i, f"{value:,}" if value >= 1000 else str(value))
    return best


def _decoded_url(url: re.Match[str]) -> str:
    """A link as its reader sees it once opened: percent-escapes decoded (repeatedly, so "%2525" is "%"),
    and the path and query split into words ("?promo=6%25APR" -> " promo 6%APR", "/low-rates" -> " low rates").
    The host is kept as it is."""
    rest = url.group("rest")
    for _ in range(3):
        if not _URL_ESCAPE.search(rest):
            break
        rest = unquote(rest, errors="replace")
    return url.group("host") + " " + _URL_SEPARATORS.sub(" ", rest).strip() if rest else url.group("host")


def _decode_words(text: str) -> str:
    """Spaced-out runs joined ("s i x" -> "six"), then disguised rule words decoded ("s1x" -> "six")."""
    text = _SPACED_LETTERS.sub(lambda m: _joined(m.group(0), m.group("sep")), text)
    return _LEET_WORD.sub(lambda m: _decode_leet(m.group(0)), text)


def _joined(run: str, sep: str) -> str:
    """A spaced-out run joined, when it has a letter in it ("1 2 3" stays as it is)."""
    return run.replace(sep, "") if any(ch.isalpha() for ch in run) else run
