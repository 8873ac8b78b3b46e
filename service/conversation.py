"""The conversation after the opener: keywords, one question at a time, handoff to a person.

Order of questions: loan type, then rough timeline, then whether they applied elsewhere; then the borrower
is told a person will call (with the booking link when configured) and the broker gets a summary, once.
Anything the rules flag for a person (rate lock, closing, deadline, rates or terms, pre-approval, asking for
a call, a complaint), anything the rules cannot settle without an LLM, and any LLM failure hands the lead to
the broker: the borrower gets one acknowledgement and the bot stops asking.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlmodel import Session

from service.flow import alert_reply
from service.logs import log
from service.models import Broker, Decision, InboundMessage, Lead, OptOut, OutboundMessage, utcnow
from service.outbox import queue_alert, queue_text, set_opt_out
from service.replies.analysis import Keyword, ReplyAnalysis

if TYPE_CHECKING:
    from service.context import AppContext

logger = logging.getLogger("textback.conversation")

QUESTIONS = [("loan_type", "ask_loan_type"), ("timeline", "ask_timeline"), ("applied_elsewhere", "ask_applied_elsewhere")]
HANDOFF_WORDS = {
    "rate_lock": "asked about a rate lock",
    "closing": "about a closing",
    "deadline": "has a deadline",
    "rate_or_terms": "asked about rates or terms",
    "preapproval": "asked about pre-approval",
    "human_request": "asked for a call",
    "complaint": "is unhappy",
    "transaction_issue": "has a problem with the appraisal, underwriting, contract or title",
    "needs_review": "reply needs a person",
    "llm_unavailable": "reply needs a person",
    "blocked_text": "a text was held",
    "cap_reached": "automated texts used up",
}
LABELS = {
    "purchase": "purchase", "refinance": "refinance", "home_equity": "home equity", "other": "other loan",
    "under_30_days": "within 30 days", "1_to_3_months": "1-3 months", "3_to_6_months": "3-6 months",
    "over_6_months": "6+ months", "researching": "just researching",
}
EXCERPT_CHARS = 100


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    flat = " ".join((text or "").split()).replace('"', "'")
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def known_summary(lead: Lead) -> str:
    parts: list[str] = []
    if lead.loan_type and lead.loan_type != "unknown":
        parts.append(LABELS.get(lead.loan_type, lead.loan_type))
    if lead.timeline and lead.timeline != "unknown":
        parts.append(LABELS.get(lead.timeline, lead.timeline))
    if lead.applied_elsewhere is True:
        parts.append("applied elsewhere")
    elif lead.applied_elsewhere is False:
        parts.append("not applied elsewhere")
    if lead.callback_window:
        parts.append(f"callback {lead.callback_window}")
    return ", ".join(parts) or "nothing yet"


def _ids(msgs: object) -> list[int]:
    items = msgs if isinstance(msgs, list) else [msgs]
    return [m.id for m in items if m is not None and m.id is not None and m.status == "pending"]


def _opt_out(session: Session, ctx: AppContext, broker: Broker, lead: Lead, inbound: InboundMessage, source: str,
             *, twilio_confirmed: bool) -> list[int]:
    row: OptOut = set_opt_out(session, broker_id=broker.id, phone=lead.phone, opted_out=True, source=source,
                              message_sid=inbound.message_sid)
    lead.state, lead.closed_reason = "closed", "opted_out"
    session.add(lead)
    if twilio_confirmed or row.confirmation_sent:
        return []
    row.confirmation_sent = True
    session.add(row)
    return _ids(queue_text(session, ctx, broker=broker, lead=lead, to=lead.phone, purpose="optout_confirm",
                           template_id="optout_confirm", dedupe_key=f"optout_confirm:{inbound.message_sid}"))


def _record(session: Session, inbound: InboundMessage, lead: Lead, action: str, analysis: ReplyAnalysis | None,
            rules_version: str | None = None) -> None:
    session.add(Decision(
        inbound_id=inbound.id, lead_id=lead.id, action=action,
        source=str(analysis.source) if analysis else "rules",
        rules_fired=list(analysis.rules_fired) if analysis else [], rules_version=rules_version,
        llm_prompt=analysis.llm_prompt if analysis else None,
        llm_prompt_version=analysis.llm_prompt_version if analysis else None,
        llm_model=analysis.llm_model if analysis else None,
        llm_error=analysis.llm_error if analysis else None,
        analysis=analysis.model_dump(mode="json") if analysis else None,
    ))


def handle_keyword(session: Session, ctx: AppContext, *, broker: Broker, lead: Lead, inbound: InboundMessage) -> list[int] | None:
    """Carrier keywords, in the webhook's own transaction. None when the text is not a keyword."""
    twilio_type = inbound.opt_out_type
    keyword = {"STOP": Keyword.STOP, "START": Keyword.START, "HELP": Keyword.HELP}.get(twilio_type or "")
    keyword = keyword or ctx.rules.carrier_keyword(inbound.body)
    if keyword is None:
        return None
    source = f"twilio:{twilio_type}" if twilio_type else f"keyword:{inbound.body.strip().upper()[:20]}"
    inbound.status, inbound.processed_at = "processed", utcnow()
    session.add(inbound)
    analysis = ReplyAnalysis(keyword=keyword, rules_fired=[f"carrier-keyword:{keyword.value}"])
    if keyword is Keyword.STOP:
        _record(session, inbound, lead, "opt_out", analysis)
        return _opt_out(session, ctx, broker, lead, inbound, source, twilio_confirmed=twilio_type == "STOP")
    if keyword is Keyword.START:
        set_opt_out(session, broker_id=broker.id, phone=lead.phone, opted_out=False, source=source,
                    message_sid=inbound.message_sid)
        if lead.closed_reason == "opted_out":
            lead.state, lead.closed_reason = "opened", None
            session.add(lead)
        _record(session, inbound, lead, "opt_in", analysis)
        if twilio_type == "START":
            return []
        return _ids(queue_text(session, ctx, broker=broker, lead=lead, to=lead.phone, purpose="optin_confirm",
                               template_id="optin_confirm", dedupe_key=f"optin:{inbound.message_sid}"))
    _record(session, inbound, lead, "help", analysis)
    if twilio_type == "HELP":
        return []
    return _ids(queue_text(session, ctx, broker=broker, lead=lead, to=lead.phone, purpose="help",
                           template_id="help", dedupe_key=f"help:{inbound.message_sid}"))


