"""The console's forms: each a POST of a plain HTML form (its CSRF token in the `csrf_token` field, checked by
service.web.principal), handled by the same service function as the JSON API, then a redirect back to the page
(`?done=<what>` names a fixed message). A refusal the user can fix (a time that has passed) shows the page
again with the reason and what they typed; any other refusal is the console's error page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio.to_thread
from litestar import post
from litestar.background_tasks import BackgroundTask
from litestar.response import Redirect, Template

from service.access import Principal
from service.broker_status import set_busy
from service.click_to_call import start_call
from service.db import session_scope
from service.errors import ApiError
from service.human_text import send_human_text
from service.signin import end_session
from service.takeover import set_outcome
from service.web.console_data import filters, inbox_context, lead_context
from service.web.leads_api import send_after_commit
from service.web.pages import ConsoleRequest, page, safe_next, signed_in
from service.web.principal import cleared_cookies

# What a redirect's `?done=` says on the page it lands on (fixed words: a link cannot make a page say anything).
DONE = {
    "signed_out": "You are signed out.",
    "sent": "Sent from the business number. textback's automated texts on this lead have stopped.",
    "dry_run": "Saved and printed where textback runs: it runs without Twilio credentials (dry-run), so nothing "
               "is sent. textback's automated texts on this lead have stopped.",
    "held": "Saved: it is quiet hours where the borrower lives, so your text goes when they end. Call if it "
            "cannot wait.",
    "calling": "Twilio is calling your phone now. Answer it, and it connects you to the borrower from the "
               "business number.",
    "not_placed": "No call was placed: textback runs without Twilio credentials (dry-run). The call it would "
                  "have placed is printed where it runs.",
    "outcome": "Outcome saved. textback's automated texts on this lead have stopped.",
    "busy": "Saved: callers are told you are with a client until then.",
    "free": "Saved: callers are told you are available.",
}


async def form_fields(request: ConsoleRequest) -> dict[str, str]:
    """The posted form's text fields (files are not taken)."""
    form = await request.form()
    return {key: value.strip() for key, value in form.items() if isinstance(value, str)}


def back_to(path: str, done: str, *, background: BackgroundTask | None = None) -> Redirect:
    """303 to a console page (never elsewhere), saying `done` there; `background` runs after the answer."""
    target = safe_next(path)
    return Redirect(path=f"{target}{'&' if '?' in target else '?'}done={done}", status_code=303,
                    background=background)


@post("/brokers/{number:str}/busy", name="console_busy", status_code=303)
async def busy(request: ConsoleRequest, number: str) -> Redirect | Template:
    """"With a client until HH:MM" (the broker's time today), or free again when `until` is empty."""
    principal = await signed_in(request)
    fields = await form_fields(request)
    until = fields.get("until") or None
    back = safe_next(fields.get("back"))
    ctx = request.app.state.ctx

    def save() -> None:
        with session_scope(ctx.engine) as session:
            set_busy(session, ctx, principal, number, until)

    try:
        await anyio.to_thread.run_sync(save)
    except ApiError as exc:
        if exc.status_code != 422:
            raise
        return await inbox_again(request, principal, back, error=exc_message(exc), status_code=422)
    return back_to(back, "busy" if until else "free")


def exc_message(exc: ApiError) -> str:
    """A refusal's reason for a person: the API's message without the field's name in front."""
    text = str(exc)
    field, sep, rest = text.partition(": ")
    reason = rest if sep and field.isidentifier() else text
    return reason[:1].upper() + reason[1:] + ("" if reason.endswith(".") else ".")


async def inbox_again(request: ConsoleRequest, principal: Principal, back: str, *, error: str,
                      status_code: int) -> Template:
    """The inbox as `back` showed it, with a refusal to fix."""
    show, q, _ = filters(dict(parse_qsl(urlsplit(back).query)))
    ctx = request.app.state.ctx
    context = await anyio.to_thread.run_sync(lambda: inbox_context(ctx, principal, show=show, q=q, cursor=None))
    return page("inbox.html", {**context, "error": error, "here": back}, principal=principal,
                status_code=status_code)


