"""The sufficiency report: is text-back enough, or does the brokerage need live answering for some hours?

`build_report` reads one row per missed-call case (service.cases) whose missed call falls in [since, until),
joined to its opener's message, plus the period's call counts, and returns the figures as a dict (the JSON
contract of `textback report --format json` and GET /api/report). What came of a case counts whenever it
happened (a case missed on the last evening of the window and reached the next morning is reached); a case
missed before the window is not in it, whatever happened in it.

Definitions (every share is a fraction 0..1 rounded to 4 places, null when its denominator is 0; every time
is whole seconds, the percentile by nearest rank: the smallest value with at least p% of the values at or
below it):
- calls: calls to the broker's textback number in the window; missed_calls: those the broker did not
  answer; answered_calls: those they did (a broker whose carrier forwards only unanswered calls shows none).
- missed_call_leads: cases started in the window (a caller who calls again is one case; withheld numbers
  and opted-out callers have none); the funnel, by_hour and the verdict count cases.
- openers_sent: openers accepted by Twilio (or printed in dry-run); delivered / failed: as Twilio reported
  (failed includes a send Twilio refused); replied: cases with an opener and a reply;
  time_to_first_reply: from the opener's sending to the reply.
- reached_by_human: cases a person reached (a user's text, a bridged callback, the broker answering a call,
  an outcome of reached or better); reached_how and reached_by: those first contacts by how (text, call,
  answered_call, an outcome) and by whom (the user's phone); time_to_human: from the missed call to that
  contact; reached_within: share of missed-call leads reached within 5, 15 and 60 minutes.
- repeat_calls_before_contact: calls (answered or missed) from a case's caller after the first and before
  any human contact; called_again_before_contact: cases with at least one.
- no_reply: openers sent at least `no_reply_after_hours` ago with no reply; awaiting_reply: younger ones.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Float, Text, and_, case, cast, func, literal, or_, select
from sqlmodel import Session, col
from sqlmodel import select as select_rows

from service.errors import date_out_of_range
from service.models import Broker, CallEvent, LeadCase, OutboundMessage, UTCDateTime, utcnow
from service.phones import InvalidPhone, to_e164
from service.sufficiency import SufficiencyRule

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WITHIN = {"5m": 5 * 60, "15m": 15 * 60, "60m": 60 * 60}
BUCKETS = (("within 5 min", 5 * 60), ("5-15 min", 15 * 60), ("15-60 min", 3600), ("1-4 h", 4 * 3600),
           ("4-24 h", 24 * 3600), ("over 24 h", None))
CONTACT_OUTCOMES = ("appointment", "application")
DEFAULT_DAYS = 30


class ReportError(ValueError):
    """A bad report request (a date that does not parse, since after until): the message names the parameter."""


# -- the window ---------------------------------------------------------------------------------------------

def parse_bound(value: str, name: str, zone: ZoneInfo, *, end: bool) -> datetime:
    """A date (the start of that day in `zone`; for `until`, the end of it: the day is included) or an ISO
    datetime (with an offset, or in `zone` without one)."""
    text = value.strip()
    try:
        parsed = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        msg = f"{name}: {value!r} is not a date (YYYY-MM-DD) or an ISO datetime"
        raise ReportError(msg) from None
    why = date_out_of_range(value, parsed.year)
    if why:
        raise ReportError(f"{name}: {why}")
    if not isinstance(parsed, datetime):  # a day (a datetime is a date too)
        start = datetime.combine(parsed + timedelta(days=1) if end else parsed, time(0), tzinfo=zone)
        return start.astimezone(ZoneInfo("UTC"))
    moment = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)
    return moment.astimezone(ZoneInfo("UTC"))


def window(since: str | None, until: str | None, zone: ZoneInfo, now: datetime | None = None) -> tuple[datetime, datetime]:
    """[since, until) in UTC: until defaults to now, since to DEFAULT_DAYS before until."""
    end = parse_bound(until, "until", zone, end=True) if until else (now or utcnow())
    start = parse_bound(since, "since", zone, end=False) if since else end - timedelta(days=DEFAULT_DAYS)
    if start >= end:
        msg = f"since: {start.isoformat()} is not before until ({end.isoformat()})"
        raise ReportError(msg)
    return start, end


def report_zone(brokers: list[Broker]) -> ZoneInfo:
    """Where dates are read and shown: the brokers' time zone when they share one, else UTC."""
    zones = {b.timezone for b in brokers}
    return ZoneInfo(zones.pop()) if len(zones) == 1 else ZoneInfo("UTC")


# -- the figures --------------------------------------------------------------------------------------------

