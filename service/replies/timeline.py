"""Timeline arithmetic: "by March", "3-6 months", "next spring", "after the holidays", "March 15".

The fixed phrases ("ASAP", "just looking") are policy files (``timeline-*.yaml``); this module does the part
that needs a calendar, always relative to the reply's received date (in the received timezone):

==========================  ==========================================================================
rule id                     reads
==========================  ==========================================================================
timeline-duration           "in 2 weeks", "3-6 months" (a range takes its upper bound), "a year", "60 days"
timeline-month              "by March" (the 1st), "in March" (the 15th), "late March" (the last day)
timeline-date               explicit dates through dateparser ("March 15", "3/15", "4th of July"); "the 20th" is
                            the next 20th on or after the received date; an ordinal that counts ("the 3rd
                            time I've called", "the 2nd lender") is not a date
timeline-season             "next spring" (April 1st), "late summer" (Aug 31); in season: its last day
timeline-year-end           "by the end of the year", "before the holidays", "by Christmas"
timeline-after-holidays     "after the holidays", "after New Year", "first of the year", "early next year"
timeline-next-month         "next month" (the 15th), "end of next month"
timeline-next-year          "next year": over 6 months only when even January 1st is; else left open
timeline-year               "in 2027", "early 2027", "spring 2027", "Q1", "end of Q2", "memorial day",
                            "by valentines", "after tax season": a span that falls in one bucket, else open
==========================  ==========================================================================

Buckets count days to the target: ≤ 30 under_30_days, ≤ 90 1_to_3_months, ≤ 180 3_to_6_months, beyond that
over_6_months (a month is 30 days, so "3 months" is 1_to_3 and "6 months" 3_to_6). A month or season already
past this year means next year's. Durations in the past ("for 5 years", "2 years ago") and loan terms
("30 year fixed", "5/1 ARM") are not timelines. dateparser is only called when an explicit date is present.
Someone else's date is not the borrower's plan either: paperwork and rate-lock windows ("extend the lock another
15 days", "the questionnaire back in 48 hrs"), waiting ("haven't heard back in two weeks"), rent due on the 1st.

Size: a little over 400 lines; every calendar reader shares the masks and gates above them, and splitting the
module would split the one place that decides what is a date.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime

from service.replies.analysis import Timeline

RULE_IDS = (
    "timeline-duration",
    "timeline-month",
    "timeline-date",
    "timeline-season",
    "timeline-year-end",
    "timeline-after-holidays",
    "timeline-next-month",
    "timeline-next-year",
    "timeline-year",
)

_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "couple": 2, "few": 3,
    "un": 1, "una": 1, "uno": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6,
}  # fmt: skip
_NUM = (
    r"\d{1,3}|an?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve"
    r"|un[oa]?|dos|tres|cuatro|cinco|seis"
)
_UNIT_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365, "s": 7, "h": 0}  # by first letter (s: semana); meses/años below
_UNIT = re.compile(
    r"(?:d[ií]as|days?|weeks?|wks?|semanas?|months?|mos?|mths?|mnths?|mes(?:es)?|years?|yrs?|a[nñ]os?|hours?|hrs?|horas?)\b"
    r"(?!-|\s*(?:ago|old|fixed|arm|term|loan|mortgage|note|history|of\s|in\s+(?:the|my|our)\b|at\b|now|already"
    r"|and\s+(?:no|still|nothing|not|never)\b|(?:with\s+)?no\s+(?:call|callback|answer|reply|response)|straight|in\s+a\s+row))",
    re.IGNORECASE,
)
# The amount right before a unit ("3-6 ", "a couple of ", "two "), matched backwards from the unit.
_AMOUNT = re.compile(
    rf"""(?<![\w/.$-])
    (?:(?P<couple>a\s+couple(?:\s+of)?|couple(?:\s+of)?|a\s+few|few)|(?P<a>{_NUM}))
    (?:\s*(?:-|–|to|or|a|y|o)\s*(?P<b>{_NUM}))?\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
