"""The CRM webhook deliveries API: `GET /api/webhooks/deliveries?status=&cursor=&limit=` (newest first, the
principal's brokers only, no bodies) and `POST /api/webhooks/deliveries/{id}/retry` (a failed one back in the
queue; a cookie session sends the X-CSRF-Token header). Thin handlers over service.crm_deliveries.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Router, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from sqlmodel import Session

from service import crm_deliveries
from service.access import Principal
from service.db import session_scope
from service.leads_view import parse_limit
from service.phones import mask
from service.web.principal import provide_principal

ApiRequest = Request[Any, Any, State]


@get("/", sync_to_thread=True, summary="CRM webhook deliveries of your brokers, newest first")
def deliveries_index(
    request: ApiRequest, principal: Principal,
    status: str | None = Parameter(default=None, description="pending, sending, delivered or failed"),
    cursor: str | None = Parameter(default=None, description="next_cursor of the previous page"),
    limit: str | None = Parameter(default=None, description="1 to 200 (default 50)"),
) -> dict[str, Any]:
    """`{"deliveries": [...], "next_cursor": ...}`; 400 naming the parameter for a bad status, cursor or limit."""
    with Session(request.app.state.ctx.engine) as session:
        items, next_cursor = crm_deliveries.list_deliveries(session, principal=principal, status=status,
                                                            cursor=cursor, limit=parse_limit(limit))
    return {"deliveries": items, "next_cursor": next_cursor}


@post("/{delivery_id:int}/retry", sync_to_thread=True, status_code=200,
      summary="Put a failed CRM webhook delivery back in the queue")
def delivery_retry(request: ApiRequest, principal: Principal, delivery_id: int) -> dict[str, Any]:
    """The delivery, pending again; 404 if you may not see it, 409 unless it failed or if its webhook is gone."""
    engine = request.app.state.ctx.engine
    actor = mask(principal.phone) if principal.phone else principal.actor
    with session_scope(engine) as session:
        item = crm_deliveries.retry(session, delivery_id, principal=principal, actor=actor)
    crm_deliveries.wake(engine)
    return item


webhooks_router = Router(
    path="/api/webhooks/deliveries",
    route_handlers=[deliveries_index, delivery_retry],
    dependencies={"principal": Provide(provide_principal)},
    tags=["webhooks"],
)

ROUTES = [webhooks_router]
