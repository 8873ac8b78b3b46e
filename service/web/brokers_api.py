"""The brokers routes: `GET /api/brokers` (the brokers the principal sees, with hours and busy state) and
`POST /api/brokers/{number}/busy` {"until": "15:30" | null} (the console's "with a client until" toggle).

Thin handlers over service.broker_status; the principal comes from service.web.principal (a cookie session
must send the X-CSRF-Token header on the POST).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.di import Provide
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from service.access import Principal
from service.broker_status import broker_summary, list_brokers, set_busy
from service.db import session_scope
from service.web.principal import provide_principal

DEPENDENCIES = {"principal": Provide(provide_principal)}


class BusyRequest(BaseModel):
    """"until": the broker's wall-clock time today ("15:30"), or null to clear."""

    model_config = ConfigDict(extra="forbid")

    until: str | None = Field(description='"HH:MM" today in the broker\'s time zone, or null')


@get("/api/brokers", dependencies=DEPENDENCIES, sync_to_thread=True, tags=["brokers"],
     summary="The brokers you see: hours, open now, with a client until")
def brokers_index(request: Request[Any, Any, Any], principal: Principal) -> dict[str, Any]:
    with Session(request.app.state.ctx.engine) as session:
        return {"brokers": list_brokers(session, principal)}


@post("/api/brokers/{number:str}/busy", dependencies=DEPENDENCIES, sync_to_thread=True, status_code=200,
      tags=["brokers"], summary='Set or clear "with a client until HH:MM"')
def broker_busy(request: Request[Any, Any, Any], principal: Principal, number: str,
                data: BusyRequest) -> dict[str, Any]:
    ctx = request.app.state.ctx
    with session_scope(ctx.engine) as session:
        return broker_summary(set_busy(session, ctx, principal, number, data.until))


ROUTES = [brokers_index, broker_busy]
