"""The borrower's language, as their replies show it: the lead switches to Spanish or back, in the reply's
own transaction, and each switch is an event in the lead's history.

A reply detected as Spanish (service.replies.language) makes the lead Spanish; a later clearly English reply
makes it English again; an undecidable one ("ok", "STOP", a number) leaves it. Every text rendered for the
lead afterwards is in its language (service.outbox -> service.templates), and every Decision records it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlmodel import Session

from service import events
from service.events import EventKind
from service.models import Broker, InboundMessage, Lead
from service.replies.language import detect

if TYPE_CHECKING:
    from service.templates import TemplateSet

ENGLISH = "en"


def language_of(lead: Lead | None) -> str:
    """The language texts to this lead are written in ("en" for no lead, or a row from before the column)."""
    return (lead.language if lead is not None else None) or ENGLISH


def language_note(templates: TemplateSet, lead: Lead | None) -> str:
    """$language_note in an alert to the team: " (in Spanish)" for a lead that writes in Spanish, else ""."""
    return f" ({templates.phrase('writes_spanish')})" if language_of(lead) == "es" else ""


def note_language(session: Session, *, broker: Broker, lead: Lead, inbound: InboundMessage) -> str:
    """Switch the lead to the language of this reply when it says one that differs; the lead's language."""
    found = detect(inbound.body or "")
    previous = language_of(lead)
    if found is None or found == previous:
        return previous
    lead.language = found
    session.add(lead)
    events.record(session, broker=broker, lead=lead, kind=EventKind.language, actor="borrower",
                  data={"language": found, "previous": previous, "message_id": inbound.id})
    return found