def analyze_reply(ctx: AppContext, inbound: InboundMessage) -> ReplyAnalysis:
    """Rules first, then the LLM when needed (may take seconds: call it outside any transaction)."""
    from service.replies.classify import classify  # noqa: PLC0415

    return classify(inbound.body, inbound.received_at, rules=ctx.rules, extractor=ctx.extractor)


_YES = re.compile(r"^\W*(yes|yep|yeah|yup|ya|y|si|sí|i have|we have|already did)\b[\W\w]{0,40}$", re.IGNORECASE)
_NO = re.compile(r"^\W*(no|nope|nah|n|not yet|no we haven'?t|no i haven'?t|not really)\b[\W\w]{0,40}$", re.IGNORECASE)


def answer_in_context(lead: Lead, text: str, analysis: ReplyAnalysis) -> ReplyAnalysis:
    """A bare YES / NO answers the question we just asked (only the applied-elsewhere question takes one)."""
    if lead.last_question != "applied_elsewhere" or analysis.applied_elsewhere is not None:
        return analysis
    if analysis.handoff_reasons or analysis.wrong_number or analysis.not_interested:
        return analysis
    value = True if _YES.match(text) else False if _NO.match(text) else None
    if value is None:
        return analysis
    fired = [*analysis.rules_fired, "context-yes-no"]
    return analysis.model_copy(update={"applied_elsewhere": value, "needs_llm": False, "rules_fired": fired})


def _capture(lead: Lead, analysis: ReplyAnalysis) -> None:
    if analysis.loan_type.value != "unknown":
        lead.loan_type = analysis.loan_type.value
    if analysis.timeline.value != "unknown":
        lead.timeline = analysis.timeline.value
    if analysis.applied_elsewhere is not None:
        lead.applied_elsewhere = analysis.applied_elsewhere
    if analysis.callback_window:
        lead.callback_window = analysis.callback_window[:60]


def _handoff(session: Session, ctx: AppContext, broker: Broker, lead: Lead, inbound: InboundMessage,
             reasons: list[str]) -> list[int]:
    lead.state = "handoff"
    lead.handoff_reasons = sorted(set(lead.handoff_reasons) | set(reasons))
    session.add(lead)
    ids = _ids(queue_text(session, ctx, broker=broker, lead=lead, to=lead.phone, purpose="ack",
                          template_id="handoff_ack", dedupe_key=f"ack:{lead.id}:{inbound.message_sid}"))
    words = ", ".join(dict.fromkeys(HANDOFF_WORDS.get(r, r) for r in reasons))
    ids += _ids(queue_alert(session, ctx, broker=broker, lead=lead, template_id="alert_handoff",
                            values={"caller": lead.phone, "reasons": words, "known": known_summary(lead),
                                    "excerpt": excerpt(inbound.body)},
                            dedupe_key=f"handoff:{inbound.message_sid}"))
    return ids


