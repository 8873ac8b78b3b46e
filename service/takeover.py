"""A person takes a lead over: every human action (their own text, a bridged call, an outcome) goes through
`human_acted`, and from then on the bot says nothing more on that lead's conversation.

What taking over does, in the caller's transaction:
- `lead.human_at` / `human_by`: when and by whom the current conversation was taken over (set once per
  conversation: a missed call that, after the cooldown, starts a new conversation with a new opener ends it);
- an open handoff is worked (`handoff_worked_at`, a `handoff_worked` event), so no unworked-handoff reminder
  follows;
- a `human_contact` event when the action reached the borrower (a text, a bridged call, an outcome of
  reached or better), and `bot_stopped` once per takeover;
- the lead's pending automated texts to the borrower (service.models.AUTOMATED: opener, questions, the
  acknowledgement, "a person will call", closings) are canceled: suppressed with "canceled: a person took
  over". Keyword answers (HELP, the START and STOP confirmations) are not automated texts and still go.

The conversation (service.conversation) reads `taken_over` and treats such a lead as one with a person:
no more questions, acknowledgements or "ready" texts; every borrower text is forwarded to the team (they talk
with the borrower from the business number, so the borrower's answers reach them only that way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlmodel import Session, col

from service import events
from service.events import EventKind
from service.models import (
    AUTOMATED,
    Audience,
    Broker,
    Lead,
    LeadState,
    MessageStatus,
    OutboundMessage,
    utcnow,
)

if TYPE_CHECKING:
    from service.access import Principal

CANCELED = "canceled: a person took over"
# The outcomes of a lead a person records, in the order a lead moves through them; the first three mean a
# person talked with the borrower.
OUTCOMES = ("reached", "appointment", "application", "not_a_fit", "lost", "no_response")
CONTACT_OUTCOMES = frozenset({"reached", "appointment", "application"})
# How a person acted: their own text, a bridged call, or an outcome (by its name).
ACTIONS = frozenset({"text", "call", *OUTCOMES})
CONTACT = frozenset({"text", "call", *CONTACT_OUTCOMES})


def taken_over(lead: Lead) -> bool:
    """A person took this conversation over: they acted since its opener (or there was none)."""
    if lead.human_at is None:
        return False
    return lead.opener_at is None or lead.human_at >= lead.opener_at


def cancel_automated(session: Session, lead: Lead) -> int:
    """Suppress the lead's automated texts to the borrower still waiting to go; how many.

    A text whose earlier attempt may have reached Twilio (unknown outcome) is left to the send path, which asks
    Twilio first (as an opt-out does, service.store.set_opt_out). A text the sender already claimed is gone."""
    canceled = session.exec(
        update(OutboundMessage)
        .where(col(OutboundMessage.lead_id) == lead.id, col(OutboundMessage.audience) == Audience.borrower,
               col(OutboundMessage.status) == MessageStatus.pending,
               col(OutboundMessage.purpose).in_(sorted(AUTOMATED)),
               col(OutboundMessage.unknown_outcome).is_(False))
        .values(status=MessageStatus.suppressed, last_error=CANCELED)
        .execution_options(synchronize_session=False)
    ).rowcount
    if canceled:
        lead.automated_count = max(lead.automated_count - canceled, 0)  # never sent, so not counted
    return int(canceled or 0)


def human_acted(session: Session, ctx: Any, *, broker: Broker, lead: Lead, principal: Principal, how: str,
                data: dict[str, Any] | None = None) -> bool:
    """Record that a person acted on `lead` (`how`: "text", "call" or an outcome) and stop the bot on it.

    Returns whether this action took the conversation over (the first human action since its opener). Call it
    with the lead locked (`locked_lead`), inside the transaction that stores the action itself."""
    if how not in ACTIONS:
        msg = f"unknown human action {how!r}; one of {', '.join(sorted(ACTIONS))}"
        raise ValueError(msg)
    del ctx  # the signature every human action shares; nothing here needs the context yet
    now = utcnow()
    actor, name = principal.actor, principal.name
    first = not taken_over(lead)
    if first:
        lead.human_at, lead.human_by = now, actor
    if lead.state in (LeadState.handoff, LeadState.ready) and lead.handoff_worked_at is None:
        lead.handoff_worked_at = now
        events.record(session, broker=broker, lead=lead, kind=EventKind.handoff_worked, actor=actor,
                      actor_name=name, data={"how": how}, at=now)
    if how in CONTACT:
        events.record(session, broker=broker, lead=lead, kind=EventKind.human_contact, actor=actor,
                      actor_name=name, data={"how": how, **(data or {})}, at=now)
    canceled = cancel_automated(session, lead)
    if first:
        events.record(session, broker=broker, lead=lead, kind=EventKind.bot_stopped, actor=actor, actor_name=name,
                      data={"how": how, "canceled": canceled}, at=now)
    lead.updated_at = now
    session.add(lead)
    return first


def locked_lead(session: Session, lead_id: int) -> Lead | None:
    """The lead, locked for this transaction as the reply processing locks it (PostgreSQL; SQLite serialises
    writers), so a human action and a reply being processed never interleave."""
    return session.get(Lead, lead_id, with_for_update=True, populate_existing=True)