def _seconds(dialect: str, later: Any, earlier: Any) -> ColumnElement[Any]:
    """later - earlier in seconds, computed by the database (reading 100,000 datetimes costs more than the
    rest of the report)."""
    if dialect == "sqlite":
        return cast((func.julianday(later) - func.julianday(earlier)) * 86400.0, Float)
    return func.extract("epoch", later - earlier)


def share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def percentile(sorted_values: list[int], p: int) -> int | None:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    if not sorted_values:
        return None
    return sorted_values[max(math.ceil(p / 100 * len(sorted_values)) - 1, 0)]


def _p50_p90(ordered: list[int]) -> dict[str, int | None]:
    return {"p50": percentile(ordered, 50), "p90": percentile(ordered, 90)}


# Which brokers' rows a report reads, each group over its own [since, until) (its brokers' time zone's days).
Spans = list[tuple[list[int], datetime, datetime]]


def _in_spans(broker: Any, at: Any, spans: Spans) -> ColumnElement[bool]:
    return or_(*(and_(broker.in_(ids), at >= since, at < until) for ids, since, until in spans))


def _call_counts(session: Session, spans: Spans) -> tuple[int, int, int]:
    missed = col(CallEvent.missed).is_(True) & col(CallEvent.kind).in_(("voice", "dial-status"))
    answered = col(CallEvent.missed).is_(False) & (col(CallEvent.kind) == "dial-status")
    row = session.connection().execute(
        select(func.count(case((col(CallEvent.kind) == "voice", 1))), func.count(case((missed, 1))),
               func.count(case((answered, 1))))
        .where(_in_spans(col(CallEvent.broker_id), col(CallEvent.created_at), spans))
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


def _case_rows(session: Session, spans: Spans, no_reply_before: datetime, now: datetime) -> Sequence[Any]:
    """One row per case, all fetched at once. The handoff reasons come as their JSON text, decoded once per
    distinct list by build_report: decoding every row's list took half of a 100,000-case report
    (benchmarks/bench_report.py)."""
    dialect = session.get_bind().dialect.name
    opener = OutboundMessage.__table__.alias("opener")  # type: ignore[attr-defined]
    sent_at = func.coalesce(opener.c.sent_at, col(LeadCase.opener_at))
    old = literal(no_reply_before, UTCDateTime())
    return session.connection().execute(
        select(
            col(LeadCase.hour_of_week), col(LeadCase.in_hours), opener.c.status, opener.c.delivery_status,
            _seconds(dialect, col(LeadCase.first_reply_at), sent_at),
            _seconds(dialect, col(LeadCase.human_at), col(LeadCase.missed_at)),
            col(LeadCase.handoff_at).is_not(None), cast(col(LeadCase.handoff_reasons), Text),
            col(LeadCase.repeat_calls),
            col(LeadCase.outcome), col(LeadCase.opted_out_at).is_not(None),
            case((and_(col(LeadCase.opener_message_id).is_not(None), sent_at < old), 1), else_=0),
            col(LeadCase.first_reply_at).is_not(None), col(LeadCase.human_how), col(LeadCase.human_by),
            _seconds(dialect, literal(now, UTCDateTime()), col(LeadCase.missed_at)),
        )
        .select_from(LeadCase)
        .outerjoin(opener, opener.c.id == col(LeadCase.opener_message_id))
        .where(_in_spans(col(LeadCase.broker_id), col(LeadCase.missed_at), spans))
    ).all()


def build_report(session: Session, *, brokers: list[Broker], since: datetime, until: datetime,
                 rule: SufficiencyRule, now: datetime | None = None, spans: Spans | None = None) -> dict[str, Any]:
    """Every figure for the brokers' cases missed in [since, until) (see the module's definitions). `spans`:
    each group of brokers over its own window instead (dates read in each broker's time zone: `report_for`)."""
    now = now or utcnow()
    if spans is None:
        spans = [([b.id for b in brokers if b.id is not None], since, until)]
    calls, missed_calls, answered_calls = _call_counts(session, spans)
    rows = _case_rows(session, spans, now - timedelta(hours=rule.no_reply_after_hours), now)
    within_limit = rule.reached_within_minutes * 60

    leads = len(rows)
    in_hours = out_of_hours = queued = sent = delivered = failed = replied = handoffs = 0
    repeat_calls = called_again = opted_out = no_reply = awaiting = 0
    reply_times: list[int] = []
    human_times: list[int] = []
    reason_lists: Counter[str] = Counter()  # the JSON text of each handoff's reasons, read once per distinct list
    outcomes: Counter[str] = Counter()
    reached_how: Counter[str] = Counter()
    reached_by: Counter[str] = Counter()
    hour_leads = [0] * 168
    hour_times: list[list[int]] = [[] for _ in range(168)]
    # A lead is judged against a limit once it is that old, or once a person reached it within the limit: a lead
    # missed three minutes ago is not yet "not reached within 60 minutes".
    ages: list[int] = []
    reached_ages: list[int] = []
    hour_judged = [0] * 168
    judged = called_again_judged = 0
    for (how, open_hours, status, delivery, reply_s, human_s, handed_off, handoff_reasons, repeats, outcome,
         out, old_opener, has_reply, human_how, human_by, age_s) in rows:
        hour_leads[how] += 1
        age = max(round(age_s or 0), 0)
        ages.append(age)
        if human_s is not None:
            reached_ages.append(age)
        if age >= within_limit or (human_s is not None and human_s <= within_limit):
            hour_judged[how] += 1
            judged += 1
            called_again_judged += bool(repeats)
        if open_hours is True:
            in_hours += 1
        elif open_hours is False:
            out_of_hours += 1
        if status is not None:
            queued += 1
            was_sent = status in ("sent", "dry_run")
            sent += was_sent
            delivered += delivery == "delivered"
            failed += status == "failed" or delivery in ("failed", "undelivered")
            if was_sent and has_reply:
                replied += 1
                reply_times.append(max(round(reply_s), 0))
            elif was_sent and old_opener:
                no_reply += 1
            elif was_sent:
                awaiting += 1
        if handed_off:
            handoffs += 1
            reason_lists[handoff_reasons] += 1
        if human_s is not None:
            seconds = max(round(human_s), 0)
            reached_how[human_how or "unknown"] += 1
            reached_by[human_by or "unknown"] += 1
            human_times.append(seconds)
            hour_times[how].append(seconds)
        if repeats:
            repeat_calls += repeats
            called_again += 1
        if outcome:
            outcomes[outcome] += 1
        opted_out += bool(out)

    reasons: Counter[str] = Counter()
    for text, count in reason_lists.items():
        for name in json.loads(text or "[]") or []:
            reasons[name] += count
    # Counts of times at or under a limit, from the sorted times (bisect_right: how many are <= the limit).
    reply_times.sort()
    human_times.sort()
    reached = len(human_times)
    within = {key: bisect_right(human_times, limit) for key, limit in WITHIN.items()}
    ages.sort()
    reached_ages.sort()
    # Judged at each limit: old enough, or younger but reached already (then within the limit: reached <= age).
    within_judged = {key: len(ages) - bisect_left(ages, limit) + bisect_left(reached_ages, limit)
                     for key, limit in WITHIN.items()}
    within_rule = bisect_right(human_times, within_limit)
    for times in hour_times:
        times.sort()
    hour_reached = [bisect_right(times, within_limit) for times in hour_times]  # within the rule's minutes
    hour_hour = [bisect_right(times, 3600) for times in hour_times]
    at_or_under = [bisect_right(human_times, top) for _, top in BUCKETS if top is not None] + [reached]
    buckets = [n - (at_or_under[i - 1] if i else 0) for i, n in enumerate(at_or_under)]

    enough, reason = rule.verdict(judged, within_rule, called_again_judged)
    appointments = sum(outcomes[o] for o in CONTACT_OUTCOMES)
    zone = report_zone(brokers)
    return {
        "since": since.astimezone(zone).isoformat(), "until": until.astimezone(zone).isoformat(),
        "generated_at": now.astimezone(zone).isoformat(),
        "brokers": [{"number": b.twilio_number, "name": b.name, "timezone": b.timezone} for b in brokers],
        "calls": calls, "answered_calls": answered_calls, "missed_calls": missed_calls,
        "missed_share": share(missed_calls, calls),
        "missed_call_leads": leads, "missed_in_hours": in_hours, "missed_out_of_hours": out_of_hours,
        "openers_queued": queued, "openers_sent": sent, "openers_delivered": delivered, "openers_failed": failed,
        "replied": replied, "reply_rate": share(replied, sent),
        "time_to_first_reply_seconds": _p50_p90(reply_times),
        "handoffs": handoffs, "handoff_reasons": dict(sorted(reasons.items())),
        "reached_by_human": reached, "reached_share": share(reached, leads),
        "time_to_human_seconds": _p50_p90(human_times),
        "reached_how": dict(sorted(reached_how.items())), "reached_by": dict(sorted(reached_by.items())),
        "reached_within": {key: share(count, within_judged[key]) for key, count in within.items()},
        "reached_within_judged": within_judged,
        "too_recent_to_judge": leads - judged,
        "repeat_calls_before_contact": repeat_calls, "called_again_before_contact": called_again,
        "called_again_share": share(called_again, leads),
        "outcomes": dict(sorted(outcomes.items())), "appointments": appointments,
        "opted_out": opted_out, "no_reply": no_reply, "awaiting_reply": awaiting,
        "funnel": [
            {"step": "missed", "label": "Missed-call leads", "count": leads},
            {"step": "texted", "label": "Texted", "count": sent},
            {"step": "replied", "label": "Replied", "count": replied},
            {"step": "reached", "label": "Reached by a person", "count": reached},
            {"step": "appointment", "label": "Appointment or application", "count": appointments},
        ],
        "time_to_human_buckets": [
            *({"label": label, "count": count} for (label, _), count in zip(BUCKETS, buckets, strict=True)),
            {"label": "not reached", "count": leads - reached},
        ],
        "by_hour": [
            {"day": DAYS[h // 24], "hour": h % 24, "missed_calls": hour_leads[h],
             "reached_within_60m": hour_hour[h], "time_to_human_p50": percentile(hour_times[h], 50)}
            for h in range(168)
        ],
        "verdict": {"enough": enough, "reason": reason, "windows": _windows(rule, hour_leads, hour_judged, hour_reached),
                    "rule": rule.as_dict(), "policy_version": rule.version},
    }


def _windows(rule: SufficiencyRule, hour_leads: list[int], hour_judged: list[int],
             hour_reached: list[int]) -> list[dict[str, Any]]:
    """The hours of the week with the most missed-call leads nobody reached within the rule's minutes, among the
    leads old enough to be judged (`hour_judged`; a lead missed minutes ago has not failed yet)."""
    not_reached = [(hour_judged[h] - hour_reached[h], h) for h in range(168)]
    chosen = sorted(((n, h) for n, h in not_reached if n >= rule.windows_min_not_reached),
                    key=lambda item: (-item[0], item[1]))
    return [
        {"day": DAYS[h // 24], "hour": h % 24,
         "label": f"{DAYS[h // 24].capitalize()} {h % 24:02d}:00-{(h % 24 + 1) % 24:02d}:00",
         "missed_calls": hour_leads[h], "not_reached": n}
        for n, h in chosen[: rule.windows_top]
    ]


# -- who the report is for ----------------------------------------------------------------------------------

def report_brokers(session: Session, *, visible: frozenset[int] | None, number: str | None) -> list[Broker]:
    """The active brokers a report covers: the one numbered `number`, else every one visible (None: all).
    ReportError for a number that is not a broker one may see (the API answers 404, as for a lead)."""
    query = select_rows(Broker).where(col(Broker.active).is_(True)).order_by(col(Broker.name), col(Broker.id))
    brokers = [b for b in session.exec(query).all() if visible is None or b.id in visible]
    if number is None:
        return brokers
    try:
        e164 = to_e164(number)
    except InvalidPhone:
        msg = f"broker: {number!r} is not a phone number (a broker's textback number)"
        raise ReportError(msg) from None
    chosen = [b for b in brokers if b.twilio_number == e164]
    if not chosen:
        msg = f"broker: {number!r} is not the textback number of a broker you can see"
        raise ReportError(msg)
    return chosen


def report_for(session: Session, *, rule: SufficiencyRule, visible: frozenset[int] | None, broker: str | None,
               since: str | None, until: str | None, now: datetime | None = None) -> dict[str, Any]:
    """The report as the CLI, the API and the console ask for it: strings in, ReportError for a bad one."""
    brokers = report_brokers(session, visible=visible, number=broker)
    start, end = window(since, until, report_zone(brokers), now)
    zones: dict[str, list[Broker]] = {}
    for b in brokers:
        zones.setdefault(b.timezone, []).append(b)
    if len(zones) < 2:
        return build_report(session, brokers=brokers, since=start, until=end, rule=rule, now=now)
    # Brokers in several time zones: a date is a day in each broker's own zone ("2026-12-04" is Los Angeles' day
    # for a Los Angeles broker and New York's for a New York one); the header shows the span they cover together.
    spans: Spans = []
    for zone, group in zones.items():
        group_start, group_end = window(since, until, ZoneInfo(zone), now)
        spans.append(([b.id for b in group if b.id is not None], group_start, group_end))
    return build_report(session, brokers=brokers, since=min(s for _, s, _ in spans), until=max(e for _, _, e in spans),
                        rule=rule, now=now, spans=spans)
