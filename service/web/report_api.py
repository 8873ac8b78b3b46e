"""`GET /api/report?since=&until=&broker=`: the sufficiency report (service.report) as JSON, for the brokers the
principal sees (a session or a CRM's bearer token, as for the leads API).

A session opened from an alert link sees one lead, so it gets 403: a report is about every lead. A broker
number one may not see is a 404, as for a lead; a bad date or an empty window a 422 naming the parameter.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.di import Provide
from litestar.params import Parameter

from service.access import Principal
from service.db import read_session
from service.errors import ApiError
from service.report import ReportError, report_for
from service.sufficiency import load_sufficiency
from service.web.principal import provide_principal


def principal_report(request: Request[Any, Any, Any], principal: Principal, *, broker: str | None,
                     since: str | None, until: str | None) -> dict[str, Any]:
    """The report for a principal; the API and the console page share it (and its errors)."""
    if principal.lead_id is not None:
        raise ApiError("this sign-in (from an alert link) sees one lead; sign in with a code to see the report",
                       status_code=403)
    ctx = request.app.state.ctx
    rule = load_sufficiency(ctx.settings.policies_dir)
    with read_session(ctx.engine) as session:
        try:
            return report_for(session, rule=rule, visible=principal.broker_ids, broker=broker, since=since,
                              until=until)
        except ReportError as exc:
            status = 404 if str(exc).startswith("broker:") else 422
            raise ApiError(str(exc), status_code=status) from None


@get("/api/report", dependencies={"principal": Provide(provide_principal)}, sync_to_thread=True, tags=["report"],
     summary="Is text-back enough? The sufficiency report for the brokers you see")
def report_show(
    request: Request[Any, Any, Any], principal: Principal,
    since: str | None = Parameter(default=None, description="YYYY-MM-DD (start of that day, the broker's time "
                                  "zone) or an ISO datetime; default 30 days before until"),
    until: str | None = Parameter(default=None, description="YYYY-MM-DD (that day included) or an ISO datetime; "
                                  "default now"),
    broker: str | None = Parameter(default=None, description="a broker's textback number (E.164); default all"),
) -> dict[str, Any]:
    """The figures and the verdict (see service.report for each key's definition)."""
    return principal_report(request, principal, broker=broker, since=since, until=until)


ROUTES = [report_show]
