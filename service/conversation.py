"""The conversation after the opener: keywords, one question at a time, handoff to a person.

Order of questions: loan type, then rough timeline, then whether they applied elsewhere; then the borrower
is told a person will call (with the booking link when configured) and the broker gets a summary, once.
Anything the rules flag for a person (rate lock, closing, deadline, rates or terms, pre-approval, asking for
a call, a complaint), anything the rules cannot settle without an LLM, and any LLM failure hands the lead to
the broker: the borrower gets one acknowledgement and the bot stops asking.

A reason for a person wins over every closing path. A reply that opts out, says wrong number or says not
interested AND carries a handoff reason still hands the lead off: the broker gets the reasons, a note of what
else the reply said and the message; the borrower gets no closing text, and no acknowledgement either (they
asked for no more texts, or told us they are not our borrower: the person who reads the alert decides how to
answer, and calling someone who asked for a call is not an automated text). The opt-out itself is recorded
and confirmed once, as always.

After the conversation (a lead that is handed off, ready or closed, or that never got an opener) the bot
says nothing more; texts go to the broker (`service.forwarding`): every text while a handoff is not yet
worked, and any text with a new reason for a person at once, whatever the lead's state or opt-out (an alert
goes to the broker, not to the borrower). A lead a person took over (service.takeover: their own text, a
bridged call, an outcome) is with that person whatever the bot's last state: the bot asks, acknowledges and
closes nothing more, and every text is forwarded (the person talks with the borrower from the business
number, so the borrower's answers reach them only that way); keywords are answered as always. The LLM is consulted only when its answer could change what
happens next (`llm_skip_reason`).

This module is the only writer of a lead's state: the opener starting a conversation (`mark_opened`, called by
the missed-call flow) and a text the output guard blocked (`hand_off_if_blocked`) included.

Size: a little over 400 lines, because every state transition is kept here, in one place, on purpose.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlmodel import Session, col

from service import alerts, events, forwarding, metrics, next_step, optout_lock
from service.events import EventKind
from service.logs import log
from service.models import (
    Broker,
    InboundMessage,
    Lead,
    LeadState,
    MessageStatus,
    OptOut,
    OutboundMessage,
    Purpose,
    utcnow,
)
from service.outbox import Queued, queue_text
from service.replies.analysis import Keyword, ReplyAnalysis, unsure_about_safety
from service.replies.classify import classify
from service.reply_language import note_language
from service.sending import verdicts
from service.sending.gates import Cause
from service.store import acted_on, is_opted_out, record_decision, saved_id, set_opt_out
from service.takeover import taken_over

if TYPE_CHECKING:
    from service.context import AppContext

logger = logging.getLogger("textback.conversation")

QUESTIONS = [("loan_type", "ask_loan_type"), ("timeline", "ask_timeline"), ("applied_elsewhere", "ask_applied_elsewhere")]
# Where the conversation is over and texts go to a person (or nowhere), and where it is still running.
AFTER_CONVERSATION = {LeadState.new, LeadState.handoff, LeadState.ready, LeadState.closed}
WITH_A_PERSON = {LeadState.handoff, LeadState.ready}
# How the bot reads a lead a person took over, whatever its state (not a stored state: the state stays the
# bot's last, service.takeover.taken_over says a person has it).
TAKEN_OVER = "taken_over"
def hand_off_if_blocked(session: Session, lead: Lead | None, msgs: list[OutboundMessage]) -> None:
    """A text about this lead that the output guard blocked hands the lead to a person."""
    if lead is None or not any(m.status == MessageStatus.blocked for m in msgs):
        return
    lead.state = LeadState.handoff
    if "blocked_text" not in lead.handoff_reasons:
        lead.handoff_reasons = [*lead.handoff_reasons, "blocked_text"]
        metrics.handoff(["blocked_text"])
    session.add(lead)


def text_borrower(
    session: Session, ctx: AppContext, *, broker: Broker, lead: Lead | None, to: str, purpose: str,
    template_id: str, dedupe_key: str, values: Mapping[str, str] | None = None,
) -> Queued | None:
    """Queue a text to the borrower; the team hears of one that will not go, and a blocked one hands the lead
    to a person. None when the dedupe key shows it was queued already."""
    queued = queue_text(session, ctx, broker=broker, lead=lead, to=to, purpose=purpose, template_id=template_id,
                        dedupe_key=dedupe_key, values=values)
    if queued is not None:
        alerts.after_queued(session, ctx, broker=broker, lead=lead, queued=queued)
        hand_off_if_blocked(session, lead, [queued.msg])
    return queued


def mark_opened(session: Session, lead: Lead, *, booking: bool) -> None:
    """The opener is queued: a new conversation starts (the first question is the loan type, unless the opener
    offers the booking link instead)."""
    open_conversation(lead, booking=booking)
    session.add(lead)


def open_conversation(lead: Lead, *, booking: bool) -> None:
    """`mark_opened` on the object only (service.new_caller writes the lead with its own INSERT)."""
    lead.state, lead.closed_reason, lead.summary_alert_sent = LeadState.opened, None, False
    lead.handoff_reasons, lead.asked = [], []
    lead.last_question = None if booking else "loan_type"


def _text(session: Session, ctx: AppContext, broker: Broker, lead: Lead, purpose: str, template_id: str,
          dedupe_key: str, values: Mapping[str, str] | None = None) -> list[int]:
    """A text to the lead's number; the id to send now, if any."""
    queued = text_borrower(session, ctx, broker=broker, lead=lead, to=lead.phone, purpose=purpose,
                           template_id=template_id, dedupe_key=dedupe_key, values=values)
    return alerts.pending_ids([queued.msg] if queued else [])