# "we closed on the 2nd", "paid it off the 5th": a day of the month already behind them, not a plan.
_DOM_PAST = re.compile(
    r"\b(?:closed|bought|purchased|moved|was|were|did|happened|paid|since|last|started|signed|funded|passed|died"
    r"|refinanced|got|hired|(?<!getting\s)(?<!get\s)married|retired|divorced)\b[^.!?]{0,14}$",
    re.IGNORECASE,
)
# "we are not closing on the 20th anymore", "not in March": a negated date is no plan ("not until May" is).
_NEG_BEFORE = re.compile(
    r"(?:\b(?:not|no\s+longer|never)|n't)\b(?:(?!\b(?:but|until|till|til|before)\b)[^.!?,;]){0,24}$", re.IGNORECASE
)
# "rate this house a 10/10", "refi the 1st" (the first mortgage): not dates.
_NOT_DATE_BEFORE = re.compile(
    r"\b(?:a|an|rate|rated|rating|solid|like|refi\w*|pay\s+off|keep|touch|our|my)\s*$"
    r"|\b(?:rent|bills?|payments?|paycheck|payday|every|each|shift|shifts)\b[^.!?]{0,16}$",
    re.IGNORECASE,
)
# "95k a year", "save $200 a month", "twice a year": a rate per period, not a plan ("in a month" still is).
_PER_PERIOD = re.compile(
    r"(?:\d[\d,.]*\s*k?|\$\s*[\d,.]+\s*k?|dollars|bucks|grand|saves?|saving|pay|pays|paying|paid|make|makes|making"
    r"|earn|earns|earning|cost|costs|spend|spending|once|twice|times|income|salary|extra|off|charge|charges)\s*$",
    re.IGNORECASE,
)
_A_PLAN = re.compile(
    r"(?:^|[^\w\s]|\b(?:in|within|about|around|roughly|like|maybe|probably|prob|than|under|just|only|another|give\s+it|"
    r"not\s+(?:for|until)(?:\s+(?:at\s+least|another|about))?|"
    r"bout|abt|approx|approximately|en|dentro\s+de|unos?|m[aá]s\s+o\s+menos))\s*$",
    re.IGNORECASE,
)
# "extend the lock another 15 days", "the questionnaire back in 48 hrs", "haven't heard back in two weeks".
_NOT_PLAN_BEFORE = re.compile(
    r"\b(?:extend\w*|extension|lock\w*|heard|hear|back|questionnaire|hoa|paperwork|docs?|documents?|letter|forms?"
    r"|notice|reply|respond|response|answer)\b[^.!?]{0,30}$",
    re.IGNORECASE,
)
_OR_TWO = re.compile(r"\b(?:a|one)\s+(?P<unit>week|month)\s+or\s+(?:two|2)\b", re.IGNORECASE)
# "renting for a year", "owned it 5 years": a duration behind them ("not for a year" is still ahead).
_PAST = re.compile(
    r"\b(?:(?<!not\s)for|been|past|last|owned|had|lived|living|since|hace|ago|renting|rented|old|bought|paid)\b[^.!?]{0,14}$",
    re.IGNORECASE,
)

