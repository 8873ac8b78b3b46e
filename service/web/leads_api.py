"""The leads JSON API (/api/leads): thin handlers that parse, call service.leads_view (reads), commit and answer.

Every route needs a principal (service.web.principal: a session cookie, with the CSRF header on unsafe
methods, or a bearer token) and answers 404 for a lead it may not see, exactly as for one that does not exist.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from sqlmodel import Session

from service.access import Principal
from service.alerts import pending_ids
from service.click_to_call import start_call
from service.db import session_scope
from service.errors import ApiError
from service.human_text import human_text_json, send_human_text
from service.leads_view import human_call_json, lead_detail, list_leads, parse_limit
from service.models import OutboundMessage
from service.takeover import set_outcome
from service.web.principal import provide_principal

ApiRequest = Request[Any, Any, State]


def send_after_commit(request: ApiRequest, msgs: list[OutboundMessage]) -> BackgroundTask | None:
    """The response's background task that sends the committed texts due now (the worker's own path, as after a
    webhook); None when there is nothing to send. The console's forms use it too."""
    now_ids = [m.id for m in msgs if m.id is not None and m.id in pending_ids(msgs)
               and m.next_attempt_at <= m.created_at]
    if not now_ids:
        return None
    return BackgroundTask(request.app.state.worker.after_webhook, now_ids, [])


def flag(data: dict[str, Any], name: str) -> bool:
    """An optional JSON boolean (false when absent); 422 naming it for anything else."""
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(f"{name}: true or false", status_code=422)
    return value


@get("/", sync_to_thread=True, summary="The leads the caller may see, newest first")
def leads_index(
    request: ApiRequest, principal: Principal,
    lead_state: str | None = Parameter(query="state", default=None, description="a lead state, or needs_attention"),
    q: str | None = Parameter(default=None, description="digits of the phone number, or part of the name"),
    cursor: str | None = Parameter(default=None, description="next_cursor of the previous page"),
    limit: str | None = Parameter(default=None, description="1 to 200 (default 50)"),
) -> dict[str, Any]:
    """`{"leads": [...], "next_cursor": ...}`; 400 naming the parameter for a bad state, cursor or limit."""
    ctx = request.app.state.ctx
    with Session(ctx.engine) as session:
        leads, next_cursor = list_leads(session, ctx, principal, state=lead_state, q=q, cursor=cursor,
                                        limit=parse_limit(limit))
    return {"leads": leads, "next_cursor": next_cursor}


@get("/{lead_id:int}", sync_to_thread=True, summary="One lead: conversation, calls, voicemails, history, alerts")
def lead_show(request: ApiRequest, principal: Principal, lead_id: int) -> dict[str, Any]:
    """The lead page's data; 404 for a lead the caller may not see."""
    ctx = request.app.state.ctx
    with Session(ctx.engine) as session:
        return lead_detail(session, ctx, principal, lead_id)


@post("/{lead_id:int}/messages", sync_to_thread=True, status_code=201,
      summary="Text the borrower from the broker's number, as yourself")
def lead_message(request: ApiRequest, principal: Principal, lead_id: int, data: dict[str, Any]) -> Response[Any]:
    """`{"body": "...", "confirm": false}` -> 201 with the stored text; 409 opted out; 422 empty, too long, or
    flagged by the output guard (policies/sending/human.yaml: `confirm` sends past a warning)."""
    ctx = request.app.state.ctx
    confirm = flag(data, "confirm")
    with session_scope(ctx.engine) as session:
        msg = send_human_text(session, ctx, principal, lead_id, body=data.get("body"), confirm=confirm)
    return Response(content=human_text_json(msg), status_code=201, background=send_after_commit(request, [msg]))


@post("/{lead_id:int}/outcome", sync_to_thread=True, status_code=200, summary="Record what became of the lead")
def lead_outcome(request: ApiRequest, principal: Principal, lead_id: int, data: dict[str, Any]) -> dict[str, Any]:
    """`{"outcome": "reached" | "appointment" | "application" | "not_a_fit" | "lost" | "no_response", "note": "..."}`
    -> the lead as GET /api/leads/{id} shows it; 422 for an unknown outcome (the valid ones in the answer)."""
    ctx = request.app.state.ctx
    with session_scope(ctx.engine) as session:
        set_outcome(session, ctx, principal, lead_id, outcome=data.get("outcome"), note=data.get("note"))
        return lead_detail(session, ctx, principal, lead_id)


@post("/{lead_id:int}/call", sync_to_thread=True, status_code=202,
      summary="Click-to-call: ring your phone, then bridge to the borrower from the business number")
def lead_call(request: ApiRequest, principal: Principal, lead_id: int) -> dict[str, Any]:
    """202 with the click-to-call (its status follows Twilio's callbacks); 422 for a bearer token (no phone to
    ring), 502 when Twilio does not place the call."""
    return human_call_json(start_call(request.app.state.ctx, principal, lead_id))


leads_router = Router(
    path="/api/leads",
    route_handlers=[leads_index, lead_show, lead_message, lead_outcome, lead_call],
    dependencies={"principal": Provide(provide_principal)},
    tags=["leads"],
)

ROUTES = [leads_router]