def _alerted(session: Session, lead: Lead, msgs: list[OutboundMessage]) -> list[int]:
    hand_off_if_blocked(session, lead, msgs)
    return alerts.pending_ids(msgs)


def _opt_out(session: Session, ctx: AppContext, broker: Broker, lead: Lead, inbound: InboundMessage, source: str,
             *, twilio_confirmed: bool) -> list[int]:
    """Opt the number out and queue its one confirmation. Idempotent: calling it again for the same number (the
    webhook, then the reply processing; or a second STOP) never queues a second confirmation."""
    row: OptOut = set_opt_out(session, broker_id=saved_id(broker), phone=lead.phone, opted_out=True, source=source,
                              message_sid=inbound.message_sid, wait_seconds=optout_lock.change_wait(ctx.settings),
                              scope=ctx.sending_policy.opt_out_scope)
    lead.state, lead.closed_reason = LeadState.closed, "opted_out"
    session.add(lead)
    if row.confirmation_sent:
        return []
    events.record(session, broker=broker, lead=lead, kind=EventKind.opted_out, actor="borrower",
                  data={"source": source, "message_id": inbound.id})
    row.confirmation_sent = True  # by us, or by Twilio's Advanced Opt-Out (OptOutType=STOP), which sent its own
    session.add(row)
    if twilio_confirmed:
        return []
    return _text(session, ctx, broker, lead, Purpose.optout_confirm, "optout_confirm",
                 f"optout_confirm:{inbound.message_sid}")


def carrier_keyword(ctx: AppContext, inbound: InboundMessage) -> tuple[Keyword, str] | None:
    """The carrier keyword the text is (Twilio's OptOutType first, else the rules) and the source an opt-out or
    opt-in is recorded under ("twilio:STOP", "keyword:STOPALL"); None when it is none."""
    twilio_type = inbound.opt_out_type
    keyword = {"STOP": Keyword.STOP, "START": Keyword.START, "HELP": Keyword.HELP}.get(twilio_type or "")
    keyword = keyword or ctx.rules.carrier_keyword(inbound.body)
    if keyword is None:
        return None
    return keyword, f"twilio:{twilio_type}" if twilio_type else f"keyword:{inbound.body.strip().upper()[:20]}"