_MONTHS = {
    "jan": 1, "january": 1, "enero": 1, "feb": 2, "february": 2, "febrero": 2, "mar": 3, "march": 3,
    "marzo": 3, "apr": 4, "april": 4, "abril": 4, "may": 5, "mayo": 5, "jun": 6, "june": 6, "junio": 6,
    "jul": 7, "july": 7, "julio": 7, "aug": 8, "august": 8, "agosto": 8, "sep": 9, "sept": 9,
    "september": 9, "septiembre": 9, "setiembre": 9, "oct": 10, "october": 10, "octubre": 10, "nov": 11,
    "november": 11, "noviembre": 11, "dec": 12, "december": 12, "diciembre": 12,
}  # fmt: skip
_MONTH_NAMES = "|".join(sorted(_MONTHS, key=len, reverse=True))
_MONTH = re.compile(
    rf"""\b(?P<mod>by|before|in|around|until|till|til|for|this|sometime\s+in|early|mid|late|end\s+of|
        beginning\s+of|start\s+of|en|para|antes\s+de|a\s+finales\s+de|a\s+principios\s+de|finales\s+de)
    [\s-]+(?:(?P<sub>early|mid|late)[\s-]+)?(?P<month>{_MONTH_NAMES})\b\.?
    (?!\s*\d|\s+(?:be|have|take|not|need|want|get|go|work|help|i|we|you|also|or|still|just|could|should)\b)""",
    re.IGNORECASE | re.VERBOSE,
)
_MONTH_ALONE = re.compile(
    rf"^\W*(?:maybe|prob(?:ably)?|hopefully|around|like)?\s*(?P<month>{_MONTH_NAMES})\W*"
    r"(?:maybe|prob(?:ably)?|hopefully|or\s+so|ish)?\W*$",
    re.IGNORECASE,
)
# "the 3rd time I've called", "the 2nd lender", "the 4th house we saw": an ordinal that counts something is
# not a day of the month ("by the 3rd", "on the 12th", "the 4th of July" still are).
_NOT_A_COUNT = (
    r"(?!\s+(?:(?:damn|straight|whole|different|separate|other|freaking|frickin|fricking|effing|bloody)\s+)?"
    r"(?:times?|attempts?|try|tries|calls?|phone\s+calls?|texts?|messages?|msgs?|voicemails?|vms?|emails?"
    r"|requests?|reminders?|follow[\s-]?ups?|notices?|letters?|person|people|one|ones|lenders?|banks?"
    r"|brokers?|companies|company|loan\s+officers?|agents?|realtors?|houses?|homes?|propert(?:y|ies)|places?"
    r"|offers?|bids?|condos?|apartments?|kids?|child|baby|grade|floor|round|weeks?|weekends?|months?|years?"
    r"|buyers?|famil(?:y|ies)|couples?|in\s+line|callers?|applicants?|showings?|viewings?"
    r"|days?\s+in\s+a\s+row)\b)"
)
_ORDINALS = {
    "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12,
    "thirteenth": 13, "fourteenth": 14, "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18,
    "nineteenth": 19, "twentieth": 20, "twenty[\\s-]?first": 21, "twenty[\\s-]?second": 22,
    "twenty[\\s-]?third": 23, "twenty[\\s-]?fourth": 24, "twenty[\\s-]?fifth": 25, "twenty[\\s-]?sixth": 26,
    "twenty[\\s-]?seventh": 27, "twenty[\\s-]?eighth": 28, "twenty[\\s-]?ninth": 29, "thirtieth": 30,
    "thirty[\\s-]?first": 31,
}  # fmt: skip  ("the first" to "the fourth" count too many other things to read as a day of the month)
_ORDINAL_NAMES = "|".join(sorted(_ORDINALS, key=len, reverse=True))
_DATE = re.compile(
    rf"""\b(?:(?:{_MONTH_NAMES})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?\b(?:,?\s+\d{{4}})?
    |(?:the\s+)?\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+|de\s+)?(?:{_MONTH_NAMES})\b(?!\s*\d)
    |(?<![\d/-])20[2-3]\d-(?:1[0-2]|0[1-9])-(?:3[01]|[12]\d|0[1-9])(?![\d-])
    |(?<![\d/-])(?:1[0-2]|0?[1-9])-(?:3[01]|[12]\d|0?[1-9])-(?:20[2-3]\d|[2-3]\d)(?![\d-])
    |(?:{_MONTH_NAMES})\.?\s+\d{{4}}\b
    |(?<![\d/])(?:1[0-2]|0?[1-9])/(?:3[01]|[12]\d|0?[1-9])(?:/(?:\d{{4}}|\d{{2}}))?(?![\d/])
        (?!\s*(?:arm|buy\s*down|buydown|split))
    |the\s+(?P<dom>3[01]|[12]\d|0?[1-9])(?:st|nd|rd|th)\b(?!\s+of\s+(?:{_MONTH_NAMES})\b){_NOT_A_COUNT}
    |the\s+(?P<domw>{_ORDINAL_NAMES})\b(?:\s+of\s+(?P<domw_month>{_MONTH_NAMES})\b)?{_NOT_A_COUNT}
    |\b(?:es|para|antes\s+del|hasta\s+el|el)\s+(?:d[ií]a\s+)?(?P<domes>3[01]|[12]\d|0?[1-9])\b
        (?![\d%.,/:]|\s*(?:de\b|por|mil|k\b|a[nñ]os|%|d[oó]lares)))""",
    re.IGNORECASE | re.VERBOSE,
)
# "baby is due in May", "my son graduates in June", "getting married in October": the family's date, not the
# move; it is the plan only when the reply ties the move to it ("by then", "before she's born", "after the wedding").
_EVENT_BEFORE = re.compile(
    r"\b(?:due|born|graduat\w*|married|wedding(?:\s+is)?|graduation(?:\s+is)?)\s*$", re.IGNORECASE
)
_TIED = re.compile(
    r"\b(?:by|before|until|till|after|right\s+after)\s+(?:then|that|the\s+(?:baby|babies|twins|wedding|due\s+date"
    r"|graduation|big\s+day)|(?:she|he|they|the\s+baby|the\s+twins)\s+(?:is|are|gets?|comes?|arrives?)"
    r"|(?:she|he|they)(?:'s|'re)|(?:s?he|they|we|i)\s+graduates?)\b|\bin\s+time\s+for\b"
    r"|\b(?:after|before|once|until|till)\b[^.!?]{0,30}\b(?:born|due|graduat\w*|married|wedding)\b",
    re.IGNORECASE,
)
# A correction of the date just said: "no wait", "scratch that", "make that", "no she says". "I mean" and
# "actually" (`weak`) mostly add something ("closing the 20th, actually we also want to refi", "by march. i mean
# the lender said 30 days"): they correct only a season or a month said bare right after ("june, I mean july").
_CORRECTION = re.compile(
    r"\b(?:no\s+wait|wait\s+no|scratch\s+that|i\s+meant|make\s+that|or\s+rather|correction"
    r"|no\s+(?:she|he|they|my\s+\w+)\s+says?|(?P<weak>i\s+mean|actually))\b",
    re.IGNORECASE,
)
_CORRECTION_REACH = 40  # the corrected date follows its marker within a few words
_COUNTED = re.compile(r"\b(?:times?|twice|so\s+far)\s+$", re.IGNORECASE)  # "third time this spring"
_SEASONS = {"spring": 3, "primavera": 3, "summer": 6, "verano": 6, "fall": 9, "autumn": 9, "otono": 9,
            "otoño": 9, "winter": 12, "invierno": 12}  # fmt: skip
