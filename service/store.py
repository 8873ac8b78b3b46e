"""The data access the flow shares: leads, opt-outs, known contacts and the decisions taken on a reply.

Opt-outs are read afresh (never from an object a session cached) and changed under the number's lock
(service/optout_lock.py), so a text is never requested after an opt-out committed. Nothing here decides what
to send or writes a lead's state (service.conversation does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from sqlalchemy import update
from sqlmodel import Session, col, or_, select

from service import optout_lock
from service.db import insert_once
from service.models import (
    ALLOWED_AFTER_OPTOUT,
    Broker,
    Decision,
    DoNotText,
    InboundMessage,
    Lead,
    MessageStatus,
    OptOut,
    OptOutEvent,
    OutboundMessage,
    utcnow,
)
from service.sending.opt_out_policy import DEFAULT_SCOPE, Scope

if TYPE_CHECKING:
    from service.replies.analysis import ReplyAnalysis

# Decisions only reply processing records (besides "ask:<field>" and "closed:<reason>"): one of them on a reply
# means it was acted on. ("opt_out" is not one: the webhook records it too, for a reply it leaves to us.)
REPLY_ACTIONS = ("handoff", "ready", "forwarded", "forward_coalesced", "kept")


class _Row(Protocol):
    id: int | None


def saved_id(row: _Row) -> int:
    """The primary key of a row that is in the database (read from it, or inserted and flushed).

    Every broker, lead and message the flow handles is one: a row without an id was never saved, a programming
    error raised here rather than stored as a missing key."""
    if row.id is None:
        raise RuntimeError(f"{type(row).__name__} has no id: it was never saved")
    return row.id


def get_or_create_lead(session: Session, broker_id: int, phone: str) -> Lead:
    return lead_for(session, broker_id, phone)[0]


def lead_for(session: Session, broker_id: int, phone: str) -> tuple[Lead, bool]:
    """The lead of this number with this broker, and whether this call created it."""
    lead = session.exec(select(Lead).where(Lead.broker_id == broker_id, Lead.phone == phone)).first()
    if lead is not None:
        return lead, False
    lead = Lead(broker_id=broker_id, phone=phone)
    if not insert_once(session, lead):
        return session.exec(select(Lead).where(Lead.broker_id == broker_id, Lead.phone == phone)).one(), False
    return lead, True


def is_known_contact(session: Session, broker: Broker, phone: str) -> bool:
    """On the broker's do-not-text list (the brokers file) or in the DoNotText table (this broker's or all)."""
    if phone in broker.do_not_text:
        return True
    row = session.exec(
        select(DoNotText.id).where(DoNotText.phone == phone,
                                   or_(col(DoNotText.broker_id).is_(None), DoNotText.broker_id == broker.id))
    ).first()
    return row is not None


def is_opted_out(session: Session, broker_id: int, phone: str, scope: Scope = DEFAULT_SCOPE) -> bool:
    """Whether the broker may not text the number under the opt-out scope (`ctx.sending_policy.opt_out_scope`):
    one statement, read afresh (never an OptOut object a session cached)."""
    return optout_lock.is_opted_out(session, broker_id, phone, scope)


def opt_out_state(session: Session, broker_id: int, phone: str, scope: Scope = DEFAULT_SCOPE
                  ) -> optout_lock.OptOutState | None:
    """The row that decides it, with the broker it was recorded with (for a reason or a display): one statement."""
    return optout_lock.opt_out_state(session, broker_id, phone, scope)


def _opt_out_row(session: Session, broker_id: int, phone: str) -> OptOut | None:
    return session.exec(
        select(OptOut).where(OptOut.broker_id == broker_id, OptOut.phone == phone)
        .execution_options(populate_existing=True)
    ).first()


def set_opt_out(
    session: Session, *, broker_id: int, phone: str, opted_out: bool, source: str, message_sid: str | None = None,
    wait_seconds: float = 25.0, scope: Scope = DEFAULT_SCOPE,
) -> OptOut:
    """Record an opt-out or opt-in (current state plus a permanent event), serialised per number.

    The number's lock is taken exclusively first and held until the transaction ends (service/optout_lock.py),
    then the row is read afresh: concurrent changes to one number run one after the other, and the state left
    is the one of the request that committed last. `confirmation_sent` is cleared only when the number goes
    from opted in to opted out (a new opt-out earns one confirmation; a repeated one, in any words, none). The
    same message recorded twice (the webhook, then the reply processing) adds one event, not two.
    `wait_seconds` bounds the wait for sends in flight (optout_lock.change_wait(settings)). `scope` (the opt-out
    scope in force) is recorded on the event for the audit; a new word from the borrower (not a carrier block,
    source "error:...") moves the row's `said_at`, so within the scope the latest word wins. A carrier block sets
    the row's `carrier_block`/`carrier_blocked_at` (and adds its event) whatever the row's state; only an opt-in
    word to this same broker clears them."""
    optout_lock.lock_for_change(session, broker_id, phone, wait=wait_seconds)
    row = _opt_out_row(session, broker_id, phone)
    if row is None:
        fresh = OptOut(broker_id=broker_id, phone=phone, opted_out=opted_out, source=source)
        row = fresh if insert_once(session, fresh) else _opt_out_row(session, broker_id, phone)
        if row is None:  # inserted, or inserted by another transaction: it is there
            raise RuntimeError("the opt-out row is neither inserted nor found")
    if row.opted_out != opted_out:
        row.opted_out = opted_out
        row.source = source
        if opted_out:
            row.confirmation_sent = False
        row.updated_at = utcnow()
        session.add(row)
    carrier = source.startswith(optout_lock.CARRIER_SOURCE)
    if opted_out and carrier:
        # The carrier blocks this broker's number, even when a STOP opted the row out already: kept apart from the
        # words, so that a START to another broker of the scope (the latest word) never lifts it.
        row.carrier_block, row.carrier_blocked_at = source, utcnow()
        session.add(row)
    elif not opted_out and not carrier and row.carrier_blocked_at is not None:
        row.carrier_block, row.carrier_blocked_at = None, None  # START to this very number: the carrier lifts it
        session.add(row)
    action = "opt_out" if opted_out else "opt_in"
    recorded = message_sid is not None and session.exec(
        select(OptOutEvent.id).where(OptOutEvent.phone == phone, OptOutEvent.broker_id == broker_id,
                                     OptOutEvent.message_sid == message_sid, OptOutEvent.action == action)
    ).first() is not None
    if not recorded:
        session.add(OptOutEvent(broker_id=broker_id, phone=phone, action=action, source=source,
                                message_sid=message_sid, scope=scope))
        if not carrier:
            row.said_at = utcnow()
            if row.source.startswith(optout_lock.CARRIER_SOURCE):
                row.source = source  # the borrower said it too: now it is their word, for the whole scope
            session.add(row)
    if opted_out:
        # Nothing automated may leave for this number any more. A text whose earlier attempt may have reached
        # Twilio (unknown outcome) stays for the send path, which asks Twilio first: it is recorded as sent when
        # Twilio has it, and suppressed (never resent) when Twilio does not. Other brokers' texts in the scope are
        # stopped by the send path, which reads the opt-out in its scope under the number's lock.
        session.flush()
        state = optout_lock.opt_out_state(session, broker_id, phone, scope)
        reason = optout_lock.describe(state) if state is not None and state.opted_out else "opted out"
        session.execute(
            update(OutboundMessage)
            .where(
                col(OutboundMessage.broker_id) == broker_id,
                col(OutboundMessage.to_phone) == phone,
                col(OutboundMessage.status) == MessageStatus.pending,
                col(OutboundMessage.purpose).not_in(ALLOWED_AFTER_OPTOUT),
                col(OutboundMessage.unknown_outcome).is_(False),
            )
            .values(status=MessageStatus.suppressed, last_error=reason)
        )
    return row


def record_decision(session: Session, inbound: InboundMessage, lead: Lead, action: str,
                    analysis: ReplyAnalysis | None, rules_version: str | None = None,
                    llm_skipped: str | None = None) -> None:
    """What was decided about one inbound message, and on what grounds (the audit trail)."""
    session.add(Decision(
        inbound_id=saved_id(inbound), lead_id=lead.id, action=action,
        source=str(analysis.source) if analysis else "rules",
        rules_fired=list(analysis.rules_fired) if analysis else [], rules_version=rules_version,
        llm_prompt=analysis.llm_prompt if analysis else None,
        llm_prompt_version=analysis.llm_prompt_version if analysis else None,
        llm_model=analysis.llm_model if analysis else None,
        llm_error=analysis.llm_error if analysis else None,
        llm_skipped=llm_skipped,
        analysis=analysis.model_dump(mode="json") if analysis else None,
        language=lead.language or "en",
    ))


def acted_on(session: Session, inbound: InboundMessage) -> bool:
    """This reply was processed already (a stale claim taken back and run again): act on it once only."""
    acted = or_(col(Decision.action).in_(REPLY_ACTIONS), col(Decision.action).like("ask:%"),
                col(Decision.action).like("closed:%"))
    return session.exec(select(Decision.id).where(Decision.inbound_id == inbound.id, acted)).first() is not None