def handle_keyword(session: Session, ctx: AppContext, *, broker: Broker, lead: Lead, inbound: InboundMessage) -> list[int] | None:
    """Carrier keywords, in the webhook's own transaction. None when the text is not a keyword."""
    found = carrier_keyword(ctx, inbound)
    if found is None:
        return None
    keyword, source = found
    twilio_type = inbound.opt_out_type
    note_language(session, broker=broker, lead=lead, inbound=inbound)
    inbound.status, inbound.processed_at = "processed", utcnow()
    session.add(inbound)
    analysis = ReplyAnalysis(keyword=keyword, rules_fired=[f"carrier-keyword:{keyword.value}"])
    if keyword is Keyword.STOP:
        record_decision(session, inbound, lead, "opt_out", analysis, ctx.policy_version)
        return _opt_out(session, ctx, broker, lead, inbound, source, twilio_confirmed=twilio_type == "STOP")
    if keyword is Keyword.START:
        set_opt_out(session, broker_id=saved_id(broker), phone=lead.phone, opted_out=False, source=source,
                    message_sid=inbound.message_sid, wait_seconds=optout_lock.change_wait(ctx.settings),
                    scope=ctx.sending_policy.opt_out_scope)
        if lead.closed_reason == "opted_out":
            lead.state, lead.closed_reason = LeadState.opened, None
            session.add(lead)
        record_decision(session, inbound, lead, "opt_in", analysis, ctx.policy_version)
        if twilio_type == "START":
            return []
        return _text(session, ctx, broker, lead, Purpose.optin_confirm, "optin_confirm",
                     f"optin:{inbound.message_sid}")
    record_decision(session, inbound, lead, "help", analysis, ctx.policy_version)
    if twilio_type == "HELP":
        return []
    return _text(session, ctx, broker, lead, Purpose.help, "help", f"help:{inbound.message_sid}")


def opt_out_in_plain_words(session: Session, ctx: AppContext, *, broker: Broker, lead: Lead,
                           inbound: InboundMessage) -> list[int] | None:
    """A plain-words opt-out the rules see ("please stop texting me"), applied in the webhook's own transaction
    so it is final before Twilio gets its answer. None when the rules see none.

    Without a handoff reason the message is done (marked processed, with its Decision). With one ("stop texting
    me and just call me, my rate lock expires friday") it stays 'received': the reply processing still has a
    person to alert, and its own opt-out step finds the number already opted out and confirmed."""
    analysis = ctx.rules.analyze(inbound.body, inbound.received_at)
    if analysis.keyword is not Keyword.STOP:
        return None
    note_language(session, broker=broker, lead=lead, inbound=inbound)  # "dejen de escribirme": confirmed in Spanish
    ids = _opt_out(session, ctx, broker, lead, inbound, "plain_words", twilio_confirmed=False)
    if not analysis.handoff_reasons:
        inbound.status, inbound.processed_at = "processed", utcnow()
        session.add(inbound)
        record_decision(session, inbound, lead, "opt_out", analysis, ctx.policy_version)
    log(logger, logging.INFO, "opt-out in plain words applied", lead_id=lead.id, message_sid=inbound.message_sid,
        handoff=bool(analysis.handoff_reasons))
    return ids


def llm_skip_reason(state: str | None, analysis: ReplyAnalysis) -> str | None:
    """Why the LLM need not read this reply although the rules could not settle every field, or None.

    Its answer only matters while the bot is still qualifying a lead, and there only when the rules found no
    reason for a person: once a person reads the message anyway (a handoff reason, a lead handed off, ready or
    closed, a text with no opener before it), nothing the model says changes what happens next, and the
    borrower's words go to no third party.
    """
    if state is None or state == LeadState.new:
        return "no opener: the broker reads the text"
    if state == TAKEN_OVER:
        return "a person took the lead over: they read the text"
    if state in AFTER_CONVERSATION:
        return f"lead {state}: a person reads the text"
    if analysis.handoff_reasons:
        return "rules hand off: a person reads the text"
    return None


