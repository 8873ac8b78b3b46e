"""How the console words things: times in the broker's time zone ("Tue 3:05 PM"), time since ("4 min ago"),
phone numbers, states, captured fields, outcomes and events in plain words. Pure functions of the API's dicts
(service.leads_view), so the pages and the live fragments say the same thing the same way.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from service.models import LeadState

LOAN_TYPES = {"purchase": "Purchase", "refinance": "Refinance", "home_equity": "Home equity", "other": "Other loan"}
TIMELINES = {
    "under_30_days": "within 30 days", "1_to_3_months": "in 1–3 months", "3_to_6_months": "in 3–6 months",
    "over_6_months": "in 6+ months", "researching": "just researching",
}
STATES: dict[str, str] = {
    LeadState.new: "Missed call", LeadState.opened: "Texted, no reply yet", LeadState.asking: "Answering questions",
    LeadState.handoff: "Asked for a person", LeadState.ready: "Ready for a call", LeadState.closed: "Closed",
}
# The inbox's "Show" choices for a state (the API's `state` filter).
STATE_FILTER_WORDS: dict[str, str] = {
    LeadState.new: "Missed calls, not texted", LeadState.opened: "Texted, no reply yet",
    LeadState.asking: "Answering questions", LeadState.handoff: "Asked for a person",
    LeadState.ready: "Ready for a call", LeadState.closed: "Closed",
}
# The outcome buttons, in the order a broker meets them (the API's values: POST /api/leads/{id}/outcome).
OUTCOMES = {
    "reached": "Reached", "appointment": "Appointment", "application": "Application", "not_a_fit": "Not a fit",
    "lost": "Lost", "no_response": "No response",
}
MESSAGE_STATUSES = {
    "pending": "sending…", "sending": "sending…", "queued": "sent", "accepted": "sent", "sent": "sent", "dry_run": "dry-run (not sent)",
    "delivered": "delivered", "read": "read", "failed": "not delivered", "undelivered": "not delivered",
    "blocked": "held by the guard", "suppressed": "not sent", "canceled": "canceled", "received": "received",
}
EVENTS = {
    "missed_call": "Missed call", "opener": "Opener texted", "reply": "Borrower replied",
    "field_captured": "Captured", "handoff": "Needs a person", "handoff_worked": "Taken up",
    "human_text": "Texted by", "call_started": "Call started by", "human_contact": "In touch with the borrower",
    "outcome": "Outcome", "bot_stopped": "Automated texts stopped", "opted_out": "Opted out of texts",
    "opted_in": "Opted back in", "sla_alert": "Reminder sent", "opener_delivered": "Opener delivered",
    "opener_failed": "Opener not delivered", "call_answered": "Call answered by the broker",
    "language": "Now writes in",
}
LANGUAGES = {"en": "English", "es": "Spanish"}


def zone(name: str | None) -> ZoneInfo:
    """The broker's time zone (UTC when the name is unknown, so a page never fails on it)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def parse_time(value: str | datetime | None) -> datetime | None:
    """The API's ISO times ("...Z") or a datetime, as an aware datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def clock(moment: datetime) -> str:
    """3:05 PM."""
    return f"{moment.hour % 12 or 12}:{moment:%M} {'AM' if moment.hour < 12 else 'PM'}"


def local_time(value: str | datetime | None, tz: str | None, *, now: datetime) -> str:
    """"Tue 3:05 PM" in the broker's zone within the last six days, "Jun 3, 3:05 PM" before, "" for None."""
    moment = parse_time(value)
    if moment is None:
        return ""
    here = moment.astimezone(zone(tz))
    if timedelta(0) <= now - moment < timedelta(days=6) or moment > now:
        return f"{here:%a} {clock(here)}"
    return f"{here:%b} {here.day}, {clock(here)}"


def full_time(value: str | datetime | None, tz: str | None) -> str:
    """"Tue Jun 9 2026, 3:05 PM PDT": a tooltip that leaves no doubt."""
    moment = parse_time(value)
    if moment is None:
        return ""
    here = moment.astimezone(zone(tz))
    return f"{here:%a %b} {here.day} {here.year}, {clock(here)} {here.tzname() or ''}".strip()


def ago(value: str | datetime | None, *, now: datetime) -> str:
    """"just now", "4 min ago", "2 h ago", "3 d ago"."""
    moment = parse_time(value)
    if moment is None:
        return ""
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


def phone(number: str | None) -> str:
    """+14155550123 -> (415) 555-0123; other numbers as they are."""
    if number and len(number) == 12 and number.startswith("+1") and number[2:].isdigit():
        return f"({number[2:5]}) {number[5:8]}-{number[8:]}"
    return number or ""


