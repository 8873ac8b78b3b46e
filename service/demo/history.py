"""The demo history, drawn from a seed: who calls which broker when, who is answered, what the missed callers
text back and what the broker's team does about it. Pure: no database, no clock. Each broker's day is drawn
from (seed, broker, date) alone, so the same seed gives the same calls on the same days, to the second,
whatever window asks for them.

A broker gets about seven calls a weekday (more at lunch and after 17:00), fewer on Friday, two or three on
Saturday and one on Sunday, in the broker's time zone. The broker picks up about a third of the calls in
office hours (fewer at lunch, after 17:00 and at weekends); the rest are missed: no answer, busy, or the
broker's voicemail took the call. Each missed caller gets a conversation drawn from SCRIPTS (purchase and
refinance answers with timelines, rate-lock and closing questions that need a person, silence, STOP, a wrong
number...), sometimes calls again, and a person on the team texts back or records an outcome minutes to
days later, or never.

Callers are fictional numbers (555-0100 to 555-0199, reserved for fiction in the North American plan) in
area codes of the broker's time zone; every CallSid and MessageSid starts with `CAdemo` / `SMdemo`, which no
Twilio SID can (they are hexadecimal): that is how the seed knows its own leads (service.demo.ownership).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

CALL_MARK = "CAdemo"
TEXT_MARK = "SMdemo"

# Calls a broker gets on average, Monday to Sunday.
CALLS_PER_DAY = (7.0, 7.0, 7.5, 7.0, 6.0, 2.5, 1.0)
# When calls come in (local hour: weight): lunch and after work are busiest.
WEEKDAY_HOURS = {7: 0.3, 8: 0.8, 9: 1.0, 10: 1.0, 11: 1.1, 12: 1.9, 13: 1.5, 14: 0.9, 15: 0.9, 16: 1.0,
                 17: 1.8, 18: 1.6, 19: 0.8, 20: 0.4}
WEEKEND_HOURS = {9: 0.7, 10: 1.0, 11: 1.0, 12: 1.0, 13: 0.9, 14: 0.8, 15: 0.8, 16: 0.6, 17: 0.5, 18: 0.3}
# Fictional callers come from area codes of the broker's zone (the broker's own area code otherwise).
AREA_CODES = {
    "America/Los_Angeles": ("415", "510", "650", "408", "925", "707"),
    "America/Denver": ("303", "720", "719", "970"),
    "America/Phoenix": ("602", "480", "623", "520"),
    "America/Chicago": ("312", "773", "847", "630", "708", "224"),
    "America/New_York": ("212", "646", "718", "917", "516", "914"),
}

# What missed callers text back: (kind, weight, their texts in order). The kind says where the conversation
# ends (ready: every question answered; handoff: a reason for a person; asking: it stops halfway; silent: no
# reply; optout; closed: wrong number or not interested) and what the team does next (TEAM below). Every
# text is settled by the reply rules alone (no LLM), checked by tests/test_demo_seed.py.
SCRIPTS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("ready", 6, ("Buying! first house for us", "probably 2 months from now", "Nope")),
    ("ready", 4, ("We're looking to buy in about 4 months and haven't applied with anyone else yet",)),
    ("ready", 4, ("refi asap", "applied with another lender but they're slow")),
    ("ready", 3, ("REFINANCE", "next month or so", "yes")),
    ("ready", 3, ("buying in 2 months", "no")),
    ("ready", 2, ("home equity line for a kitchen remodel", "sometime in the next 6 months", "no")),
    ("ready", 2, ("Hi! refinancing our house, hoping to get it done within 30 days", "no")),
    ("handoff", 4, ("Hi, my rate lock runs out on Friday, can we extend it?",)),
    ("handoff", 3, ("refinance",
                    "we're supposed to close thursday and the title company still doesn't have the payoff")),
    ("handoff", 3, ("Refi. Rather just talk, can you call me tomorrow after 4?",)),
    ("handoff", 3, ("purchase", "ASAP - our agent wants a pre-approval letter before we put in an offer")),
    ("handoff", 2, ("what are your rates for a 30 year fixed right now?",)),
    ("handoff", 2, ("Is my closing date still on track for the 15th?",)),
    ("asking", 6, ("purchase",)),
    ("asking", 4, ("Looking to refinance my condo",)),
    ("asking", 3, ("thanks!",)),
    ("silent", 30, ()),
    ("optout", 4, ("STOP",)),
    ("optout", 2, ("please stop texting me",)),
    ("closed", 2, ("wrong number sorry",)),
    ("closed", 3, ("no thanks, we already went with another lender",)),
)


@dataclass(frozen=True)
class Habit:
    """What the team does about a conversation of one kind."""

    acts: float  # the chance anyone acts at all
    texts_first: float  # the chance their first act is a text (else they record an outcome at once)
    within: tuple[float, float]  # minutes from the borrower's last text (or the call) until they act
    outcomes: dict[str, float]  # the outcome they record, by weight
    outcome_after: tuple[float, float]  # hours from their text to the outcome
    outcome_chance: float  # the chance an outcome follows their text


TEAM = {
    "handoff": Habit(0.9, 0.9, (3, 45), {"reached": 45, "appointment": 30, "application": 15, "not_a_fit": 10},
                     (0.2, 0.7), 1.0),
    "ready": Habit(0.8, 0.5, (10, 240), {"appointment": 40, "reached": 30, "application": 15, "not_a_fit": 10,
                                         "lost": 5}, (0.25, 1.0), 1.0),
    "asking": Habit(0.55, 1.0, (30, 300), {"reached": 60, "no_response": 40}, (24, 48), 0.5),
    "silent": Habit(0.45, 0.8, (60, 360), {"no_response": 70, "reached": 30}, (48, 96), 0.6),
    "optout": Habit(0.15, 0.0, (60, 600), {"not_a_fit": 1}, (0, 0), 1.0),
    "closed": Habit(0.3, 0.0, (30, 300), {"not_a_fit": 50, "lost": 50}, (0, 0), 1.0),
}
TEAM_TEXTS = {
    "handoff": "Hi, it's {first} at {brokerage}. Got your message, I'm calling you in a few minutes.",
    "ready": "Thanks for the details! It's {first} at {brokerage}. I'll give you a call shortly to go over next "
             "steps.",
    "missed": "Hi, it's {first} at {brokerage}. Sorry I missed your call! Is now a good time for a quick call?",
}
THANKS = ("Thank you!", "ok thanks", "Perfect", "👍")
NOTES = {
    "reached": "Talked it through; sending the document checklist.",
    "appointment": "Booked a consultation.",
    "application": "Application started.",
    "not_a_fit": "Not something we do; referred out.",
    "lost": "Went with their bank.",
    "no_response": "No answer to texts or a call.",
}
MAX_PER_DAY = 25  # calls a broker can get in a day (the draw is capped there)
CALL_AGAIN = 0.12  # a missed caller who calls again before anyone reached them


@dataclass(frozen=True)
class Person:
    """Someone who works a broker's leads in the console: their phone (a user of the brokers file) and the
    first name they sign their texts with."""

    phone: str
    first_name: str


@dataclass(frozen=True)
class Desk:
    """A broker as the history needs it: the Twilio number, time zone and brokerage, its people, and the
    numbers no fictional caller may have (the team's own)."""

    number: str
    timezone: str
    brokerage: str
    people: tuple[Person, ...]
    avoid: frozenset[str]


@dataclass(frozen=True)
class Step:
    """One thing the borrower or the team does after a missed call, `after` the step before it (a borrower's
    first step: after the opener). A team step that falls outside office hours happens `if_closed` after the
    next opening instead."""

    actor: str  # borrower | team
    after: timedelta
    body: str | None = None  # a text: the borrower's, or the person's own
    sid: str | None = None  # the borrower's text's MessageSid
    outcome: str | None = None  # the team records this outcome
    note: str | None = None
    person: str | None = None  # the phone of the person acting
    if_closed: timedelta = timedelta(0)


@dataclass(frozen=True)
class Call:
    """One call to a broker's number. A missed first call carries the conversation that follows (`kind`,
    `steps`); a caller calling again, and an answered call, carry none."""

    at: datetime
    broker: str  # the Twilio number called
    caller: str
    sid: str
    dial_status: str  # no-answer | busy | completed
    bridged: bool  # a completed dial: the broker talked with the caller (False: the voicemail took it)
    duration: int
    kind: str | None = None
    steps: tuple[Step, ...] = ()

    @property
    def missed(self) -> bool:
        return not (self.dial_status == "completed" and self.bridged)


def draw(desks: list[Desk], start: datetime, end: datetime, seed: int) -> list[Call]:
    """Every call in (start, end], in time order, with the conversations that follow the missed ones.

    Each local day of each broker is drawn from its own generator (seed, broker, date), so a day is the same
    whatever window holds it: a later run that continues the history plays the rest of a day it cut."""
    calls: list[Call] = []
    for desk in desks:
        tz = ZoneInfo(desk.timezone)
        callers = _callers(_generator(seed, desk.number), desk)
        day, last = start.astimezone(tz).date(), end.astimezone(tz).date()
        while day <= last:
            calls.extend(_day(_generator(seed, desk.number, day.isoformat()), desk, day, callers))
            day += timedelta(days=1)
    return sorted((c for c in calls if start < c.at <= end), key=lambda c: (c.at, c.sid))


def _generator(*key: object) -> random.Random:
    # Demo data, not secrets: a generator that repeats itself from a seed is the point.
    return random.Random(":".join(str(k) for k in key))  # noqa: S311


def _callers(rng: random.Random, desk: Desk) -> list[str]:
    """The desk's fictional callers in a shuffled order. Day d uses the MAX_PER_DAY numbers from d * MAX_PER_DAY
    on (wrapping around), so a number calls again only a couple of weeks later, as a new conversation."""
    codes = AREA_CODES.get(desk.timezone) or (desk.number[2:5],)
    numbers = [f"+1{code}55501{n:02d}" for code in codes for n in range(100)]
    numbers = [n for n in numbers if n not in desk.avoid]
    rng.shuffle(numbers)
    return numbers


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _day(rng: random.Random, desk: Desk, day: date, callers: list[str]) -> list[Call]:
    """One local day of calls to a desk, more at lunch and after work, and what follows each missed one."""
    tz = ZoneInfo(desk.timezone)
    hours = WEEKEND_HOURS if day.weekday() >= 5 else WEEKDAY_HOURS
    moments = []
    for _ in range(min(_poisson(rng, CALLS_PER_DAY[day.weekday()]), MAX_PER_DAY)):
        hour = rng.choices(list(hours), weights=list(hours.values()))[0]
        wall = time(hour, rng.randrange(60), rng.randrange(60))
        moments.append(datetime.combine(day, wall, tzinfo=tz).astimezone(UTC))
    calls: list[Call] = []
    for i, at in enumerate(sorted(moments)):
        caller = callers[(day.toordinal() * MAX_PER_DAY + i) % len(callers)]
        calls.extend(_call(rng, desk, at, caller))
    return calls


def _sid(rng: random.Random, mark: str) -> str:
    return f"{mark}{rng.getrandbits(112):028x}"


def _answer_chance(local: datetime) -> float:
    if local.weekday() >= 5:
        return 0.1
    if local.hour in (12, 13):
        return 0.15
    if local.hour >= 17 or local.hour < 9:
        return 0.08
    return 0.35


def _call(rng: random.Random, desk: Desk, at: datetime, caller: str) -> list[Call]:
    """The call at `at`: answered, or missed with what follows (and maybe the caller calling again)."""
    sid = _sid(rng, CALL_MARK)
    if rng.random() < _answer_chance(at.astimezone(ZoneInfo(desk.timezone))):
        return [Call(at, desk.number, caller, sid, "completed", True, rng.randrange(60, 900))]
    dial, bridged = _miss(rng)
    kind, texts = _script(rng)
    steps = _borrower_steps(rng, texts) + _team_steps(rng, desk, kind)
    calls = [Call(at, desk.number, caller, sid, dial, bridged, 0 if dial != "completed" else 25, kind, steps)]
    if kind in {"ready", "handoff", "asking", "silent"} and rng.random() < CALL_AGAIN:
        again = at + timedelta(minutes=rng.uniform(15, 180))
        if rng.random() < 0.2:
            calls.append(Call(again, desk.number, caller, _sid(rng, CALL_MARK), "completed", True,
                              rng.randrange(60, 600)))
        else:
            calls.append(Call(again, desk.number, caller, _sid(rng, CALL_MARK), "no-answer", False, 0))
    return calls


def _miss(rng: random.Random) -> tuple[str, bool]:
    """How a call is missed: nobody answered, the line was busy, or the broker's voicemail took it."""
    r = rng.random()
    if r < 0.75:
        return "no-answer", False
    if r < 0.87:
        return "busy", False
    return "completed", False


def _script(rng: random.Random) -> tuple[str, tuple[str, ...]]:
    kind, _, texts = rng.choices(SCRIPTS, weights=[w for _, w, _ in SCRIPTS])[0]
    return kind, texts


def _minutes(rng: random.Random, low: float, high: float) -> timedelta:
    return timedelta(minutes=rng.uniform(low, high))


def _borrower_steps(rng: random.Random, texts: tuple[str, ...]) -> tuple[Step, ...]:
    """The missed caller's texts: the first minutes to hours after the opener, the next a few minutes after
    each question."""
    steps = []
    for i, body in enumerate(texts):
        if i:
            after = _minutes(rng, 1, 12)
        else:
            r = rng.random()
            after = _minutes(rng, 2, 20) if r < 0.7 else _minutes(rng, 20, 120) if r < 0.9 else _minutes(rng, 120, 360)
        steps.append(Step("borrower", after, body=body, sid=_sid(rng, TEXT_MARK)))
    return tuple(steps)


def _team_steps(rng: random.Random, desk: Desk, kind: str) -> tuple[Step, ...]:
    """What a person on the team does once the borrower has said their piece: nothing, a text (the borrower
    may answer it), an outcome, or a text and later an outcome."""
    habit = TEAM[kind]
    if not desk.people or rng.random() >= habit.acts:
        return ()
    person = rng.choice(desk.people)
    if_closed = _minutes(rng, 0, 90)
    first = _minutes(rng, *habit.within)
    outcome = rng.choices(list(habit.outcomes), weights=list(habit.outcomes.values()))[0]
    if rng.random() >= habit.texts_first:
        return (Step("team", first, outcome=outcome, note=NOTES[outcome], person=person.phone, if_closed=if_closed),)
    template = TEAM_TEXTS.get(kind, TEAM_TEXTS["missed"])
    body = template.format(first=person.first_name, brokerage=desk.brokerage)
    steps = [Step("team", first, body=body, person=person.phone, if_closed=if_closed)]
    gap = timedelta(hours=rng.uniform(*habit.outcome_after))
    if rng.random() < 0.3:
        thanks = _minutes(rng, 2, 30)
        steps.append(Step("borrower", thanks, body=rng.choice(THANKS), sid=_sid(rng, TEXT_MARK)))
        gap = max(gap - thanks, timedelta(minutes=5))
    if rng.random() < habit.outcome_chance:
        steps.append(Step("team", gap, outcome=outcome, note=NOTES[outcome], person=person.phone,
                          if_closed=_minutes(rng, 0, 120)))
    return tuple(steps)
