"""A borrower's sensitive numbers masked before their text leaves the database (broker alerts, logs).

Borrowers sometimes answer a missed-call text with a Social Security number, a bank account or routing number,
or a card number. The full text stays in the database for the console; every copy that goes out (an alert to
the broker's phone, a log line) gets `mask_sensitive(text)`, which replaces each such number with a
placeholder ("[SSN]", "[account #]", "[routing #]", "[card #]", "[number]") and leaves the rest as written.

What is masked:
- a number of 4+ digits right after a label (SSN, social, routing, ABA, account, acct, card, visa, ...),
  with the usual connecting words in between ("acct # is", "card ends in", "last 4 of my social is");
- the 3-2-4 Social Security shape (123-45-6789, 123 45 6789, 123.45.6789), labelled or not;
- a card number in groups (4111 1111 1111 1111, 3782 822463 10005) when the Luhn check passes;
- a card's security code (cvv, cvc, security code) and, in a text that gives a card, its expiry date;
- a bare run of 9 digits (an SSN or routing number written without separators), of 10 or 11 digits that is
  not a North American phone number, and of 12 or more digits (account and card numbers).
What stays readable: phone numbers (any common format, and +international), dates, dollar amounts (a "$"
or thousands separators), ZIP and ZIP+4 codes, times, and short numbers (credit scores, unit numbers).
"""

from __future__ import annotations

import re

_LABELS = {
    "SSN": r"ssn|ss\s*#|ss\s*no\.?|ss(?=\s*\d)|soc\.?\s*sec\.?|social(?:\s+security)?",
    "routing #": r"routing|aba|rtn",
    "account #": r"(?:(?:bank|checking|savings|chk|sav)\s+)?(?:accounts?|acct|acc)(?=\W)",
    "card #": r"(?:credit|debit)\s+card|card|visa|master\s*card|amex|discover|cc",
}
# Words people put between a label and the number: "acct # is", "card ends in", "number:", "and account:".
_CONNECTOR = (
    r"(?:[\s#:=.,/-]|\b(?:number|num|nbr|nr|no|is|are|was|ending|ends|end|in|with|of|my|the|and|digits?|"
    r"account|acct|security)\b)*"
)
# Digits in groups separated by a space, a dash or a dot (with optional spaces around a dash or dot).
_DIGITS = r"\d(?:(?:\s*[-.]\s*|\s)?\d)*"
# "my social security is 2400 a month" is income, not the last four of an SSN.
_NOT_AN_AMOUNT = r"(?!\d|\s*(?:/\s*mo|a\s+month|a\s+mo\b|per\b|monthly|k\b|dollars|bucks|usd))"
_LABELLED = re.compile(
    r"(?<![\w])(?:last\s+(?:4|four)(?:\s+digits)?\s+of\s+(?:my\s+|the\s+)?)?"
    + "(?:" + "|".join(f"(?P<l{i}>{pattern})" for i, pattern in enumerate(_LABELS.values())) + ")"
    + _CONNECTOR
    + rf"(?P<number>{_DIGITS})"
    + _NOT_AN_AMOUNT,
    re.IGNORECASE,
)
_KINDS = list(_LABELS)
_SSN_SHAPE = re.compile(r"(?<![\d$+.,/-])\d{3}(?:\s*-\s*|\s|\.)\d{2}(?:\s*-\s*|\s|\.)\d{4}(?![\d/]|[.,-]\d)")
_GROUPED = re.compile(r"(?<![\d$+.,/-])\d{3,6}(?:[ -]\d{3,6}){2,4}(?![\d/]|[.,-]\d)")
_BARE = re.compile(r"(?<![\d$+.,/])\d{9,}(?![\d/]|[.,]\d)")
_NANP = re.compile(r"1?[2-9]\d{2}[2-9]\d{6}")


def luhn_valid(digits: str) -> bool:
    """The card-number check digit (ISO/IEC 7812)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _count_digits(text: str) -> int:
    return sum(c.isdigit() for c in text)


def _labelled(match: re.Match[str]) -> str:
    number = match.group("number")
    if _count_digits(number) < 4:  # "2 accounts", "card 1 of 3"
        return match.group(0)
    kind = next(_KINDS[i] for i in range(len(_KINDS)) if match.group(f"l{i}") is not None)
    start = match.start("number") - match.start(0)
    return match.group(0)[:start] + f"[{kind}]"


def _grouped(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if 13 <= len(digits) <= 19 and luhn_valid(digits):
        return "[card #]"
    return match.group(0)


def _bare(match: re.Match[str]) -> str:
    digits = match.group(0)
    if len(digits) in {10, 11} and _NANP.fullmatch(digits):  # a phone number written without separators
        return digits
    if len(digits) >= 13 and luhn_valid(digits):
        return "[card #]"
    return "[number]"


# A card's security code ("cvv 123", "security code is 321"), and its expiry date, which is masked only in a
# text that gives a card (a lone "expires 12/15" is a rate lock's or an offer's date the broker needs).
_CVV = re.compile(
    r"\b(?P<label>cvv2?|cvc2?|csc|cid|security\s+code)\b(?P<sep>[\s#:=]*(?:is\s+|of\s+)?)\d{3,4}(?!\d)",
    re.IGNORECASE,
)
_EXPIRY = re.compile(
    r"\b(?P<label>exp(?:iry|iration|ires|\.)?(?:\s+date)?)(?P<sep>[\s:]*(?:is\s+|on\s+)?)"
    r"\d{1,2}\s*/\s*(?:\d{4}|\d{2})(?![\d/])",
    re.IGNORECASE,
)
_CARD_GIVEN = re.compile(r"\[card #\]|\b(?:credit|debit|card|visa|mastercard|amex|discover)\b", re.IGNORECASE)


def mask_sensitive(text: str) -> str:
    """`text` with every SSN, bank account, routing and card number (and a card's security code and expiry)
    replaced by a placeholder."""
    if not text or not any(c.isdigit() for c in text):
        return text
    text = _LABELLED.sub(_labelled, text)
    text = _SSN_SHAPE.sub("[SSN]", text)
    text = _GROUPED.sub(_grouped, text)
    text = _BARE.sub(_bare, text)
    text = _CVV.sub(lambda m: f"{m.group('label')}{m.group('sep')}[cvv]", text)
    if _CARD_GIVEN.search(text):
        text = _EXPIRY.sub(lambda m: f"{m.group('label')}{m.group('sep')}[exp]", text)
    return text