def captured(lead: dict[str, Any]) -> list[tuple[str, str]]:
    """What the bot learnt, as (label, words), only what is known."""
    rows: list[tuple[str, str]] = []
    if lead.get("loan_type") in LOAN_TYPES:
        rows.append(("Loan", LOAN_TYPES[lead["loan_type"]]))
    if lead.get("timeline") in TIMELINES:
        rows.append(("Timeline", TIMELINES[lead["timeline"]].capitalize()))
    if lead.get("applied_elsewhere") is not None:
        rows.append(("Applied elsewhere", "Yes" if lead["applied_elsewhere"] else "No"))
    if lead.get("callback_window"):
        rows.append(("Best time to call", str(lead["callback_window"])))
    if lead.get("language") in LANGUAGES and lead.get("language") != "en":
        rows.append(("Writes in", LANGUAGES[lead["language"]]))  # texts to them are in it too
    return rows


def summary_line(lead: dict[str, Any]) -> str:
    """"Refinance · within 30 days", or "" when nothing is known yet."""
    parts = [LOAN_TYPES.get(lead.get("loan_type") or ""), TIMELINES.get(lead.get("timeline") or "")]
    return " · ".join(p for p in parts if p)


def event_words(event: dict[str, Any], phrase: Any) -> str:
    """One line of the timeline: what happened, who did it, and the detail that matters."""
    kind = str(event.get("kind", ""))
    data: dict[str, Any] = event.get("data") or {}
    label = EVENTS.get(kind, kind.replace("_", " ").capitalize())
    who = event.get("actor_name") or event.get("actor")
    if kind in ("human_text", "call_started") and who:
        return f"{label} {who}"
    if kind == "field_captured" and data.get("field"):
        field = str(data["field"]).replace("_", " ")
        value = data.get("value")
        value = LOAN_TYPES.get(str(value)) or TIMELINES.get(str(value)) or value
        return f"{label} {field}: {value}"
    if kind == "language" and data.get("language"):
        return f"{label} {LANGUAGES.get(str(data['language']), data['language'])}"
    if kind == "handoff" and data.get("reasons"):
        return f"{label}: {', '.join(phrase(r) for r in data['reasons'])}"
    if kind == "outcome":
        text = f"{label}: {OUTCOMES.get(str(data.get('outcome')), data.get('outcome'))}"
        if who and who != "textback":
            text += f" (by {who})"
        return text + (f" — “{data['note']}”" if data.get("note") else "")
    if kind == "human_contact" and data.get("how"):
        how = str(data["how"])
        return f"{label}: " + {"text": "by text", "call": "by phone"}.get(how, OUTCOMES.get(how, how).lower())
    if kind == "sla_alert" and data.get("to"):
        to = data["to"] if isinstance(data["to"], list) else [data["to"]]
        return f"{label} to {', '.join(phone(str(p)) for p in to)}"
    return label


def status_words(lead: dict[str, Any]) -> str:
    """Where the lead is, in words: its outcome once marked, else who has it, else the bot's state."""
    if lead.get("outcome"):
        return f"Outcome: {OUTCOMES.get(lead['outcome'], lead['outcome'])}"
    if lead.get("human_at"):
        return "Taken over by a person"
    return STATES.get(lead.get("state") or "", str(lead.get("state") or "").capitalize())


def author(message: dict[str, Any], borrower: str, my_phone: str | None) -> str:
    """Who wrote a text: the borrower (by name or number), textback, you, or a teammate by name."""
    if message["direction"] == "in":
        return borrower
    if message.get("author_kind") == "textback":
        return "textback"
    if my_phone and message.get("author_phone") == my_phone:
        return "You"
    return str(message.get("author") or "a person")


def message_status(message: dict[str, Any]) -> str:
    """A text to the borrower: where it is (delivered, sending, not delivered...); nothing for their texts."""
    if message["direction"] == "in":
        return ""
    state = message.get("delivery_status") or message.get("status") or ""
    words = MESSAGE_STATUSES.get(state, state.replace("_", " "))
    return f"{words}, sent past a warning" if message.get("guard_override") else words


def duration(seconds: int | None) -> str:
    """42 -> "0:42"."""
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds is not None else ""


RINGING = ("requested", "queued", "initiated", "ringing", "ringing-user")
NOT_CONNECTED = ("failed", "no-answer", "busy", "canceled", "ended")


def call_words(call: dict[str, Any]) -> str:
    """A call on the lead page: the borrower's call in, or a click-to-call out and how far it got."""
    if call.get("kind") == "borrower_call":
        if call.get("missed") is True:
            return "Called in, missed"
        if call.get("missed") is False:
            return "Called in, answered" + (f" ({duration(call.get('duration'))})" if call.get("duration") else "")
        return "Called in"
    who = call.get("user_name") or phone(call.get("user_phone"))
    status = str(call.get("status") or "")
    if status in RINGING:
        return f"Calling {who}: Twilio is ringing {who}'s phone, then connects the borrower"
    if status in ("bridging", "in-progress", "answered"):
        return f"{who} answered; connecting the borrower"
    if status == "completed":
        if call.get("bridged"):
            return f"{who} talked with the borrower" + (f" ({duration(call.get('duration'))})"
                                                        if call.get("duration") else "")
        return f"{who}'s call ended before the borrower was connected"
    if status in NOT_CONNECTED or status == "not-placed":
        why = call.get("error") or status.replace("-", " ")
        return f"{who}'s call did not connect ({why})"
    return f"{who}'s call: {status.replace('-', ' ')}"