def reading_state(lead: Lead) -> str:
    """The lead's state as the bot reads a reply: TAKEN_OVER when a person has the lead, else its state."""
    return TAKEN_OVER if taken_over(lead) else lead.state


def lead_state(ctx: AppContext, inbound: InboundMessage) -> str | None:
    """The reading state of the reply's lead (None when it has none), read in a session of its own."""
    if inbound.lead_id is None:
        return None
    with Session(ctx.engine) as session:
        lead = session.get(Lead, inbound.lead_id)
        return reading_state(lead) if lead else None


def analyze_reply(ctx: AppContext, inbound: InboundMessage, *, lead: Lead | None = None) -> ReplyAnalysis:
    """Rules first, then the LLM when its answer could change what happens next (may take seconds: call it
    outside any transaction). `lead` saves a read of the lead's state when the caller holds it."""
    analysis: ReplyAnalysis = ctx.rules.analyze(inbound.body, inbound.received_at)
    if not analysis.needs_llm or ctx.extractor is None:
        return analysis
    state = reading_state(lead) if lead is not None else lead_state(ctx, inbound)
    if llm_skip_reason(state, analysis) is not None:
        return analysis
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


def _capture(session: Session, broker: Broker, lead: Lead, analysis: ReplyAnalysis) -> None:
    """Keep what the reply told us; each field that changes is an event in the lead's history."""
    found: dict[str, object] = {}
    if analysis.loan_type.value != "unknown":
        found["loan_type"] = analysis.loan_type.value
    if analysis.timeline.value != "unknown":
        found["timeline"] = analysis.timeline.value
    if analysis.applied_elsewhere is not None:
        found["applied_elsewhere"] = analysis.applied_elsewhere
    if analysis.callback_window:
        found["callback_window"] = analysis.callback_window[:60]
    for field, value in found.items():
        if getattr(lead, field) != value:
            setattr(lead, field, value)
            events.record(session, broker=broker, lead=lead, kind=EventKind.field_captured, actor="borrower",
                          data={"field": field, "value": value})


def _phrases(ctx: AppContext, keys: list[str]) -> str:
    return ", ".join(dict.fromkeys(ctx.templates.phrase(k) for k in keys))


def _handoff(session: Session, ctx: AppContext, broker: Broker, lead: Lead, inbound: InboundMessage,
             reasons: list[str], *, notes: list[str] | None = None, ack: bool = True) -> list[int]:
    """Hand the lead to a person: the broker is alerted with the reasons (and `notes` on what else the reply
    said); the borrower gets the acknowledgement only when `ack`."""
    lead.state, lead.closed_reason = LeadState.handoff, None
    lead.handoff_reasons = sorted(set(lead.handoff_reasons) | set(reasons))
    lead.handoff_worked_at = None  # a new reason is a new handoff: nobody has worked it yet
    lead.handoff_at, lead.sla_alerts = utcnow(), 0
    session.add(lead)
    events.record(session, broker=broker, lead=lead, kind=EventKind.handoff, data={"reasons": sorted(set(reasons))})
    metrics.handoff(set(reasons))
    ids: list[int] = []
    if ack:  # says when a person will call when the broker is with a client or out of hours (service.next_step)
        template, values = next_step.choose(session, ctx, broker=broker, kind="handoff_ack", to=lead.phone,
                                            purpose=Purpose.ack)
        ids += _text(session, ctx, broker, lead, Purpose.ack, template, f"ack:{lead.id}:{inbound.message_sid}", values)
    words = _phrases(ctx, reasons)
    if notes:
        words = f"{words}; {_phrases(ctx, notes)}"
    ids += _alerted(session, lead, alerts.alert_handoff(session, ctx, broker=broker, lead=lead, reasons=words,
                                                        text=inbound.body, message_sid=inbound.message_sid))
    return ids


