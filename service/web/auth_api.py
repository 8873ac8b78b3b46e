"""The sign-in API (/api/auth): ask for a code, trade it for a session, see who is signed in, sign out.

Thin handlers over service.signin. CSRF: the two sign-in routes come before any session, so no session's CSRF
token can protect them. They take `application/json` only (415 otherwise): a cross-site HTML form can send
only urlencoded, multipart or text/plain bodies, and a cross-site script that sets `Content-Type:
application/json` must first pass a CORS preflight, which this service never grants (no CORS is configured).
So a hostile page can neither sign a visitor in as someone else (login CSRF) nor spend their codes. Logout, a
cookie-signed unsafe request, needs the session's CSRF token like every other (service.web.principal).

The client address of the per-address limits is the connection's (X-Forwarded-For's when uvicorn trusts the
proxy it came through: 127.0.0.1 by default; another proxy with FORWARDED_ALLOW_IPS or uvicorn's
`--proxy-headers --forwarded-allow-ips=<the proxy's address>`), or all users share the proxy's limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.background_tasks import BackgroundTask
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.handlers import BaseRouteHandler

from service.access import Principal
from service.db import session_scope
from service.errors import ApiError
from service.signin import (
    CODE_MINUTES,
    end_session,
    parse_code,
    parse_phone,
    request_code,
    sign_in,
    user_json,
)
from service.web.principal import cleared_cookies, provide_principal, session_cookies, users

ApiRequest = Request[Any, Any, State]
JSON = "application/json"
CODE_ANSWER = {
    "status": "accepted",
    "message": f"If this phone may sign in, a code is on its way by text. It expires in {CODE_MINUTES} minutes.",
    "expires_in": CODE_MINUTES * 60,
}


@dataclass
class CodeRequest:
    """Ask for a sign-in code."""

    phone: str  # E.164, like +14155550123 (a US number may be written nationally)


@dataclass
class SessionRequest:
    """Trade a texted code for a session."""

    phone: str
    code: str  # the 6 digits as texted


def json_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """415 unless the body is declared JSON (the CSRF defence of the routes that come before a session)."""
    media = connection.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != JSON:
        raise ApiError("send a JSON body with Content-Type: application/json", status_code=415)


def client_address(request: ApiRequest) -> str:
    return request.client.host if request.client and request.client.host else "unknown"


@post("/code", guards=[json_only], status_code=202, sync_to_thread=True, summary="Text a sign-in code")
def ask_code(request: ApiRequest, data: CodeRequest) -> Response[Any]:
    """202 with the same answer whatever the phone (no account enumeration); only a user's phone gets a text.
    422 for a phone that is not a phone number, 429 (Retry-After) over the limits per phone or per address."""
    ctx = request.app.state.ctx
    ids = request_code(ctx, phone=parse_phone(data.phone), address=client_address(request))
    background = BackgroundTask(request.app.state.worker.after_webhook, ids, []) if ids else None
    return Response(content=CODE_ANSWER, status_code=202, background=background)


@post("/session", guards=[json_only], status_code=200, sync_to_thread=True, summary="Sign in with the texted code")
def open_session(request: ApiRequest, data: SessionRequest) -> Response[Any]:
    """Sets the session cookie (HttpOnly) and the CSRF cookie, and answers the user and the CSRF token.
    401 for a wrong, expired, used or exhausted code; 429 (Retry-After) over the limit per address."""
    ctx = request.app.state.ctx
    signed = sign_in(ctx, phone=parse_phone(data.phone), code=parse_code(data.code),
                     address=client_address(request), user_agent=request.headers.get("user-agent"))
    return Response(content={"user": user_json(ctx, signed.user), "csrf_token": signed.csrf_token},
                    cookies=session_cookies(signed.token, signed.csrf_token, secure=ctx.settings.secure_cookies))


@post("/logout", status_code=204, sync_to_thread=True, summary="Sign out (revokes the session)",
      dependencies={"principal": Provide(provide_principal)})
def logout(request: ApiRequest, principal: Principal) -> Response[None]:
    """Revokes the session server-side and clears its cookies; needs the CSRF token like any form post."""
    ctx = request.app.state.ctx
    if principal.session_id is None:
        raise ApiError("a bearer token does not sign out: revoke it with `textback tokens revoke`", status_code=400)
    with session_scope(ctx.engine) as session:
        end_session(session, principal.session_id)
    return Response(content=None, status_code=204, cookies=cleared_cookies(secure=ctx.settings.secure_cookies))


@get("/me", sync_to_thread=True, summary="Who is signed in", dependencies={"principal": Provide(provide_principal)})
def me(request: ApiRequest, principal: Principal) -> dict[str, Any]:
    """A session: the user, the lead an alert link limits it to (or null) and the CSRF token. A bearer token:
    its id, name and broker. 401 when neither."""
    ctx = request.app.state.ctx
    if principal.kind == "token":
        numbers = sorted(b.twilio_number for b in ctx.brokers_by_number.values() if b.id in principal.broker_ids)
        return {"kind": "token", "token": {"id": principal.token_id, "name": principal.name, "brokers": numbers}}
    user = users(ctx).get(principal.phone or "")
    if user is None:  # resolve() already refuses a session whose phone left the brokers file
        raise ApiError("sign in first (session cookie or bearer token)", status_code=401)
    return {"kind": "session", "user": user_json(ctx, user), "lead_id": principal.lead_id,
            "csrf_token": principal.csrf_token}


auth_router = Router(path="/api/auth", route_handlers=[ask_code, open_session, logout, me], tags=["auth"])

ROUTES = [auth_router]
