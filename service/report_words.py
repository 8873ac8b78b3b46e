"""How the sufficiency report words its figures, the same in the terminal and on a page: the verdict's headline,
the rule in a sentence, the period, shares ("38%"), times ("median 9 min, 90th percentile 42 min"), and the
figures as titled sections of (label, words). Pure functions of the report dict (service.report.build_report).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any, NamedTuple

from service.web.console_view import OUTCOMES, clock, phone

DAY_NAMES = {"mon": "Mon", "tue": "Tue", "wed": "Wed", "thu": "Thu", "fri": "Fri", "sat": "Sat", "sun": "Sun"}
DAYS = tuple(DAY_NAMES)
NO_DATA = "no data"
HEADLINES = {True: "Yes", False: "No", None: "Too early to tell"}


class Section(NamedTuple):
    """A titled group of figures: (label, words) rows."""

    title: str
    rows: list[tuple[str, str]]


def percent(share: float | None) -> str:
    """0.3833 -> "38%"; a share of nothing (null) -> "no data"; a sliver above zero is "<1%", not "0%"."""
    if share is None:
        return NO_DATA
    if 0 < share < 0.005:
        return "<1%"
    return f"{round(100 * share)}%"


def duration(seconds: int | None) -> str:
    """45 -> "45 s", 540 -> "9 min", 4800 -> "1 h 20 min", 183600 -> "2 d 3 h"; null -> "no data"."""
    if seconds is None:
        return NO_DATA
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 24 * 60:
        hours, rest = divmod(minutes, 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    days, rest = divmod(round(minutes / 60), 24)
    return f"{days} d {rest} h" if rest else f"{days} d"


def spread(times: dict[str, int | None]) -> str:
    """{"p50": 540, "p90": 2520} -> "median 9 min, 90th percentile 42 min"."""
    if times.get("p50") is None and times.get("p90") is None:
        return NO_DATA
    return f"median {duration(times.get('p50'))}, 90th percentile {duration(times.get('p90'))}"


def count(n: int, noun: str) -> str:
    """(1, "lead") -> "1 lead"; (3, "lead") -> "3 leads"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def of(part: int, whole: int, noun: str, share: float | None) -> str:
    """"34 of 40 missed-call leads (85%)", without the share when there is none ("0 of 0 ...")."""
    return f"{part} of {whole} {noun}" + (f" ({percent(share)})" if share is not None else "")


def words(key: str) -> str:
    """An outcome or handoff reason as words: "not_a_fit" -> "Not a fit", "rate_lock" -> "Rate lock"."""
    return OUTCOMES.get(key) or key.replace("_", " ").capitalize()


def tally(counts: dict[str, int]) -> str:
    """{"rate_lock": 8, "complaint": 3} -> "Rate lock 8, Complaint 3", largest first; {} -> "none"."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{words(key)} {n}" for key, n in ranked) or "none"


def headline(report: dict[str, Any]) -> str:
    return HEADLINES.get(report["verdict"].get("enough"), HEADLINES[None])


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def day(when: datetime) -> str:
    return f"{when:%b} {when.day}, {when.year}"


def period(report: dict[str, Any]) -> str:
    """"Nov 1, 2026 to Nov 30, 2026": an end at midnight is exclusive, so the last day is the one before."""
    since, until = moment(report["since"]), moment(report["until"])
    if since.time() == time(0) and until.time() == time(0):
        return f"{day(since)} to {day(until - timedelta(days=1))}"
    return f"{day(since)}, {clock(since)} to {day(until)}, {clock(until)}"


def generated(report: dict[str, Any]) -> str:
    """"Dec 2, 2026, 9:14 AM (UTC-05:00)"."""
    when = moment(report["generated_at"])
    return f"{day(when)}, {clock(when)} ({when.tzname() or 'UTC'})"


def brokers(report: dict[str, Any]) -> list[str]:
    """"Dana Broker, (555) 123-0000" for each broker in the report."""
    return [f"{b.get('name') or 'Broker'}, {phone(b.get('number'))}" for b in report["brokers"]]


def zone_note(report: dict[str, Any]) -> str:
    """Which clock the hours of the week are on."""
    zones = sorted({b.get("timezone") or "UTC" for b in report["brokers"]})
    if len(zones) == 1:
        return f"Hours are {zones[0]} time."
    return "Hours are each broker's own local time." if zones else "Hours are the broker's local time."


def rule_sentence(report: dict[str, Any]) -> str:
    """How to read the verdict: the policy's rule, this period's sample size, and what the windows are."""
    verdict = report["verdict"]
    rule = verdict["rule"]
    minutes = rule["reached_within_minutes"]
    return (
        f"The verdict follows the rule in policy {verdict.get('policy_version') or 'in force'}: text-back is "
        f"enough when at least {percent(rule['min_reached_share'])} of missed-call leads are reached by a person "
        f"within {minutes} minutes and at most {percent(rule['max_called_again_share'])} call again before "
        f"anyone reaches them. It takes at least {rule['min_missed_call_leads']} missed-call leads to tell; "
        f"this period had {report['missed_call_leads']}. The hours to cover are the hours of the week with the "
        f"most missed calls that no one returned within {minutes} minutes: a person free to call back then "
        "(or calls forwarded to one) is what raises the share."
    )


def windows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The verdict's windows as ("Mon 12:00-13:00", "6 missed calls, 4 not reached within 60 min")."""
    minutes = report["verdict"]["rule"]["reached_within_minutes"]
    return [(str(w["label"]), f"{count(int(w['missed_calls']), 'missed call')}, {w['not_reached']} not reached "
                              f"within {minutes} min") for w in report["verdict"]["windows"]]