@post("/leads/{lead_id:int}/reply", name="console_reply", status_code=303)
async def reply(request: ConsoleRequest, lead_id: int) -> Redirect | Template:
    """The user's own text to the borrower (service.human_text.send_human_text, as POST /api/leads/{id}/messages).
    Flagged by the output guard: the page again, with what it flagged and, when the firm's policy lets a person
    override, a "Send anyway" button. Opted out, empty, too long: the page again with the reason."""
    principal = await signed_in(request)
    fields = await form_fields(request)
    body, confirm = fields.get("body", ""), fields.get("confirm") == "true"
    ctx = request.app.state.ctx

    def send() -> Any:
        with session_scope(ctx.engine) as session:
            return send_human_text(session, ctx, principal, lead_id, body=body, confirm=confirm)

    try:
        msg = await anyio.to_thread.run_sync(send)
    except ApiError as exc:
        if exc.status_code not in (409, 422):
            raise
        return await lead_again(request, principal, lead_id, exc, draft=body)
    done = "held" if msg.next_attempt_at > msg.created_at else "dry_run" if ctx.settings.dry_run else "sent"
    return back_to(f"/console/leads/{lead_id}", done,
                   background=send_after_commit(request, [msg]))


async def lead_again(request: ConsoleRequest, principal: Principal, lead_id: int, exc: ApiError, *,
                     draft: str = "", note: str = "") -> Template:
    """The lead page again after a refusal: the reason, the guard's findings, and the text or note as typed."""
    ctx = request.app.state.ctx
    context = await anyio.to_thread.run_sync(lambda: lead_context(ctx, principal, lead_id))
    details = exc.details if isinstance(exc.details, dict) else {}
    warning = None
    if details.get("guard") in ("warn", "block"):
        warning = {"violations": [violation_words(v) for v in details.get("violations") or []],
                   "confirmable": details.get("guard") == "warn"}
    error = None if warning else exc_message(exc)
    return page("lead.html", {**context, "warning": warning, "error": error, "draft": draft, "note": note},
                principal=principal, status_code=exc.status_code)


def violation_words(violation: object) -> str:
    """What the guard found in the person's text: the words it matched and the rule, readable."""
    if not isinstance(violation, dict):
        return str(violation)
    rule = str(violation.get("rule") or "").rsplit(".", 1)[-1].replace("-", " ").replace("_", " ")
    match = violation.get("match")
    return f"“{match}” ({rule})" if match else rule


@post("/leads/{lead_id:int}/call", name="console_call", status_code=303)
async def call(request: ConsoleRequest, lead_id: int) -> Redirect | Template:
    """Click-to-call (service.click_to_call.start_call, as POST /api/leads/{id}/call): Twilio rings the user's
    phone, then bridges them to the borrower from the business number. The lead page then follows the call."""
    principal = await signed_in(request)
    ctx = request.app.state.ctx
    try:
        placed = await anyio.to_thread.run_sync(lambda: start_call(ctx, principal, lead_id))
    except ApiError as exc:
        if exc.status_code not in (422, 502):
            raise
        return await lead_again(request, principal, lead_id, exc)
    return back_to(f"/console/leads/{lead_id}", "not_placed" if placed.status == "not-placed" else "calling")


@post("/leads/{lead_id:int}/outcome", name="console_outcome", status_code=303)
async def outcome(request: ConsoleRequest, lead_id: int) -> Redirect | Template:
    """What became of the lead, with an optional note (service.takeover.set_outcome, as the API's)."""
    principal = await signed_in(request)
    fields = await form_fields(request)
    ctx = request.app.state.ctx

    def save() -> None:
        with session_scope(ctx.engine) as session:
            set_outcome(session, ctx, principal, lead_id, outcome=fields.get("outcome"),
                        note=fields.get("note") or None)

    try:
        await anyio.to_thread.run_sync(save)
    except ApiError as exc:
        if exc.status_code != 422:
            raise
        return await lead_again(request, principal, lead_id, exc, note=fields.get("note", ""))
    return back_to(f"/console/leads/{lead_id}", "outcome")


@post("/logout", name="console_logout", status_code=303)
async def logout(request: ConsoleRequest) -> Redirect:
    """Sign out: the session is revoked server-side (service.signin.end_session) and its cookies cleared."""
    principal = await signed_in(request)
    ctx = request.app.state.ctx
    session_id = principal.session_id

    def revoke() -> None:
        if session_id is not None:
            with session_scope(ctx.engine) as session:
                end_session(session, session_id)

    await anyio.to_thread.run_sync(revoke)
    return Redirect(path="/console/login?signed_out=1", status_code=303,
                    cookies=cleared_cookies(secure=ctx.settings.secure_cookies))


ACTIONS = [busy, reply, call, outcome, logout]
