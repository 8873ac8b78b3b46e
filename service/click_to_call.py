"""Click-to-call: Twilio rings the signed-in user's phone from the broker's business number, says who it is
connecting, then dials the borrower with the business number as caller ID. A bridged call is the person
taking the lead over (service.takeover.human_acted, how="call").

    POST /api/leads/{id}/call        start_call: a HumanCall row, then the Calls API (no transaction across it)
    /twilio/voice/bridge?call=ID     the user answered: "Connecting you to ...", <Dial> the borrower
    /twilio/voice/bridge-status      the <Dial> ended: completed is a bridged call; anything else a failure
    /twilio/voice/bridge-call-status the user's call ended (the Calls API statusCallback): a user who never
                                     answered, or hung up before the borrower was dialled

Only a person can be called first: a bearer token (a CRM) has no phone, so it is refused (422). A call is not a
text: an opted-out borrower and a number on the do-not-text list (contacts never to text automatically) can be
called; quiet hours are not applied either (the person placing the call decides). In dry-run (no Twilio
credentials) nothing is placed: the call is recorded as not placed and what would happen is printed, as texts
are.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlmodel import Session

from service import events
from service.access import Principal
from service.db import session_scope
from service.errors import ApiError
from service.events import EventKind
from service.leads_view import broker_of, human_call_json, visible_lead
from service.logs import log
from service.models import Broker, HumanCall, Lead, utcnow
from service.phones import mask
from service.takeover import human_acted, locked_lead
from service.twilio import twiml
from service.twilio.client import CallError
from service.twilio.forms import BridgeCallStatusForm, BridgeForm, BridgeStatusForm
from service.twilio.outcome import Outcome

if TYPE_CHECKING:
    from service.context import AppContext

logger = logging.getLogger("textback.calls")

GONE = "Sorry, this call can no longer be connected. Please try again from the console."
NOT_REACHED = "The borrower did not answer. Goodbye."
# Statuses after which a click-to-call is over (a late or repeated callback changes nothing but the bridge).
ENDED = {"completed", "busy", "failed", "no-answer", "canceled", "not-placed", "ended"}


def _url(ctx: Any, path: str, call_id: int) -> str:
    return f"{ctx.settings.public_url}{path}?call={call_id}"


def start_call(ctx: AppContext, principal: Principal, lead_id: int) -> HumanCall:
    """Place a click-to-call for `principal` to the lead's borrower; the stored HumanCall (status `ringing-user`
    when Twilio took it, `not-placed` in dry-run). ApiError 404 (not visible), 422 (a token: no phone), 502
    (Twilio refused or could not be reached; the row records why)."""
    with session_scope(ctx.engine) as session:
        lead = visible_lead(session, principal, lead_id)
        if principal.phone is None:
            raise ApiError("a bearer token has no phone to ring: click-to-call calls a signed-in person's phone "
                           "first (sign in to the console)", status_code=422)
        broker = broker_of(session, ctx, lead)
        call = HumanCall(lead_id=lead_id, broker_id=broker.id or 0, user_phone=principal.phone,
                         user_name=principal.name)
        session.add(call)
        session.flush()
        events.record(session, broker=broker, lead=lead, kind=EventKind.call_started, actor=principal.actor,
                      actor_name=principal.name, data={"human_call_id": call.id})
        call_id, borrower, business = call.id or 0, lead.phone, broker.twilio_number
    # Committed: the bridge webhook can find the row however fast the user answers. No transaction is held
    # across the request.
    url = _url(ctx, "/twilio/voice/bridge", call_id)
    status, sid, error = "ringing-user", None, None
    if ctx.gateway is None:
        print(f"[dry-run] call to {principal.phone} from {business}, then bridged to {borrower} "
              f"(TwiML from {url}): not placed", flush=True)
        status, error = "not-placed", "dry-run: no Twilio credentials, no call was placed"
    else:
        try:
            placed = ctx.gateway.create_call(to=principal.phone, from_=business, url=url,
                                             status_callback=_url(ctx, "/twilio/voice/bridge-call-status", call_id))
        except CallError as exc:
            status, error = "failed", f"Twilio did not place the call ({exc})"
        else:
            sid = placed.sid
    with session_scope(ctx.engine) as session:
        row = session.get(HumanCall, call_id)
        if row is None:  # forgotten (privacy) in the meantime: nothing left to record on
            raise ApiError("lead not found", status_code=404)
        row.call_sid = row.call_sid or sid
        if row.status == "requested":  # a webhook may already have moved it on
            row.status = status
        row.error, row.ended_at = error, utcnow() if status in ENDED else None
        session.add(row)
    log(logger, logging.INFO, "click-to-call", human_call_id=call_id, status=status, user=mask(principal.phone),
        borrower=mask(borrower), broker_id=broker.id)
    if status == "failed":
        raise ApiError(error or "Twilio did not place the call", status_code=502,
                       details={"call": human_call_json(row)})
    return row


def _call_and_lead(session: Session, call_id: int, *, lock: bool) -> tuple[HumanCall, Lead, Broker] | None:
    """The click-to-call, its lead and broker (the lead locked when it is about to be taken over)."""
    call = session.get(HumanCall, call_id, with_for_update=True)
    if call is None:
        return None
    lead = locked_lead(session, call.lead_id) if lock else session.get(Lead, call.lead_id)
    broker = session.get(Broker, call.broker_id)
    if lead is None or broker is None:
        return None
    return call, lead, broker


def bridge(session: Session, ctx: AppContext, form: BridgeForm) -> Outcome:
    """The user answered: tell them who, then dial the borrower from the business number."""
    found = _call_and_lead(session, form.human_call_id, lock=False)
    if found is None or found[0].call_sid not in (None, form.call_sid) or found[0].status in ENDED:
        log(logger, logging.WARNING, "bridge for no open click-to-call", human_call_id=form.human_call_id)
        return Outcome(twiml=twiml.say_and_hang_up(GONE))
    call, lead, broker = found
    call.call_sid, call.status = form.call_sid, "bridging"
    session.add(call)
    return Outcome(twiml=twiml.bridge(borrower=lead.phone, caller_id=broker.twilio_number,
                                      action=_url(ctx, "/twilio/voice/bridge-status", form.human_call_id)))


def bridge_ended(session: Session, ctx: AppContext, form: BridgeStatusForm) -> Outcome:
    """The <Dial> to the borrower ended: `completed` is a bridged call (a human contact); else the reason."""
    found = _call_and_lead(session, form.human_call_id, lock=True)
    if found is None or found[0].call_sid not in (None, form.call_sid):
        return Outcome(twiml=twiml.hangup())
    call, lead, broker = found
    if call.bridged:  # Twilio retried the callback: recorded already
        return Outcome(twiml=twiml.hangup())
    call.ended_at, call.duration = utcnow(), form.duration
    if form.status in ("completed", "answered"):
        call.status, call.bridged, call.error = "completed", True, None
        session.add(call)
        person = Principal(kind="session", name=call.user_name or call.user_phone,
                           broker_ids=frozenset({broker.id or 0}), phone=call.user_phone)
        human_acted(session, ctx, broker=broker, lead=lead, principal=person, how="call",
                    data={"human_call_id": call.id, "duration": form.duration})
        log(logger, logging.INFO, "click-to-call bridged", human_call_id=call.id, duration=form.duration)
        return Outcome(twiml=twiml.hangup())
    call.status, call.error = form.status, f"the borrower did not answer ({form.status})"
    session.add(call)
    log(logger, logging.INFO, "click-to-call not bridged", human_call_id=call.id, status=form.status)
    return Outcome(twiml=twiml.say_and_hang_up(NOT_REACHED))


def user_call_ended(session: Session, form: BridgeCallStatusForm) -> Outcome:
    """The call to the user ended. Recorded only when nothing else said how it ended: the user's phone did not
    answer, or they hung up before the borrower's leg ended."""
    call = session.get(HumanCall, form.human_call_id, with_for_update=True)
    if call is None or call.call_sid not in (None, form.call_sid) or call.ended_at is not None:
        return Outcome(twiml=twiml.empty_voice())
    call.call_sid, call.ended_at = form.call_sid, utcnow()
    if form.status == "completed":
        call.status, call.error = "ended", "the call ended before the borrower was connected"
    else:
        call.status, call.error = form.status, f"your phone did not answer ({form.status})"
    session.add(call)
    return Outcome(twiml=twiml.empty_voice())
