"""Queue a text: render the fixed template -> gates -> output guard -> persist the row.

A text to anyone outside the broker's team is a borrower text: the gates (service.sending.gates) decide first
(suppressed rows are stored, deferred rows wait as pending), then the output guard reads it (blocked rows are
stored). Persisting is idempotent per dedupe key. Nothing here sends (service.sender), alerts the team about
the outcome (service.alerts) or changes the lead's state (service.conversation): callers act on the returned
verdict.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlmodel import Session

from service import metrics
from service.brokers import template_values
from service.db import insert_once
from service.lead_links import console_login_url
from service.logs import log
from service.models import AUTOMATED, Audience, Broker, Lead, MessageStatus, OutboundMessage, utcnow
from service.phones import mask
from service.reply_language import language_note, language_of
from service.sending import gates, verdicts
from service.sending.gates import ALLOW, Kind, Verdict
from service.store import saved_id

if TYPE_CHECKING:
    from service.context import AppContext

logger = logging.getLogger("textback.outbox")


@dataclass(frozen=True)
class Queued:
    """A stored text and the verdict that set its status."""

    msg: OutboundMessage
    verdict: Verdict


def prepare_text(
    session: Session,
    ctx: AppContext,
    *,
    broker: Broker,
    to: str,
    template_id: str,
    purpose: str,
    lead: Lead | None = None,
    values: Mapping[str, str] | None = None,
    dedupe_key: str | None = None,
    now: datetime | None = None,
    from_phone: str | None = None,
    facts: gates.QueueFacts | None = None,
) -> Queued:
    """Render, gate and guard one text: the row, not stored yet, with the verdict that set its status. With
    `facts` (the gates' reads, done already) no statement runs."""
    # An alert's $link defaults to the console's sign-in page (service.alerts gives each recipient their own).
    # $language_note: an alert about a lead that writes in Spanish says so.
    defaults = {**template_values(broker), "link": console_login_url(ctx.settings),
                "language_note": language_note(ctx.templates, lead)}
    # The one place a text's language is chosen: the lead's (a template with no variant in it is in English).
    rendered = ctx.templates.render(template_id, {**defaults, **(values or {})}, language_of(lead))
    # Only the team's own numbers (brokers, alert numbers, the operator) receive a text the output guard does
    # not read: to anyone else, whatever the template says, it is a borrower text, guarded and gated.
    audience = Audience.broker if rendered.audience == "broker" and to in ctx.team_numbers else Audience.borrower
    if audience == Audience.borrower:
        from_phone = None
    msg = OutboundMessage(
        dedupe_key=dedupe_key, broker_id=saved_id(broker), lead_id=lead.id if lead else None,
        audience=audience, purpose=purpose, template_id=template_id, language=rendered.language, to_phone=to,
        from_phone=from_phone or broker.twilio_number, body=rendered.text, policy_version=ctx.policy_version,
    )
    verdict = ALLOW
    if audience == Audience.borrower:
        verdict = gates.at_queue(session, ctx, broker=broker, lead=lead, to=to, purpose=purpose,
                                 now=now or utcnow(), facts=facts)
        if verdict.kind is Kind.suppress:
            msg.status, msg.last_error = MessageStatus.suppressed, verdict.last_error
        else:
            if verdict.kind is Kind.defer and verdict.until is not None:
                msg.next_attempt_at, msg.last_error = verdict.until, verdict.last_error
            result = ctx.guard.check(rendered.text, required=rendered.required, template=template_id)
            msg.guard_result = {
                "allowed": bool(result.allowed),
                "violations": [{"rule": v.rule, "match": v.match} for v in result.violations],
            }
            if not result.allowed:
                verdict = gates.guarded(result)
                msg.status, msg.last_error = MessageStatus.blocked, verdict.last_error
        verdicts.record(msg, verdict, stage="queue", now=now or utcnow(), policy_version=verdicts.version_of(ctx, msg))
    return Queued(msg, verdict)


def counts_for_lead(msg: OutboundMessage, lead: Lead | None) -> bool:
    """Whether storing this text uses up one of the lead's automated texts (the per-lead cap)."""
    return msg.status == MessageStatus.pending and lead is not None and msg.purpose in AUTOMATED


def note_stored(queued: Queued, broker: Broker) -> None:
    """The metrics and the log line of a text just stored."""
    msg, verdict = queued.msg, queued.verdict
    if verdict.kind is not Kind.allow:
        metrics.text(msg.audience, msg.status if msg.status != MessageStatus.pending else "deferred")
    log(logger, logging.INFO, "text queued", id=msg.id, template=msg.template_id, status=msg.status,
        to=mask(msg.to_phone), broker_id=broker.id)


def queue_text(
    session: Session,
    ctx: AppContext,
    *,
    broker: Broker,
    to: str,
    template_id: str,
    purpose: str,
    lead: Lead | None = None,
    values: Mapping[str, str] | None = None,
    dedupe_key: str | None = None,
    now: datetime | None = None,
    from_phone: str | None = None,
) -> Queued | None:
    """Render, check and persist one text. Returns the row (its status says what will happen) with the verdict,
    or None when the dedupe key shows it was queued already. Texts leave from the broker's number unless
    `from_phone` says otherwise (only alerts ever do: a borrower hears from the broker's own number)."""
    queued = prepare_text(session, ctx, broker=broker, to=to, template_id=template_id, purpose=purpose, lead=lead,
                          values=values, dedupe_key=dedupe_key, now=now, from_phone=from_phone)
    if lead is not None and counts_for_lead(queued.msg, lead):
        lead.automated_count += 1
        session.add(lead)
    if not insert_once(session, queued.msg):
        return None
    note_stored(queued, broker)
    return queued
