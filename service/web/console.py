"""The broker console's pages (/console): sign-in, the inbox and a lead, server-rendered from the same read side
as the JSON API (service.leads_view, service.broker_status), with live fragments the page's script polls.

Sign-in is the one page that needs JavaScript: its script posts the phone and then the texted code to the
auth API (/api/auth/code, /api/auth/session), which sets the session cookie; the page says so when scripts
are off. Reading leads and every action (service.web.console_actions) are plain HTML and forms.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Response, get
from litestar.response import Redirect, Template

from service.errors import ApiError
from service.web.console_actions import ACTIONS, DONE
from service.web.console_data import filters, inbox_context, lead_context
from service.web.console_report import ROUTES as REPORT_ROUTES
from service.web.pages import (
    STATIC,
    ConsoleRequest,
    console_router,
    fragment,
    page,
    query_string,
    render,
    safe_next,
    signed_in,
)
from service.web.principal import current_principal


@get("/login", name="console_login")
async def login_page(request: ConsoleRequest) -> Template | Redirect:
    """Sign in: the phone, then the texted code. Already signed in: straight on to `next` (a session opened from
    an alert link, which sees one lead, may sign in fully here)."""
    target = safe_next(request.query_params.get("next"))
    principal = await current_principal(request, required=False)
    if principal is not None and principal.kind == "session" and principal.lead_id is None:
        return Redirect(path=target, status_code=303)
    flash = DONE["signed_out"] if request.query_params.get("signed_out") else ""
    return page("login.html", {"next": target, "phone": "", "flash": flash})


@get("/", name="console_inbox")
async def inbox(request: ConsoleRequest) -> Template:
    """Leads, newest first; the ones that need a person stand out; updates itself while open."""
    principal = await signed_in(request)
    show, q, cursor = filters(request.query_params)
    ctx = request.app.state.ctx
    context = await anyio.to_thread.run_sync(
        lambda: inbox_context(ctx, principal, show=show, q=q, cursor=cursor))
    done = DONE.get(request.query_params.get("done") or "")
    return page("inbox.html", {**context, "flash": done, "here": f"/console{query_string(show=show, q=q)}"},
                principal=principal)


@get("/live", name="console_inbox_live")
async def inbox_live(request: ConsoleRequest) -> Response[Any]:
    """The inbox's rows as an HTML fragment (304 when unchanged): what the page's script polls."""
    principal = await signed_in(request)
    show, q, _ = filters(request.query_params)
    ctx = request.app.state.ctx
    context = await anyio.to_thread.run_sync(
        lambda: inbox_context(ctx, principal, show=show, q=q, cursor=None, brokers=False))
    return fragment(request, render(request, "_inbox_live.html", context))


@get("/leads/{lead:str}", name="console_lead")
async def lead_page(request: ConsoleRequest, lead: str) -> Template:
    """A lead: the conversation, what the bot captured, voicemail, and the reply, call and outcome forms. An
    address that is no lead number is the same 404 page as a lead that does not exist."""
    principal = await signed_in(request)
    if not lead.isdigit() or len(lead) > 18:
        raise ApiError("lead not found", status_code=404)
    lead_id = int(lead)
    ctx = request.app.state.ctx
    context = await anyio.to_thread.run_sync(lambda: lead_context(ctx, principal, lead_id))
    done = DONE.get(request.query_params.get("done") or "")
    return page("lead.html", {**context, "flash": done, "draft": ""}, principal=principal)


@get("/leads/{lead_id:int}/live", name="console_lead_live")
async def lead_live(request: ConsoleRequest, lead_id: int) -> Response[Any]:
    """The lead page's conversation and timeline as an HTML fragment (304 when unchanged)."""
    principal = await signed_in(request)
    ctx = request.app.state.ctx
    context = await anyio.to_thread.run_sync(lambda: lead_context(ctx, principal, lead_id))
    return fragment(request, render(request, "_lead_live.html", context))


@get("/{rest:path}", name="console_unknown")
async def unknown_page(request: ConsoleRequest, rest: str) -> Template:
    """Any other /console address (a mistyped lead number, an old bookmark): the console's 404 page."""
    await signed_in(request)
    raise ApiError(f"no console page at {rest}", status_code=404)


CONSOLE = console_router([login_page, inbox, inbox_live, lead_page, lead_live, *ACTIONS, *REPORT_ROUTES,
                          unknown_page])
ROUTES = [STATIC, CONSOLE]
