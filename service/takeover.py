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
from service.errors import ApiError
from service.events import EventKind
from service.leads_view import broker_of, visible_lead
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
from service.sending import verdicts

if TYPE_CHECKING:
    from service.access import Principal

CANCELED = "canceled: a person took over"
MAX_NOTE = 2000
# The outcomes of a lead a person records, in the order a lead moves through them; the first three mean a
# person talked with the borrower.
OUTCOMES = ("reached", "appointment", "application", "not_a_fit", "lost", "no_response")
CONTACT_OUTCOMES = frozenset({"reached", "appointment", "application"})
# How a person acted: their own text, a bridged call, the broker answering the lead's call, or an outcome.
ACTIONS = frozenset({"text", "call", "answered_call", *OUTCOMES})
CONTACT = frozenset({"text", "call", "answered_call", *CONTACT_OUTCOMES})


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
        .values(status=MessageStatus.suppressed, last_error=CANCELED,
                verdicts=verdicts.entry_sql(f"not sent: {CANCELED}", now=utcnow()))
        .execution_options(synchronize_session=False)
    ).rowcount
    if canceled:
        lead.automated_count = max(lead.automated_count - canceled, 0)  # never sent, so not counted
    return int(canceled or 0)


def human_acted(session: Session, ctx: Any, *, broker: Broker, lead: Lead, principal: Principal, how: str,
                data: dict[str, Any] | None = None, contact: bool = True) -> bool:
    """Record that a person acted on `lead` (`how`: "text", "call" or an outcome) and stop the bot on it.

    `contact=False`: the action is not yet a contact (a person's text is one once it goes out: service.sender
    records it then, so a text held for quiet hours and then suppressed by a STOP never counts as reaching them).

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
    if how in CONTACT and contact:
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


def check_outcome(outcome: object, note: object) -> tuple[str, str | None]:
    """The outcome (one of OUTCOMES) and the note (optional text, at most 2000 characters); 422 naming the field."""
    if not isinstance(outcome, str) or outcome not in OUTCOMES:
        shown = repr(outcome) if isinstance(outcome, str) else "missing" if outcome is None else "not a string"
        raise ApiError(f"outcome: {shown} is not an outcome; one of {', '.join(OUTCOMES)}", status_code=422,
                       details={"outcomes": list(OUTCOMES)})
    if note is not None and not isinstance(note, str):
        raise ApiError("note: write the note as a string", status_code=422)
    text = (note or "").replace("\x00", "").strip() or None
    if text is not None and len(text) > MAX_NOTE:
        raise ApiError(f"note: {len(text)} characters; at most {MAX_NOTE}", status_code=422)
    return outcome, text


def set_outcome(session: Session, ctx: Any, principal: Principal, lead_id: int, *, outcome: object,
                note: object = None) -> Lead:
    """Record what became of the lead (an `outcome` event, which the CRM webhooks carry as lead.outcome) and
    take it over; 404 for a lead the principal may not see, 422 for an unknown outcome or a bad note."""
    lead = visible_lead(session, principal, lead_id)
    chosen, text = check_outcome(outcome, note)
    lead = locked_lead(session, lead_id) or lead
    broker = broker_of(session, ctx, lead)
    now = utcnow()
    lead.outcome, lead.outcome_note, lead.outcome_at, lead.outcome_by = chosen, text, now, principal.actor
    session.add(lead)
    events.record(session, broker=broker, lead=lead, kind=EventKind.outcome, actor=principal.actor,
                  actor_name=principal.name, data={"outcome": chosen, "note": text}, at=now)
    human_acted(session, ctx, broker=broker, lead=lead, principal=principal, how=chosen)
    return lead