def _notes(analysis: ReplyAnalysis, opted_out: bool) -> list[str]:
    """What else the reply said, for the broker's alert next to the reasons."""
    return [name for name, said in (("opted_out", opted_out), ("wrong_number", analysis.wrong_number),
                                     ("not_interested", analysis.not_interested)) if said]


def handle_reply(session: Session, ctx: AppContext, inbound: InboundMessage,
                 analysis: ReplyAnalysis | None = None) -> list[int]:
    """Everything after a non-keyword reply is stored: analyse, capture, then ask, hand off, close or forward.

    Correct whether or not the webhook already applied an opt-out this reply asked for: the opt-out is applied
    (and confirmed) once, and a reason for a person in the same reply still reaches the broker."""
    # Lock the lead: two replies processed at once (two workers, or a fast double text) must not both ask.
    lead = session.get(Lead, inbound.lead_id, with_for_update=True) if inbound.lead_id else None
    broker = session.get(Broker, inbound.broker_id)
    if lead is None or broker is None or acted_on(session, inbound):
        return []
    note_language(session, broker=broker, lead=lead, inbound=inbound)  # texts from here on are in its language
    # A newer reply supersedes questions still waiting to go out (e.g. held for quiet hours): never ask
    # something the borrower may just have answered.
    superseded = session.exec(
        update(OutboundMessage)
        .where(col(OutboundMessage.lead_id) == lead.id, col(OutboundMessage.status) == MessageStatus.pending,
               col(OutboundMessage.purpose).in_((Purpose.question, Purpose.ready)))
        .values(status=MessageStatus.suppressed, last_error="superseded by a newer reply",
                verdicts=verdicts.entry_sql("not sent: superseded by a newer reply", now=utcnow()))
    ).rowcount
    if superseded:
        lead.automated_count = max(lead.automated_count - superseded, 0)  # never sent, so not counted
    analysis = answer_in_context(lead, inbound.body, analysis or analyze_reply(ctx, inbound, lead=lead))
    version = ctx.policy_version  # the policy-set version: the audit's one version id
    state, worked, human = lead.state, lead.handoff_worked_at is not None, taken_over(lead)
    skipped = (llm_skip_reason(reading_state(lead), analysis)
               if analysis.needs_llm and analysis.llm_model is None and ctx.extractor is not None else None)
    ids: list[int] = []
    stop = analysis.keyword is Keyword.STOP
    # Whether this broker has recorded the opt-out yet (the webhook may have): its own row, whatever the scope, so
    # a STOP to this number is recorded and confirmed here even when another broker's opt-out already covers it.
    opted_out_here = stop and not is_opted_out(session, saved_id(broker), lead.phone, "broker")
    if opted_out_here:
        record_decision(session, inbound, lead, "opt_out", analysis, version, skipped)
        source = "llm" if analysis.source.value == "llm" else "plain_words"
        ids += _opt_out(session, ctx, broker, lead, inbound, source, twilio_confirmed=False)
    _capture(session, broker, lead, analysis)
    lead.updated_at = utcnow()
    session.add(lead)
    if state in AFTER_CONVERSATION or human:
        return ids + _after_conversation(session, ctx, broker, lead, inbound, analysis, state=state, worked=worked,
                                         human=human, version=version, skipped=skipped)
    reasons = [r.value for r in analysis.handoff_reasons]
    notes = _notes(analysis, is_opted_out(session, saved_id(broker), lead.phone, ctx.sending_policy.opt_out_scope))
    if reasons:
        # A reason for a person wins over an opt-out, a wrong number and "not interested" in the same reply.
        record_decision(session, inbound, lead, "handoff", analysis, version, skipped)
        log(logger, logging.INFO, "handoff", lead_id=lead.id, reasons=reasons, notes=notes)
        return ids + _handoff(session, ctx, broker, lead, inbound, reasons, notes=notes, ack=not notes)
    if stop:
        if not opted_out_here:  # the webhook applied (and confirmed) it before this reply reached us
            lead.state, lead.closed_reason = LeadState.closed, "opted_out"
            record_decision(session, inbound, lead, "opt_out", analysis, version, skipped)
        return ids
    if analysis.wrong_number or analysis.not_interested:
        lead.state = LeadState.closed
        lead.closed_reason = "wrong_number" if analysis.wrong_number else "not_interested"
        record_decision(session, inbound, lead, f"closed:{lead.closed_reason}", analysis, version, skipped)
        template = "closing_wrong_number" if analysis.wrong_number else "closing_not_interested"
        return _text(session, ctx, broker, lead, Purpose.closing, template, f"closing:{inbound.message_sid}")
    if analysis.llm_error:
        reasons.append("llm_unavailable")
    if unsure_about_safety(analysis):
        reasons.append("needs_review")  # near a safety category, the rules could not settle it, no LLM answered
    if inbound.num_media:
        # A picture or file (a letter, a pay stub, a listing) is read by a person; the bot reads only the words,
        # and a picture with no words is no answer to its question.
        reasons.append("sent_media")
    if reasons:
        record_decision(session, inbound, lead, "handoff", analysis, version, skipped)
        log(logger, logging.INFO, "handoff", lead_id=lead.id, reasons=reasons)
        return _handoff(session, ctx, broker, lead, inbound, reasons)
    return _next_step(session, ctx, broker, lead, inbound, analysis, version)


