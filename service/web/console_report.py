"""The console's report page (/console/report): the sufficiency report for the brokers the user sees, with a
form for the period and the broker, the charts inline, and the one-file HTML report to forward.

Thin handlers over service.web.report_api.principal_report (the API's own rules and errors: a session opened
from an alert link gets the 403 page, a bad date the page again with the error named) and
service.report_render. The charts carry their own <style>: the page's CSP lists their hashes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import anyio.to_thread
from litestar import Response, get
from litestar.response import Template

from service.errors import ApiError
from service.report_render import render_html, report_context, style_sources
from service.web.pages import ConsoleRequest, page, query_string, signed_in, with_styles
from service.web.report_api import principal_report


def _params(request: ConsoleRequest) -> dict[str, str | None]:
    return {name: (request.query_params.get(name) or "").strip() or None for name in ("since", "until", "broker")}


@get("/report", name="console_report")
async def report_page(request: ConsoleRequest) -> Template:
    """Is text-back enough? The figures, the verdict and the charts for the chosen period (default 30 days)."""
    principal = await signed_in(request)
    params = _params(request)
    try:
        report = await anyio.to_thread.run_sync(lambda: principal_report(request, principal, **params))
    except ApiError as exc:
        if exc.status_code != 422:
            raise
        return page("report.html", {"report": None, "params": params, "error": str(exc), "download": ""},
                    principal=principal, status_code=422)
    context = report_context(report)
    download = "/console/report/download" + query_string(**params)
    return page("report.html", {"report": report, **context, "params": params, "error": "", "download": download},
                principal=principal, headers=with_styles(context["style_sources"]))


@get("/report/download", name="console_report_download")
async def report_download(request: ConsoleRequest) -> Response[Any]:
    """The same report as one self-contained HTML file (CSS and charts inline, nothing fetched) to forward."""
    principal = await signed_in(request)
    params = _params(request)
    report = await anyio.to_thread.run_sync(lambda: principal_report(request, principal, **params))
    html = render_html(report, standalone=True)
    name = f"textback-report-{report['since'][:10]}-to-{report['until'][:10]}.html"
    headers = {**with_styles(style_sources(html)),
               "Content-Disposition": f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(name)}"}
    return Response(content=html, media_type="text/html", headers=headers)


ROUTES = [report_page, report_download]
