"""What each console page shows, read in one database session and worded for people (service.web.console_view):
the inbox's rows and brokers, and a lead's conversation, calls, voicemails and timeline. Plain dicts for the
templates; the pages (service.web.console) and the actions that re-show a page (service.web.console_actions)
share them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlmodel import Session

from service.access import Principal
from service.broker_status import list_brokers
from service.leads_view import STATE_FILTERS, lead_detail, list_leads
from service.models import utcnow
from service.web import console_view as view
from service.web.pages import query_string

PAGE_SIZE = 50
SHOW = {"all": "All leads", "needs_attention": "Needs attention",
        **{s: view.STATE_FILTER_WORDS[s] for s in STATE_FILTERS if s in view.STATE_FILTER_WORDS}}


# -- the inbox ----------------------------------------------------------------------------------------------

def filters(params: Mapping[str, str]) -> tuple[str, str, str | None]:
    """The inbox's `show`, `q` and `cursor` from a query string (an unknown `show` is "all")."""
    show = params.get("show") or "all"
    return (show if show in SHOW else "all"), (params.get("q") or "").strip()[:100], params.get("cursor") or None


def lead_row(lead: dict[str, Any], ctx: Any, *, now: datetime, several: bool) -> dict[str, Any]:
    """One inbox row: who, what they need (in words), since when, and what the script announces if it is new."""
    broker = ctx.brokers_by_number.get(lead["broker"])
    tz = broker.timezone if broker else None
    when = lead["last_message_at"] or lead["missed_call_at"] or lead["created_at"]
    title = lead["name"] or view.phone(lead["phone"])
    reasons = ", ".join(ctx.templates.phrase(r) for r in lead["handoff_reasons"])
    status = view.status_words(lead)
    announce = f"{title} needs you: {reasons or 'a person is needed'}" if lead["needs_attention"] \
        else f"{title}, {status.lower()}"
    version = hashlib.sha256(repr((lead["updated_at"], lead["last_message_at"], lead["needs_attention"],
                                   lead["outcome"])).encode()).hexdigest()[:12]
    return {
        "id": lead["id"], "href": f"/console/leads/{lead['id']}", "title": title,
        "subtitle": view.phone(lead["phone"]) if lead["name"] else "", "attention": lead["needs_attention"],
        "reasons": reasons, "status": status, "summary": view.summary_line(lead),
        "broker_name": broker.name if several and broker else "", "when_ago": view.ago(when, now=now),
        "when_full": view.full_time(when, tz), "when_iso": when, "version": version, "announce": announce,
    }


def broker_row(broker: dict[str, Any], *, now: datetime) -> dict[str, Any]:
    """The "with a client until" toggle of one broker: its state now and, with hours, whether it is open."""
    tz = broker["timezone"]
    busy = view.parse_time(broker["busy_until"])
    open_label = ""
    if broker["hours"]:
        opening = broker["next_opening"]
        open_label = "open now" if broker["open_now"] else \
            (f"closed, opens {view.local_time(opening, tz, now=now)}" if opening else "closed")
    return {"number": broker["twilio_number"], "name": broker["name"],
            "busy_label": view.clock(busy.astimezone(view.zone(tz))) if busy else "", "open_label": open_label}


def inbox_context(ctx: Any, principal: Principal, *, show: str, q: str, cursor: str | None,
                  brokers: bool = True) -> dict[str, Any]:
    """Everything the inbox shows, read in one session (the live fragment, `brokers=False`, only its rows)."""
    now = utcnow()
    with Session(ctx.engine) as session:
        leads, next_cursor = list_leads(session, ctx, principal, state=None if show == "all" else show, q=q or None,
                                        cursor=cursor, limit=PAGE_SIZE)
        listed = list_brokers(session, principal, now=now) if brokers and principal.lead_id is None else []
    several = len(principal.broker_ids) > 1
    rows = [lead_row(lead, ctx, now=now, several=several) for lead in leads]
    filtered = show != "all" or bool(q)
    return {
        "rows": rows, "brokers": [broker_row(b, now=now) for b in listed],
        "show": show, "q": q, "show_options": list(SHOW.items()),
        "next_url": f"/console{query_string(show=show, q=q, cursor=next_cursor)}" if next_cursor else "",
        "empty_text": "No leads match." if filtered else
        "No leads yet. A missed call to your textback number appears here as it happens.",
        "live_url": "" if cursor else f"/console/live{query_string(show=show, q=q)}",
    }


# -- a lead -------------------------------------------------------------------------------------------------

def lead_context(ctx: Any, principal: Principal, lead_id: int) -> dict[str, Any]:
    """Everything a lead page shows (404 for a lead the user may not see, from lead_detail)."""
    now = utcnow()
    with Session(ctx.engine) as session:
        lead = lead_detail(session, ctx, principal, lead_id)
        opt_out = lead["opt_out"]  # in the opt-out scope of policies/sending/opt_out.yaml (leads_view.opt_out_json)
    tz = lead["broker_info"]["timezone"]
    title = lead["name"] or view.phone(lead["phone"])

    def when(value: str | None) -> dict[str, str]:
        return {"when": view.local_time(value, tz, now=now), "when_full": view.full_time(value, tz),
                "when_iso": value or ""}

    messages = [{**when(m["at"]), "direction": m["direction"], "body": m["body"], "media": m["media"],
                 "author": view.author(m, title, principal.phone), "status": view.message_status(m),
                 "human": m["author_kind"] in ("user", "token")} for m in lead["messages"]]
    reasons = ", ".join(ctx.templates.phrase(r) for r in lead["handoff_reasons"])
    return {
        "lead": {
            "id": lead["id"], "title": title, "subtitle": view.phone(lead["phone"]) if lead["name"] else "",
            "phone": view.phone(lead["phone"]), "broker_name": lead["broker_info"]["name"],
            "broker_phone": view.phone(lead["broker"]), "status": view.status_words(lead),
            "attention": lead["needs_attention"], "reasons": reasons,
            "handoff_ago": view.ago(lead["handoff_at"], now=now) if lead["handoff_at"] else "",
            "captured": view.captured(lead), "outcome": view.OUTCOMES.get(lead["outcome"] or "", ""),
            "outcome_value": lead["outcome"], "opted_out": opt_out["opted_out"],
            "opt_out_reason": opt_out["reason"],
        },
        "messages": messages,
        "inbound_count": sum(1 for m in lead["messages"] if m["direction"] == "in"),
        "voicemails": [{**when(v["at"]), "url": v["recording_url"], "duration": view.duration(v["duration"]),
                        "transcript": v["transcript"]} for v in lead["voicemails"] if v["recording_url"]],
        "calls": [{**when(c["at"]), "words": view.call_words(c)} for c in lead["calls"]],
        "events": [{**when(e["at"]), "words": view.event_words(e, ctx.templates.phrase)}
                   for e in lead["events"]],
        "outcomes": list(view.OUTCOMES.items()),
        "user_phone": view.phone(principal.phone),
        "live_url": f"/console/leads/{lead['id']}/live",
    }


