"""The leads JSON API (/api/leads): thin handlers that parse, call service.leads_view (reads), commit and answer.

Every route needs a principal (service.web.principal: a session cookie, with the CSRF header on unsafe
methods, or a bearer token) and answers 404 for a lead it may not see, exactly as for one that does not exist.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Router, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from sqlmodel import Session

from service.access import Principal
from service.leads_view import lead_detail, list_leads, parse_limit
from service.web.principal import provide_principal

ApiRequest = Request[Any, Any, State]


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


leads_router = Router(
    path="/api/leads",
    route_handlers=[leads_index, lead_show],
    dependencies={"principal": Provide(provide_principal)},
    tags=["leads"],
)

ROUTES = [leads_router]
