"""What every console page shares: the templates (Jinja2, service/web/templates) and the static files
(service/web/static, at /console/static), who is signed in, a page or a live fragment as a response, the
security headers, and the console's own answers to "sign in first" and to refusals.

Not signed in: a page redirects to /console/login?next=<the page>; a live fragment answers 401. A refusal
(ApiError) is a page with its status: a lead the user may not see, or none, is the same 404 page.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from litestar import Request, Response, Router
from litestar.datastructures import State
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from service.access import Principal
from service.errors import ApiError
from service.web.principal import current_principal

HERE = Path(__file__).resolve().parent
TEMPLATES = TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine)
STATIC = create_static_files_router(path="/console/static", directories=[HERE / "static"], name="console_static",
                                    include_in_schema=False)

ConsoleRequest = Request[Any, Any, State]

# Pages hold borrowers' words: never cached, never framed, no script or style from anywhere else.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "media-src 'self' https:; connect-src 'self'; frame-ancestors 'none'; "
                                "form-action 'self'; base-uri 'none'"),
}


class SignInRequired(Exception):
    """The page needs a signed-in user; the router answers with a redirect to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def safe_next(value: str | None) -> str:
    """Where to go after sign-in: a console path of this site only (never another host)."""
    if not value or not value.startswith("/console") or value.startswith("//") or "\\" in value:
        return "/console"
    return value


def here(request: ConsoleRequest) -> str:
    """The request's path and query, as the `next` of a sign-in or the `back` of a form."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


async def signed_in(request: ConsoleRequest) -> Principal:
    """The signed-in user of a page (a browser session; a CRM token has no console), or a redirect to sign in.
    An unsafe request must carry the session's CSRF token (403 otherwise, from current_principal)."""
    principal = await current_principal(request, required=False)
    if principal is None or principal.kind != "session":
        raise SignInRequired(here(request) if request.method == "GET" else "/console")
    return principal


def page(template: str, context: dict[str, Any], *, principal: Principal | None = None,
         status_code: int = 200, headers: dict[str, str] | None = None) -> Template:
    """A full page: the template with the user and their CSRF token (every form carries it)."""
    values = {"user": principal, "csrf": principal.csrf_token if principal else "", **context}
    return Template(template_name=template, context=values, status_code=status_code,
                    headers=headers or SECURITY_HEADERS)


def with_styles(sources: list[str]) -> dict[str, str]:
    """The security headers with these inline <style> hashes allowed (a report's SVG charts carry their own)."""
    policy = SECURITY_HEADERS["Content-Security-Policy"].replace(
        "style-src 'self'", " ".join(["style-src 'self'", *sources]))
    return {**SECURITY_HEADERS, "Content-Security-Policy": policy}


def render(request: ConsoleRequest, template: str, context: dict[str, Any]) -> str:
    """A template rendered to a string (a live fragment, or an error page outside a handler)."""
    engine = request.app.template_engine
    if engine is None:  # create_app always configures the templates (service.app)
        msg = "the console needs the app's template config"
        raise RuntimeError(msg)
    return str(engine.get_template(template).render(**context))


def fragment(request: ConsoleRequest, html: str) -> Response[Any]:
    """A live fragment, answered 304 when it did not change since the script last saw it."""
    etag = '"' + hashlib.sha256(html.encode()).hexdigest()[:32] + '"'
    headers = {**SECURITY_HEADERS, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(content=b"", status_code=304, headers=headers)
    return Response(content=html, media_type="text/html", headers=headers)


def query_string(**values: str | None) -> str:
    kept = {k: v for k, v in values.items() if v}
    return f"?{urlencode(kept)}" if kept else ""


def to_sign_in(request: ConsoleRequest, exc: SignInRequired) -> Response[Any]:
    """Not signed in: a page goes to the sign-in page and comes back; a live fragment answers 401."""
    if request.url.path.endswith("/live"):
        return Response(content="sign in first", status_code=401, media_type="text/plain", headers=SECURITY_HEADERS)
    return Redirect(path=f"/console/login?next={quote(exc.next_path, safe='/')}", status_code=303)


ERROR_PAGES = {
    404: ("Lead not found", "There is no such lead, or it belongs to a broker you do not work with."),
    403: ("Please try again", "This page was open too long or you signed in elsewhere: reload it and try again."),
    429: ("Slow down", "Too many requests in a short time. Wait a minute, then try again."),
}


def error_page(request: ConsoleRequest, exc: ApiError) -> Response[Any]:
    """A refusal on a console page, as a page (the API's refusals stay JSON)."""
    if exc.status_code == 401:
        return to_sign_in(request, SignInRequired(here(request)))
    heading, message = ERROR_PAGES.get(exc.status_code, ("Something went wrong", str(exc)))
    if exc.status_code == 404 and not request.url.path.startswith(("/console/leads/", "/console/brokers/")):
        heading, message = "Page not found", "There is no such page in the console."
    html = render(request, "error.html", {"heading": heading, "message": message, "user": None})
    return Response(content=html, status_code=exc.status_code, media_type="text/html", headers=SECURITY_HEADERS)


def console_router(route_handlers: list[Any]) -> Router:
    """/console: the pages and actions, with their own answers to 'sign in first' and to refusals."""
    return Router(path="/console", route_handlers=route_handlers, include_in_schema=False,
                  exception_handlers={SignInRequired: to_sign_in, ApiError: error_page})