def should_forward(state: str, *, worked: bool, keyword: bool, human: bool = False) -> bool:
    """Whether a text with no new reason for a person is forwarded to the broker, by the lead's state before it.

    A lead a person took over (`human`): every text, keywords included, whatever the state (the person is in
    the conversation, from the business number: the text reaches them only this way).
    Handed off or ready and not yet worked: every text, keywords included (the broker about to call needs to
    know the borrower just texted STOP). Closed, or never opened: every text but a bare keyword (today's
    behaviour: a closed lead that writes again may be back). A handoff a person has worked: nothing (the text
    is kept for wherever they work it; a new reason still alerts).
    """
    if human:
        return True
    if state in WITH_A_PERSON:
        return not worked
    return not keyword


def _after_conversation(session: Session, ctx: AppContext, broker: Broker, lead: Lead, inbound: InboundMessage,
                        analysis: ReplyAnalysis, *, state: str, worked: bool, human: bool, version: str | None,
                        skipped: str | None) -> list[int]:
    """A text on a lead the bot no longer talks to (handed off, ready, closed, never opened, taken over)."""
    reasons = [r.value for r in analysis.handoff_reasons]
    # A closed lead's old reasons ended with it; on a lead with a person, only a reason it lacks is news.
    known = set(lead.handoff_reasons) if state in WITH_A_PERSON or human else set()
    new = [r for r in reasons if r not in known]
    opted_out = is_opted_out(session, saved_id(broker), lead.phone, ctx.sending_policy.opt_out_scope)
    if new:
        # Urgent news is never held: the broker is alerted at once, with the reasons, and the lead is a handoff
        # again (even an opted-out number: the alert goes to the broker, and no text to the borrower follows).
        record_decision(session, inbound, lead, "handoff", analysis, version, skipped)
        log(logger, logging.INFO, "handoff after the conversation", lead_id=lead.id, state=state, reasons=new)
        ids = _handoff(session, ctx, broker, lead, inbound, reasons,
                       notes=_notes(analysis, opted_out), ack=False)
        forwarding.note_forwarded(ctx, lead)
        return ids
    if reasons and lead.state == LeadState.closed:
        # A reason it already had (a handoff the opt-out in this same reply closed): it stays with a person.
        lead.state, lead.closed_reason = LeadState.handoff, None
    if not (reasons or should_forward(state, worked=worked, keyword=analysis.keyword is not None, human=human)):
        record_decision(session, inbound, lead, "kept", analysis, version, skipped)
        return []
    action, ids = _forward(session, ctx, broker, lead, inbound, state)
    record_decision(session, inbound, lead, action, analysis, version, skipped)
    return ids


