"""A person's own text to a borrower, from the broker's business number (POST /api/leads/{id}/messages and the
console's reply box).

`send_human_text` checks, stores and audits the text in the caller's transaction; the caller commits and hands
the id to the worker (service.worker.Worker.after_webhook), which sends it like any text (the send-time
opt-out check included). In order, a text is refused:
- 404 for a lead the principal may not see (the same answer as for none);
- 422 for an empty body or one over 1600 characters (Twilio's limit);
- 409 when the borrower opted out ("call, don't text") or the number cannot take texts (a landline);
- 409 during the borrower's quiet hours when policies/sending/human.yaml says `quiet_hours: refuse` (with
  `hold`, the default, it is stored and goes when the window opens; the answer says until when);
- 422 when the output guard flags it and the policy says `guard: block`, or `warn` without `"confirm": true`
  (the violations are in the answer's details: the rule and the words it matched in the person's own text).
A text sent past a warning is stored with `guard_override` and the violations, and a `human_text` event says
so. Caps on automated texts never apply; the do-not-text list (contacts never to text *automatically*) does
not either. The text is the person taking the lead over (service.takeover.human_acted).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlmodel import Session

from service import events
from service.errors import ApiError
from service.events import EventKind
from service.leads_view import broker_of, iso, message_json, visible_lead
from service.models import Audience, MessageStatus, OutboundMessage, Purpose, utcnow
from service.optout_lock import describe
from service.sending import gates, verdicts
from service.sending.gates import Cause, Verdict
from service.store import opt_out_state, saved_id
from service.takeover import human_acted, locked_lead

if TYPE_CHECKING:
    from service.access import Principal

MAX_BODY = 1600  # Twilio's limit on a message body
TEMPLATE_ID = "human"
OPTED_OUT = "the borrower opted out; call, don't text"


def check_body(body: object) -> str:
    """The text to send: a string, not blank, at most 1600 characters (NUL removed: no database holds it)."""
    if not isinstance(body, str):
        raise ApiError("body: write the text to send as a string", status_code=422)
    text = body.replace("\x00", "").strip()
    if not text:
        raise ApiError("body: empty; write the text to send", status_code=422)
    if len(text) > MAX_BODY:
        raise ApiError(f"body: {len(text)} characters; a text holds at most {MAX_BODY}", status_code=422)
    return text


def _guard(ctx: Any, mode: str, text: str, *, confirm: bool) -> tuple[dict[str, Any], bool | None]:
    """The guard's verdict as stored with the text, and whether the person overrode a warning."""
    if mode == "off":
        return {"mode": "off", "checked": False}, None
    result = ctx.guard.check(text)
    violations = [{"rule": v.rule, "match": v.match} for v in result.violations]
    stored: dict[str, Any] = {"mode": mode, "allowed": bool(result.allowed), "violations": violations,
                              "warnings": [{"rule": v.rule, "match": v.match} for v in result.warnings],
                              "policy_version": ctx.policy_version}
    if result.allowed:
        return stored, False
    rules = ", ".join(dict.fromkeys(v["rule"] for v in violations))
    if mode == "block":
        raise ApiError(f"body: the firm's policy blocks this text (output guard: {rules})", status_code=422,
                       details={"guard": "block", "violations": violations})
    if not confirm:
        raise ApiError(f"body: the output guard flags this text ({rules}); send it again with \"confirm\": true "
                       "to send it anyway (the override is recorded)", status_code=422,
                       details={"guard": "warn", "violations": violations, "confirm": True})
    return {**stored, "overridden": True}, True


def send_human_text(session: Session, ctx: Any, principal: Principal, lead_id: int, *, body: object,
                    confirm: bool = False, now: datetime | None = None) -> OutboundMessage:
    """Check, store and audit a person's text to the lead's borrower; the caller commits, then sends its id.

    Raises ApiError (404, 409, 422) as the module says; nothing is stored then."""
    lead = visible_lead(session, principal, lead_id)
    text = check_body(body)
    lead = locked_lead(session, saved_id(lead)) or lead
    broker = broker_of(session, ctx, lead)
    state = opt_out_state(session, saved_id(broker), lead.phone, ctx.sending_policy.opt_out_scope)
    if state is not None and state.opted_out:
        raise ApiError(OPTED_OUT, status_code=409, details={"opt_out": describe(state)})
    if lead.not_textable_reason:
        reason = lead.not_textable_reason.replace("_", " ")
        raise ApiError(f"the number cannot take texts ({reason}); call instead", status_code=409)
    policy = ctx.sending_policy.human
    now = now or utcnow()
    opens = ctx.sending_policy.next_allowed_send(lead.phone, now, broker.timezone, is_opener=False)
    waiting = ctx.sending_policy.quiet_hours_reason(lead.phone, now, broker.timezone) if opens > now else None
    if waiting and policy.quiet_hours == "refuse":
        raise ApiError(f"{waiting}: the text was not sent; call, or send it then", status_code=409,
                       details={"opens_at": iso(opens)})
    guard_result, override = _guard(ctx, policy.guard, text, confirm=confirm)
    msg = OutboundMessage(
        broker_id=saved_id(broker), lead_id=lead.id, audience=Audience.borrower, purpose=Purpose.human,
        template_id=TEMPLATE_ID, to_phone=lead.phone, from_phone=broker.twilio_number, body=text,
        policy_version=ctx.policy_version, guard_result=guard_result,
        guard_override=override, author=principal.actor, author_name=principal.name, status=MessageStatus.pending,
        next_attempt_at=opens if waiting else now, last_error=f"deferred: {waiting}" if waiting else None,
        created_at=now,
    )
    held = Verdict.defer(Cause.quiet_hours, waiting, opens) if waiting else None
    verdicts.record(msg, held or gates.allowed(ctx, broker_tz=broker.timezone, to=lead.phone, purpose=Purpose.human,
                                                   now=now),
                    stage="queue", now=now, policy_version=guard_result.get("policy_version") or msg.policy_version)
    session.add(msg)
    session.flush()
    events.record(session, broker=broker, lead=lead, kind=EventKind.human_text, actor=principal.actor,
                  actor_name=principal.name, at=now,
                  data={"message_id": msg.id, "override": bool(override), "guard": policy.guard,
                        "violations": [v["rule"] for v in guard_result.get("violations", [])],
                        "held_until": iso(opens) if waiting else None})
    human_acted(session, ctx, broker=broker, lead=lead, principal=principal, how="text",
                data={"message_id": msg.id}, contact=False)  # the contact is recorded when the text goes out
    return msg


def human_text_json(msg: OutboundMessage) -> dict[str, Any]:
    """The API's answer for a person's text: the conversation item, when it will go, and the guard's verdict."""
    held = msg.status == MessageStatus.pending and msg.next_attempt_at > msg.created_at
    return {**message_json(msg), "deferred_until": iso(msg.next_attempt_at) if held else None,
            "guard": msg.guard_result}