_SEASON = re.compile(
    r"""\b(?P<mod>this|next|in\s+the|by\s+the|by|before(?:\s+the)?|until(?:\s+the)?|till|til|around|closer\s+to|over\s+the|during\s+the|early|mid|late|
        (?:the\s+)?end\s+of(?:\s+the)?|(?:the\s+)?(?:beginning|start)\s+of(?:\s+the)?|en\s+el|en|para\s+el|
        este|esta|pr[oó]xim[oa])
    \s+(?:(?P<sub>early|mid|late|next)[\s-]+)?(?P<season>spring|summer|fall|autumn|winter|primavera|verano|
        oto[nñ]o|invierno)\b""",
    re.IGNORECASE | re.VERBOSE,
)
_BARE_AFTER = re.compile(
    rf"""^\W*(?:(?:she|he|they|we|it|more\s+like|maybe|probably|prob)\s+(?:says?\s+|said\s+|thinks?\s+)?)?
    (?P<word>spring|summer|fall|autumn|winter|{_MONTH_NAMES})\b(?!\s*\d)""",
    re.IGNORECASE | re.VERBOSE,
)
_YEAR_END = re.compile(
    r"""\b(?:(?:the\s+)?end\s+of\s+(?:the\s+|this\s+)?year|year[\s-]?end|eoy|fin(?:ales)?\s+de(?:l)?\s+a[nñ]o)\b
    |\b(?P<holiday>(?:before|by)\s+(?:the\s+)?(?:holidays|christmas|xmas|new\s+year'?s?)|antes\s+de\s+navidad)\b
    |\b(?P<thanks>(?:before|by)\s+thanksgiving)\b""",
    re.IGNORECASE | re.VERBOSE,
)
_AFTER_HOLIDAYS = re.compile(
    r"""\b(?:after\s+(?:the\s+)?(?:holidays|christmas|xmas|new\s+year'?s?|the\s+new\s+year|first\s+of\s+the\s+year)
    |(?:first|start|beginning)\s+of\s+(?:the|next)\s+year|(?P<early>early\s+next\s+year|early\s+in\s+the\s+new\s+year)
    |despu[eé]s\s+de\s+(?:las\s+fiestas|navidad|a[nñ]o\s+nuevo))\b""",
    re.IGNORECASE | re.VERBOSE,
)
_NEXT_MONTH = re.compile(
    r"\b(?:(?P<end>end\s+of\s+)|(?P<first>(?:the\s+)?(?:first|1st)\s+of\s+))?(?:next|nxt)\s+month\b|\b(?P<es>(?:el\s+)?mes\s+que\s+viene|(?:el\s+)?pr[oó]ximo\s+mes)\b",
    re.IGNORECASE,
)
_NEXT_YEAR = re.compile(
    r"\b(?:next\s+(?:year|yr)|el\s+a[nñ]o\s+que\s+viene|el\s+pr[oó]ximo\s+a[nñ]o)\b", re.IGNORECASE
)
# "in 2027", "early 2027", "spring 2027", "Q1", "end of Q2", "first quarter": a span of the calendar.
_QUARTER_WORDS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4}
_YEAR_SPAN = re.compile(
    r"""\b(?:(?P<mod>by|before|until|till|in|during|for|sometime\s+in|around|early|mid|late|end\s+of|
        (?:the\s+)?(?:beginning|start)\s+of|en|para|a\s+principios\s+de|a\s+finales\s+de|finales\s+de)[\s-]+
        |(?P<season>spring|summer|fall|autumn|winter|primavera|verano|invierno)\s+(?:of\s+|de\s+(?:l\s+)?)?)
    (?:(?P<q>q[1-4])\s+|(?P<sub>early|mid|late)[\s-]+)?(?P<year>20[2-4]\d)\b(?![\d/-])""",
    re.IGNORECASE | re.VERBOSE,
)
_QUARTER = re.compile(
    r"""\b(?:(?P<mod>by|before|until|in|during|end\s+of|(?:the\s+)?(?:beginning|start)\s+of|early|late)\s+)?(?:the\s+)?
    (?:q(?P<n>[1-4])|(?P<word>first|1st|second|2nd|third|3rd|fourth|4th)\s+quarter)\b
    (?:\s+(?:of\s+)?(?P<year>20[2-4]\d))?(?!\s*(?:earnings|report|results|sales|numbers|taxes|estimated))""",
    re.IGNORECASE | re.VERBOSE,
)
# Holidays as (month, day); floating ones are computed. "after" a holiday adds two weeks.
_HOLIDAY = re.compile(
    r"""\b(?P<mod>by|before|until|till|around|after|for|on|in\s+time\s+for|ahead\s+of|near|closer\s+to)\s+
    (?:the\s+)?(?P<name>memorial\s+day|labor\s+day|valentine'?s?(?:\s+day)?|(?:the\s+)?4th\s+of\s+july|
        fourth\s+of\s+july|july\s+4th|independence\s+day|halloween|easter|mother'?s\s+day|father'?s\s+day|
        tax\s+(?:season|time|day)|taxes|spring\s+break|back\s+to\s+school|school\s+starts?|the\s+school\s+year)\b""",
    re.IGNORECASE | re.VERBOSE,
)
_GATE_SPANS = re.compile(r"20[2-4]\d|q[1-4]|quarter|memorial|labor|valentine|july|independence|halloween|easter|"
                         r"mother|father|tax|spring\s+break|school")