def forward_settled(session: Session, ctx: AppContext, *, broker: Broker, lead: Lead, inbound: InboundMessage,
                    state: str, worked: bool) -> list[int]:
    """A text the webhook settled on its own (a carrier keyword, an opt-out in plain words with no reason for
    a person): the broker still gets it when a person is about to work the lead. `state` and `worked` are the
    lead's before the webhook acted on the text. Call it only for an inbound the webhook marked processed (one
    left for reply processing is forwarded there)."""
    if inbound.status != "processed" or not should_forward(state, worked=worked, keyword=True,
                                                           human=taken_over(lead)):
        return []
    # The forwarding window is per lead: take the lead's lock, as reply processing does, so a keyword and a
    # reply forwarded at the same moment cannot both open a window (PostgreSQL; SQLite serialises writers).
    lead = session.get(Lead, lead.id, with_for_update=True, populate_existing=True) or lead
    action, ids = _forward(session, ctx, broker, lead, inbound, state)
    record_decision(session, inbound, lead, action, None, ctx.policy_version)
    return ids


def _forward(session: Session, ctx: AppContext, broker: Broker, lead: Lead, inbound: InboundMessage,
             state: str) -> tuple[str, list[int]]:
    forwarded = forwarding.forward_text(session, ctx, broker=broker, lead=lead, inbound=inbound,
                                        template_id="alert_reply" if state == LeadState.new else "alert_forward")
    hand_off_if_blocked(session, lead, forwarded.queued)
    return forwarded.action, forwarded.send_ids


def _next_step(session: Session, ctx: AppContext, broker: Broker, lead: Lead, inbound: InboundMessage,
               analysis: ReplyAnalysis, version: str | None) -> list[int]:
    asked = set(lead.asked or []) | ({lead.last_question} if lead.last_question else set())
    for field, template in QUESTIONS:
        if getattr(lead, field) is None and field not in asked:
            queued = text_borrower(session, ctx, broker=broker, lead=lead, to=lead.phone, purpose=Purpose.question,
                                   template_id=template, dedupe_key=f"q:{field}:{inbound.message_sid}")
            if queued is not None and queued.verdict.cause is Cause.cap:
                record_decision(session, inbound, lead, "handoff", analysis, version)
                return _handoff(session, ctx, broker, lead, inbound, ["cap_reached"])
            lead.asked = sorted(asked | {field})
            lead.last_question, lead.state = field, LeadState.asking
            session.add(lead)
            record_decision(session, inbound, lead, f"ask:{field}", analysis, version)
            return alerts.pending_ids([queued.msg] if queued else [])
    # Everything asked: a person takes it from here (a handoff of its own, not worked by anyone yet).
    lead.state, lead.handoff_worked_at = LeadState.ready, None
    lead.handoff_at, lead.sla_alerts = utcnow(), 0
    session.add(lead)
    events.record(session, broker=broker, lead=lead, kind=EventKind.handoff, data={"reasons": [], "ready": True})
    record_decision(session, inbound, lead, "ready", analysis, version)
    template, values = next_step.choose(session, ctx, broker=broker, kind="ready", to=lead.phone,
                                        purpose=Purpose.ready, booking=bool(broker.booking_url))
    ids = _text(session, ctx, broker, lead, Purpose.ready, template, f"ready:{inbound.message_sid}", values)
    if not lead.summary_alert_sent:
        lead.summary_alert_sent = True
        ids += _alerted(session, lead, alerts.alert_ready(session, ctx, broker=broker, lead=lead,
                                                          message_sid=inbound.message_sid))
    return ids
