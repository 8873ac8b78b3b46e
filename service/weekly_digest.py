"""The weekly digest: every Monday from 08:00 in the broker's time zone, one short text to the broker's alert
numbers with last week's headline numbers (service.report) and a link to the report page.

Once per broker and week: the text's dedupe key is the broker and the week's Monday, so any number of workers
may sweep. A week with no calls sends nothing. TEXTBACK_WEEKLY_DIGEST=false turns it off.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from service.alerts import pending_ids, queue_alert
from service.db import session_scope
from service.logs import log
from service.models import Broker, OutboundMessage, utcnow
from service.report import build_report
from service.sufficiency import load_sufficiency

if TYPE_CHECKING:
    from service.context import AppContext

logger = logging.getLogger("textback.digest")
SEND_AT = time(8, 0)  # Monday, the broker's wall clock
VERDICT_WORDS = {True: "Text-back is enough", False: "Callers need more than a text", None: "Too few calls to judge"}


def last_week(broker: Broker, now: datetime) -> tuple[date, datetime, datetime] | None:
    """(Monday of last week, its start, its end) once this week's digest time has passed; else None."""
    zone = ZoneInfo(broker.timezone)
    local = now.astimezone(zone)
    monday = local.date() - timedelta(days=local.weekday())
    if local < datetime.combine(monday, SEND_AT, tzinfo=zone):
        return None
    start = monday - timedelta(days=7)
    return start, datetime.combine(start, time(0), tzinfo=zone), datetime.combine(monday, time(0), tzinfo=zone)


def _minutes(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    return f"{round(seconds / 60)} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def digest_values(ctx: AppContext, broker: Broker, week: date, report: dict[str, Any]) -> dict[str, str]:
    """What the `weekly_digest` template says (the headline numbers, the verdict, the report link)."""
    query = urlencode({"broker": broker.twilio_number, "since": week.isoformat(),
                       "until": (week + timedelta(days=6)).isoformat()})
    return {
        "week": week.strftime("%b %d").replace(" 0", " "),
        "missed": str(report["missed_call_leads"]), "texted": str(report["openers_sent"]),
        "replied": str(report["replied"]), "reached": str(report["reached_by_human"]),
        "median": _minutes(report["time_to_human_seconds"]["p50"]),
        "again": str(report["called_again_before_contact"]),
        "verdict": VERDICT_WORDS[report["verdict"]["enough"]],
        "url": f"{ctx.settings.public_url}/console/report?{query}",
    }


def _already(session: Session, key: str) -> bool:
    return session.exec(select(OutboundMessage.id).where(col(OutboundMessage.dedupe_key).startswith(key))).first() \
        is not None


def sweep(ctx: AppContext, *, now: datetime | None = None) -> list[int]:
    """Queue each broker's digest for last week when it is due and not yet sent; the ids to send."""
    if not ctx.settings.weekly_digest:
        return []
    now = now or utcnow()
    ids: list[int] = []
    for broker in ctx.brokers_by_number.values():
        due = last_week(broker, now)
        if due is None or broker.id is None or not broker.active or not broker.alert_to:
            continue
        week, start, end = due
        key = f"digest:{broker.id}:{week.isoformat()}"
        if key in ctx.digests_sent:
            continue
        try:
            with session_scope(ctx.engine) as session:
                if not _already(session, key):
                    ids += _queue(session, ctx, broker, key, week, start, end, now)
            ctx.digests_sent.add(key)
        except Exception as exc:  # tried again on the next sweep
            log(logger, logging.ERROR, "weekly digest failed", broker_id=broker.id, exc_type=type(exc).__name__)
    return ids


def _queue(session: Session, ctx: AppContext, broker: Broker, key: str, week: date, start: datetime,
           end: datetime, now: datetime) -> list[int]:
    report = build_report(session, brokers=[broker], since=start, until=end,
                          rule=load_sufficiency(ctx.settings.policies_dir), now=now)
    if not report["calls"] and not report["missed_call_leads"]:
        log(logger, logging.INFO, "weekly digest skipped: no calls", broker_id=broker.id, week=week.isoformat())
        return []
    alerts = queue_alert(session, ctx, broker=broker, lead=None, template_id="weekly_digest",
                         values=digest_values(ctx, broker, week, report), dedupe_key=key)
    log(logger, logging.INFO, "weekly digest queued", broker_id=broker.id, week=week.isoformat(), to=len(alerts))
    return pending_ids(alerts)