_SEASON_MONTHS = {"spring": 3, "primavera": 3, "summer": 6, "verano": 6, "fall": 9, "autumn": 9, "winter": 12,
                  "invierno": 12}  # fmt: skip


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th `weekday` (0 Monday) of a month; n = -1 is the last one."""
    if n < 0:
        last = _last_day(year, month)
        return date(year, month, last.day - (last.weekday() - weekday) % 7)
    first = date(year, month, 1)
    return date(year, month, 1 + (weekday - first.weekday()) % 7 + 7 * (n - 1))


def _holiday_date(name: str, year: int) -> date:
    name = name.lower()
    if name.startswith("memorial"):
        return _nth_weekday(year, 5, 0, -1)
    if name.startswith("labor"):
        return _nth_weekday(year, 9, 0, 1)
    if name.startswith("mother"):
        return _nth_weekday(year, 5, 6, 2)
    if name.startswith("father"):
        return _nth_weekday(year, 6, 6, 3)
    fixed = {"valentine": (2, 14), "halloween": (10, 31), "easter": (4, 10), "tax": (4, 15), "spring": (3, 15),
             "back": (8, 15), "school": (8, 20), "the": (8, 20)}  # fmt: skip  (easter: its usual middle)
    for key, (month, day) in fixed.items():
        if name.startswith(key):
            return date(year, month, day)
    return date(year, 7, 4)  # the 4th of July under any of its names


def _span_bucket(lo: date, hi: date, today: date) -> Timeline | None:
    """The bucket of a span of dates when all of it that is still ahead falls in one bucket; else None."""
    if hi < today:
        return None
    lo = max(lo, today)
    first, last = bucket((lo - today).days), bucket((hi - today).days)
    return first if first is last else None


def _spans(text: str, today: date) -> list[tuple[str, Timeline]]:
    found: list[tuple[str, Timeline]] = []
    for match in _YEAR_SPAN.finditer(text):
        year = int(match.group("year"))
        mod = (match.group("sub") or match.group("mod") or "").lower()
        if match.group("q"):
            quarter = int(match.group("q")[1])
            lo, hi = date(year, quarter * 3 - 2, 1), _last_day(year, quarter * 3)
        elif match.group("season"):
            first = _SEASON_MONTHS[match.group("season").lower()]
            lo = hi = date(*_add_months(year, first, 1), 1)  # the middle of the season
        elif mod in {"by", "before", "until", "till"} or mod.startswith(("beginning", "start", "the", "a principios")):
            lo = hi = date(year, 1, 1) if mod in {"by", "before", "until", "till"} else date(year, 1, 20)
        elif mod == "early":
            lo = hi = date(year, 2, 15)
        elif mod == "mid":
            lo = hi = date(year, 7, 1)
        elif mod.startswith(("late", "end", "a finales", "finales")):
            lo = hi = date(year, 11, 15)
        else:
            lo, hi = date(year, 1, 1), date(year, 12, 31)
        if year < today.year or (year == today.year and lo == date(year, 1, 1) and hi.month == 12):
            continue  # a past year, or "in 2026" said in 2026: no span to read
        result = _span_bucket(lo, hi, today)
        if result is not None:
            found.append(("timeline-year", result))
    for match in _QUARTER.finditer(text):
        quarter = int(match.group("n") or _QUARTER_WORDS[match.group("word").lower()])
        year = int(match.group("year") or today.year)
        if not match.group("year") and _last_day(year, quarter * 3) < today:
            year += 1
        mod = (match.group("mod") or "").lower()
        start = date(year, quarter * 3 - 2, 1)
        if mod in {"by", "before", "until"} or mod.startswith(("beginning", "start", "the", "early")):
            point = start if mod in {"by", "before", "until"} else date(year, quarter * 3 - 2, 15)
        elif mod.startswith(("end", "late")):
            point = _last_day(year, quarter * 3)
        else:
            point = date(year, quarter * 3 - 1, 15)  # the middle month of the quarter
        found.append(("timeline-year", bucket((max(point, today) - today).days)))
    for match in _HOLIDAY.finditer(text):
        name, year = match.group("name"), today.year
        day = _holiday_date(name, year)
        if day < today:
            day = _holiday_date(name, year + 1)
        if match.group("mod").lower() == "after":
            day = date.fromordinal(day.toordinal() + 14)
        found.append(("timeline-year", bucket((day - today).days)))
    return found


# Cheap gates over the lowercased text: each reader runs only when its words can be there.
_GATE_UNITS = re.compile(r"d[ií]a|day|week|wk|semana|mo|mth|mnth|mes|year|yr|a[nñ]o|hour|hr|hora")
_GATE_MONTHS = re.compile(r"jan|ene|feb|mar|apr|abr|may|jun|jul|aug|ago|sep|set|oct|nov|dec|dic")
_GATE_DATE = re.compile(r"\d|(?:fif|six|seven|eigh|nin|ten|eleven|twelf|teen|tie)th|twenty|thirty")
_GATE_SEASONS = re.compile(r"spring|summer|fall|autumn|winter|primavera|verano|oto|invierno")
_GATE_YEAR = re.compile(r"year|yr|eoy|holiday|christmas|xmas|thanksgiving|a[nñ]o|navidad|fiestas")
_GATE_MONTH_WORD = re.compile(r"month|mes")


def bucket(days: int) -> Timeline:
    """The timeline bucket for a target `days` ahead of the received date."""
    if days <= 30:
        return Timeline.UNDER_30_DAYS
    if days <= 90:
        return Timeline.ONE_TO_THREE_MONTHS
    if days <= 180:
        return Timeline.THREE_TO_SIX_MONTHS
    return Timeline.OVER_SIX_MONTHS


def _last_day(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    index = year * 12 + month - 1 + n
    return index // 12, index % 12 + 1


def _number(word: str | None) -> int | None:
    if word is None:
        return None
    word = word.lower()
    return int(word) if word.isdigit() else _NUMBERS.get(word)


def _durations(text: str) -> list[int]:
    found: list[int] = []
    for unit_match in _UNIT.finditer(text):
        start = unit_match.start()
        if start and text[start - 1].isalpha():
            continue  # "ramos", "demo": a unit only as a word of its own
        match = _AMOUNT.search(text, max(0, start - 24), start)
        if match is None or _PAST.search(text, 0, match.start()):
            continue
        if _NOT_PLAN_BEFORE.search(text, max(0, match.start() - 40), match.start()):
            continue
        if (match.group("a") or "").lower() in {"a", "an", "one"} and _PER_PERIOD.search(
            text, max(0, match.start() - 24), match.start()
        ):
            continue
        if (match.group("a") or "").lower() in {"a", "an", "un", "una"} and not match.group("b") and not _A_PLAN.search(
            text, max(0, match.start() - 24), match.start()
        ):
            continue  # "3 twelves a week", "call it a day": not "in a month"
        unit = unit_match.group().lower()
        if match.group("couple"):
            amount = 2 if "couple" in match.group("couple").lower() else 3
            if amount == 3 and not unit.startswith(("d", "w", "s")):
                continue  # "a few months" is 3 or 4 or 5: left to the LLM
        else:
            first, second = _number(match.group("a")), _number(match.group("b"))
            if first is None:
                continue
            amount = max(first, second or 0)
        if unit.startswith("h"):
            per = 0  # "in 2 hours", "48 hrs": today or tomorrow
        elif unit.startswith(("mes", "mo", "mt", "mn")):
            per = 30
        elif unit.startswith(("a", "y")):
            per = 365
        else:
            per = _UNIT_DAYS[unit[0]]
        if per == 0:
            amount, per = 1, max(0, amount // 24)
        if per == 365 and amount >= 10:
            continue  # "15 year", "30 yrs": loan terms, not plans
        found.append(amount * per)
    found.extend((7 if m.group("unit").lower() == "week" else 30) * 2 for m in _OR_TWO.finditer(text))
    return found


def _month_target(month: int, mod: str, today: date) -> date:
    year = today.year if month >= today.month else today.year + 1
    mod = mod.lower()
    if month == today.month:
        return today
    if mod in {"by", "before", "antes de"}:
        return date(year, month, 1)
    if mod.startswith(("early", "beginning", "start", "a principios")):
        return date(year, month, 10)
    if mod.startswith(("late", "end", "a finales", "finales")):
        return _last_day(year, month)
    return date(year, month, 15)


def _season_target(first_month: int, mod: str, sub: str, today: date) -> date | None:
    mod, sub = mod.lower(), sub.lower()
    is_next = mod.startswith(("next", "próxim", "proxim")) or sub == "next"
    for start_year in (today.year - 1, today.year, today.year + 1):
        start = date(start_year, first_month, 1)
        end_year, end_month = _add_months(start_year, first_month, 2)
        end = _last_day(end_year, end_month)
        if end < today:
            continue
        if is_next and start <= today:
            continue  # "next summer" said in July is the summer after
        words = f"{mod} {sub}"
        by = "by" in mod.split() or "before" in mod.split()
        if by or any(w in words for w in ("beginning", "start", "early")):
            target = start if by else date(start_year, first_month, 10)
        elif any(w in words for w in ("late", "end")):
            target = end
        elif start <= today:
            if not mod.startswith(("this", "este", "esta")):
                return None  # "in the fall" said in November: this one or next year's? Left to the LLM.
            target = end  # "this summer" said in June: any time until summer ends
        else:
            mid_year, mid_month = _add_months(start_year, first_month, 1)
            target = date(mid_year, mid_month, 1)
        return max(target, today)
    return today  # unreachable: one of three consecutive seasons always ends after today


def _day_of_month(day: int, today: date) -> date:
    """The next `day` of a month on or after `today` ("the 12th" said on March 2nd is March 12th; said on March
    20th it is April 12th; "the 31st" skips the months that have no 31st). dateparser reads "the 12th" as a
    month, so day-of-month phrases are resolved here."""
    year, month = today.year, today.month
    for _ in range(13):
        if day <= calendar.monthrange(year, month)[1]:
            candidate = date(year, month, day)
            if candidate >= today:
                return candidate
        year, month = _add_months(year, month, 1)
    return today  # unreachable: every day 1-31 occurs within 13 months


def _day_in_month(month: int, day: int, today: date) -> date:
    """That day of that month, this year or, when already past, next year ("the thirtieth of june")."""
    for year in (today.year, today.year + 1):
        candidate = date(year, month, min(day, calendar.monthrange(year, month)[1]))
        if candidate >= today:
            return candidate
    return today  # unreachable: next year's is always ahead


def _explicit_date(fragment: str, received_at: datetime) -> date | None:
    import dateparser  # lazy: a slow import, needed only for explicit dates

    base = received_at.replace(tzinfo=None)
    parsed = dateparser.parse(
        fragment,
        languages=["en", "es"],
        settings={"RELATIVE_BASE": base, "PREFER_DATES_FROM": "future", "DATE_ORDER": "MDY"},
    )
    return None if parsed is None else parsed.date()


def parse(text: str, received_at: datetime) -> list[tuple[str, Timeline]]:
    """Every (rule id, bucket) the calendar rules read in `text`, relative to `received_at`'s own date.

    A corrected date ("spring, no wait, summer", "by March, actually make that April", "she says spring... no
    she says summer") is read after the last correction alone when that part names a date; a season or a month
    said bare right after the correction counts as that season or month."""
    found = _parse(text, received_at)
    if found:
        for last in reversed(list(_CORRECTION.finditer(text))):
            tail = text[last.end() : last.end() + _CORRECTION_REACH]
            bare = _BARE_AFTER.match(tail)
            if last.group("weak") is not None and bare is None:
                continue  # "actually we also want to refi": no correction of the date
            if bare is not None:
                word = bare.start("word")
                season = bare.group("word").lower() in _SEASONS
                tail = f"{tail[:word]}{'in the' if season else 'in'} {tail[word:]}"
            corrected = _parse(tail, received_at)
            if corrected:
                return corrected
            break  # the last correction names no date: what was said stands
    return found


def _parse(text: str, received_at: datetime) -> list[tuple[str, Timeline]]:
    lower = text.lower()
    today = received_at.date()
    found: list[tuple[str, Timeline]] = []
    if _GATE_UNITS.search(lower):
        found.extend(("timeline-duration", bucket(days)) for days in _durations(text))
    masked = text
    if _GATE_DATE.search(lower) or _GATE_MONTHS.search(lower):
        dates = list(_DATE.finditer(text))
        for match in dates:
            dom = match.group("dom") or match.group("domes")
            word = match.group("domw")
            if word is not None:
                dom = str(next(v for k, v in _ORDINALS.items() if re.fullmatch(k, word.lower())))
            before = max(0, match.start() - 24)
            if _NEG_BEFORE.search(text, before, match.start()):
                continue
            if dom and _DOM_PAST.search(text, before, match.start()):
                continue
            if (match.group().endswith("/10") or dom) and _NOT_DATE_BEFORE.search(text, before, match.start()):
                continue
            if _EVENT_BEFORE.search(text, before, match.start()) and not _TIED.search(text):
                continue  # "the baby is due March 3rd": the family's date, not the move
            named = match.group("domw_month")
            target: date | None
            if dom and named:  # "the fifteenth of june": that day of that month
                target = _day_in_month(_MONTHS[named.lower()], int(dom), today)
            else:
                target = _day_of_month(int(dom), today) if dom else _explicit_date(match.group(), received_at)
            if target is not None and target >= today:
                found.append(("timeline-date", bucket((target - today).days)))
        for match in dates:  # "March 15" is a date, not also "March"
            masked = masked[: match.start()] + " " * (match.end() - match.start()) + masked[match.end() :]
    if _GATE_MONTHS.search(lower):
        for match in _MONTH.finditer(masked):
            before = max(0, match.start() - 24)
            if _DOM_PAST.search(masked, before, match.start() + 1) or _NEG_BEFORE.search(masked, before, match.start()):
                continue  # "my mother passed in January", "not in March"
            if _EVENT_BEFORE.search(masked, before, match.start()) and not _TIED.search(text):
                continue  # "baby is due in May ... not rushing anything"
            month = _MONTHS[match.group("month").lower()]
            target = _month_target(month, match.group("sub") or match.group("mod"), today)
            found.append(("timeline-month", bucket((target - today).days)))
        alone = _MONTH_ALONE.match(masked)
        if alone is not None:
            target = _month_target(_MONTHS[alone.group("month").lower()], "in", today)
            found.append(("timeline-month", bucket((target - today).days)))
    if _GATE_SEASONS.search(lower):
        for match in _SEASON.finditer(text):
            if _COUNTED.search(text, max(0, match.start() - 16), match.start()):
                continue  # "third time this spring": when something happened, not the plan
            first = _SEASONS[match.group("season").lower().replace("otono", "otoño")]
            target = _season_target(first, match.group("mod"), match.group("sub") or "", today)
            if target is not None:
                found.append(("timeline-season", bucket((target - today).days)))
    if _GATE_YEAR.search(lower):
        found.extend(_year_phrases(text, today))
    if _GATE_SPANS.search(lower):
        found.extend(_spans(text, today))
    if _GATE_MONTH_WORD.search(lower):
        for match in _NEXT_MONTH.finditer(text):
            year, month = _add_months(today.year, today.month, 1)
            day = 1 if match.group("first") else 15
            target = _last_day(year, month) if match.group("end") else date(year, month, day)
            found.append(("timeline-next-month", bucket((target - today).days)))
    return found


def _year_phrases(text: str, today: date) -> list[tuple[str, Timeline]]:
    found: list[tuple[str, Timeline]] = []
    for match in _YEAR_END.finditer(text):
        month, day = (12, 20) if match.group("holiday") else (11, 25) if match.group("thanks") else (12, 31)
        said = match.group().lower()
        if match.group("holiday") and "new" in said:
            month, day = 12, 31  # "by new year's": by the turn of the year
        elif match.group("holiday") and ("christmas" in said or "xmas" in said):
            month, day = 12, 25
        target = date(today.year, month, day)
        if target < today:
            target = date(today.year + 1, month, day)
        found.append(("timeline-year-end", bucket((target - today).days)))
    after = False
    for match in _AFTER_HOLIDAYS.finditer(text):
        after = True
        if not match.group("early") and date(today.year, 1, 15) < today < date(today.year, 3, 1):
            continue  # "after the holidays" said in late January: these holidays or next year's? Left open.
        if match.group("early"):
            target = date(today.year + 1, 2, 15)
        else:
            target = (
                date(today.year, 1, 15) if today <= date(today.year, 1, 15) else date(today.year + 1, 1, 15)
            )
        found.append(("timeline-after-holidays", bucket((target - today).days)))
    if not after and _NEXT_YEAR.search(text):
        days = (date(today.year + 1, 1, 1) - today).days
        if days > 180:  # even January 1st is more than six months away
            found.append(("timeline-next-year", Timeline.OVER_SIX_MONTHS))
    return found