def handle_reply(session: Session, ctx: AppContext, inbound: InboundMessage,
                 analysis: ReplyAnalysis | None = None) -> list[int]:
    """Everything after a non-keyword reply is stored: analyse, capture, then ask, hand off or close."""
    # Lock the lead: two replies processed at once (two workers, or a fast double text) must not both ask.
    lead = session.get(Lead, inbound.lead_id, with_for_update=True) if inbound.lead_id else None
    broker = session.get(Broker, inbound.broker_id)
    if lead is None or broker is None:
        return []
    # A newer reply supersedes questions still waiting to go out (e.g. held for quiet hours): never ask
    # something the borrower may just have answered.
    superseded = session.execute(
        update(OutboundMessage)
        .where(OutboundMessage.lead_id == lead.id, OutboundMessage.status == "pending",
               OutboundMessage.purpose.in_(("question", "ready")))
        .values(status="suppressed", last_error="superseded by a newer reply")
    ).rowcount
    if superseded:
        lead.automated_count = max(lead.automated_count - superseded, 0)  # never sent, so not counted
    analysis = answer_in_context(lead, inbound.body, analysis or analyze_reply(ctx, inbound))
    version = getattr(ctx.rules, "version", None)
    if analysis.keyword is Keyword.STOP:
        _record(session, inbound, lead, "opt_out", analysis, version)
        source = "llm" if analysis.source.value == "llm" else "plain_words"
        return _opt_out(session, ctx, broker, lead, inbound, source, twilio_confirmed=False)
    _capture(lead, analysis)
    lead.updated_at = utcnow()
    session.add(lead)
    if lead.state == "new":
        # No opener went out (a text out of the blue, or after a call the broker answered): the bot has not
        # introduced itself, so it says nothing and the broker gets the text.
        _record(session, inbound, lead, "forwarded", analysis, version)
        return alert_reply(session, ctx, broker=broker, lead=lead, text=inbound.body)
    if lead.state in {"handoff", "ready", "closed"}:
        _record(session, inbound, lead, "forwarded", analysis, version)
        return alert_reply(session, ctx, broker=broker, lead=lead, text=inbound.body, template_id="alert_forward")
    if analysis.wrong_number or analysis.not_interested:
        lead.state = "closed"
        lead.closed_reason = "wrong_number" if analysis.wrong_number else "not_interested"
        _record(session, inbound, lead, f"closed:{lead.closed_reason}", analysis, version)
        template = "closing_wrong_number" if analysis.wrong_number else "closing_not_interested"
        return _ids(queue_text(session, ctx, broker=broker, lead=lead, to=lead.phone, purpose="closing",
                               template_id=template, dedupe_key=f"closing:{inbound.message_sid}"))
    reasons = [r.value for r in analysis.handoff_reasons]
    if analysis.llm_error:
        reasons.append("llm_unavailable")
    if analysis.needs_llm and analysis.llm_prompt is None and not reasons:
        reasons.append("needs_review")  # the rules could not settle it and no LLM answered
    if reasons:
        _record(session, inbound, lead, "handoff", analysis, version)
        log(logger, logging.INFO, "handoff", lead_id=lead.id, reasons=reasons)
        return _handoff(session, ctx, broker, lead, inbound, reasons)
    return _next_step(session, ctx, broker, lead, inbound, analysis, version)


def _next_step(session: Session, ctx: AppContext, broker: Broker, lead: Lead, inbound: InboundMessage,
               analysis: ReplyAnalysis, version: str | None) -> list[int]:
    asked = set(lead.asked or []) | ({lead.last_question} if lead.last_question else set())
    for field, template in QUESTIONS:
        if getattr(lead, field) is None and field not in asked:
            msg = queue_text(session, ctx, broker=broker, lead=lead, to=lead.phone, purpose="question",
                             template_id=template, dedupe_key=f"q:{field}:{inbound.message_sid}")
            if msg is not None and msg.status == "suppressed" and "cap" in (msg.last_error or ""):
                _record(session, inbound, lead, "handoff", analysis, version)
                return _handoff(session, ctx, broker, lead, inbound, ["cap_reached"])
            lead.asked = sorted(asked | {field})
            lead.last_question, lead.state = field, "asking"
            session.add(lead)
            _record(session, inbound, lead, f"ask:{field}", analysis, version)
            return _ids(msg)
    # Everything asked: a person takes it from here.
    lead.state = "ready"
    session.add(lead)
    _record(session, inbound, lead, "ready", analysis, version)
    ids = _ids(queue_text(session, ctx, broker=broker, lead=lead, to=lead.phone, purpose="ready",
                          template_id="ready_booking" if broker.booking_url else "ready",
                          dedupe_key=f"ready:{inbound.message_sid}"))
    if not lead.summary_alert_sent:
        lead.summary_alert_sent = True
        ids += _ids(queue_alert(session, ctx, broker=broker, lead=lead, template_id="alert_ready",
                                values={"caller": lead.phone, "known": known_summary(lead)},
                                dedupe_key=f"ready-alert:{inbound.message_sid}"))
    return ids