def _hours_split(r: dict[str, Any]) -> str:
    """"10 (8 in office hours, 0 out of hours, 2 for brokers with no hours set)": every lead in one part."""
    unset = r["missed_call_leads"] - r["missed_in_hours"] - r["missed_out_of_hours"]
    parts = [f"{r['missed_in_hours']} in office hours", f"{r['missed_out_of_hours']} out of hours"]
    if unset:
        parts.append(f"{unset} for brokers with no hours set")
    return f"{r['missed_call_leads']} ({', '.join(parts)})"


def _too_recent(r: dict[str, Any]) -> str:
    """Leads too recent for the rule's minutes are left out of the shares, and said so."""
    young = r.get("too_recent_to_judge") or 0
    if not young:
        return ""
    return f" ({count(young, 'lead')} missed too recently to judge, left out)"


def figures(report: dict[str, Any]) -> list[Section]:
    """Every figure of the report, in the order a broker asks: calls, texts, a person, outcomes."""
    r = report
    leads = r["missed_call_leads"]
    within = r["reached_within"]
    return [
        Section("Calls", [
            ("Calls in", f"{r['calls']} ({r['answered_calls']} answered; {r['missed_calls']} missed, "
                         f"{percent(r['missed_share'])} of calls)" if r["calls"] else "0"),
            ("Missed-call leads", _hours_split(r) if leads and r["missed_in_hours"] + r["missed_out_of_hours"]
             else str(leads)),
        ]),
        Section("Texts", [
            ("Openers", f"{r['openers_sent']} sent of {r['openers_queued']} queued, {r['openers_delivered']} "
                        f"delivered, {r['openers_failed']} failed"),
            ("Replies", f"{r['replied']} (reply rate {percent(r['reply_rate'])})"
                        if r["reply_rate"] is not None else str(r["replied"])),
            ("Time to first reply", spread(r["time_to_first_reply_seconds"])),
        ]),
        Section("A person", [
            ("Reached by a person", of(r["reached_by_human"], leads, "missed-call leads", r["reached_share"])),
            ("Time to a person", spread(r["time_to_human_seconds"])),
            ("Reached within", f"5 min: {percent(within['5m'])}, 15 min: {percent(within['15m'])}, "
                               f"60 min: {percent(within['60m'])}" + _too_recent(r)),
            ("Called again before anyone reached them",
             f"{of(r['called_again_before_contact'], leads, 'missed-call leads', r['called_again_share'])}, "
             f"{count(r['repeat_calls_before_contact'], 'repeat call')} in all"),
            ("Handed to a person", f"{r['handoffs']} ({tally(r['handoff_reasons'])})" if r["handoffs"] else "0"),
        ]),
        Section("Outcomes", [
            ("Appointments or applications", str(r["appointments"])),
            ("Outcomes recorded", tally(r["outcomes"])),
            ("Opted out", str(r["opted_out"])),
            ("No reply", str(r["no_reply"])),
            ("Waiting for a reply", str(r["awaiting_reply"])),
        ]),
    ]
