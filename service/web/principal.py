"""Who is asking: a signed-in browser (session cookie) or a CRM (bearer token), resolved per request.

Sessions and tokens are random; only their SHA-256 is stored, so a database copy signs no one in. A session
cookie is HttpOnly and SameSite=Lax (Secure when the public URL is https); every unsafe request made with it
must also carry the session's CSRF token (header `X-CSRF-Token`, or the `csrf_token` field of a form). A bearer
token is not sent by browsers on their own, so it needs none.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

import anyio.to_thread
from litestar import Request
from litestar.datastructures import Cookie
from sqlmodel import Session, select

from service.access import Principal, User, digest, new_token, users_from_brokers
from service.errors import ApiError
from service.models import ApiToken, UserSession, utcnow

SESSION_COOKIE = "textback_session"
CSRF_COOKIE = "textback_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SESSION_DAYS = 30
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def users(ctx: Any) -> dict[str, User]:
    """The console's users, from the brokers as loaded (service.access)."""
    return users_from_brokers(ctx.brokers_by_number.values())


def start_session(session: Session, *, phone: str, lead_id: int | None = None, user_agent: str | None = None,
                  now: datetime | None = None) -> tuple[str, UserSession]:
    """Store a new session for `phone`; returns the cookie value (shown once) and the row."""
    now = now or utcnow()
    token = new_token()
    row = UserSession(token_hash=digest(token), phone=phone, csrf_token=secrets.token_urlsafe(24), lead_id=lead_id,
                      created_at=now, expires_at=now + timedelta(days=SESSION_DAYS),
                      user_agent=(user_agent or "")[:200] or None)
    session.add(row)
    session.flush()
    return token, row


def session_cookies(token: str, csrf: str, *, secure: bool) -> list[Cookie]:
    """The session cookie (HttpOnly) and the CSRF cookie (readable by the page's script, same lifetime)."""
    age = SESSION_DAYS * 86400
    return [
        Cookie(key=SESSION_COOKIE, value=token, httponly=True, samesite="lax", secure=secure, path="/", max_age=age),
        Cookie(key=CSRF_COOKIE, value=csrf, httponly=False, samesite="lax", secure=secure, path="/", max_age=age),
    ]


def cleared_cookies(*, secure: bool) -> list[Cookie]:
    return [Cookie(key=name, value="", httponly=name == SESSION_COOKIE, samesite="lax", secure=secure, path="/",
                   max_age=0) for name in (SESSION_COOKIE, CSRF_COOKIE)]


def resolve(ctx: Any, *, authorization: str | None, cookie: str | None, now: datetime | None = None) -> Principal | None:
    """The principal for a bearer token or a session cookie, or None (unknown, expired, revoked, or a user no
    longer in the brokers file)."""
    now = now or utcnow()
    with Session(ctx.engine) as session:
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                return None
            token = session.exec(select(ApiToken).where(ApiToken.token_hash == digest(value.strip()))).first()
            if token is None or token.revoked_at is not None:
                return None
            broker = next((b for b in ctx.brokers_by_number.values() if b.id == token.broker_id), None)
            if broker is None:
                return None
            token.last_used_at = now
            session.add(token)
            session.commit()
            return Principal(kind="token", name=token.name or f"token {token.id}", broker_ids=frozenset({token.broker_id}),
                             token_id=token.id)
        if not cookie:
            return None
        row = session.exec(select(UserSession).where(UserSession.token_hash == digest(cookie))).first()
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            return None
        user = users(ctx).get(row.phone)
        if user is None:
            return None
        if row.last_seen_at is None or now - row.last_seen_at > timedelta(minutes=5):
            row.last_seen_at = now
            session.add(row)
            session.commit()
        return Principal(kind="session", name=user.name, broker_ids=user.broker_ids, phone=user.phone,
                         lead_id=row.lead_id, session_id=row.id, csrf_token=row.csrf_token, admin=user.admin)


async def csrf_ok(request: Request[Any, Any, Any], principal: Principal) -> bool:
    """A cookie-signed unsafe request carries the session's CSRF token (header, or a form's csrf_token field)."""
    if principal.kind != "session" or request.method in SAFE_METHODS:
        return True
    sent = request.headers.get(CSRF_HEADER)
    if not sent and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    return bool(sent) and principal.csrf_token is not None and hmac.compare_digest(sent or "", principal.csrf_token)


async def current_principal(request: Request[Any, Any, Any], *, required: bool = True) -> Principal | None:
    """The request's principal (401 when `required` and there is none; 403 when CSRF fails)."""
    ctx = request.app.state.ctx
    authorization = request.headers.get("authorization")
    cookie = request.cookies.get(SESSION_COOKIE)
    principal = await anyio.to_thread.run_sync(
        lambda: resolve(ctx, authorization=authorization, cookie=cookie))
    if principal is None:
        if required:
            raise ApiError("sign in first (session cookie or bearer token)", status_code=401)
        return None
    if not await csrf_ok(request, principal):
        raise ApiError("missing or wrong CSRF token (send the X-CSRF-Token header)", status_code=403)
    return principal


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """Litestar dependency: the signed-in principal of an API route."""
    principal = await current_principal(request)
    if principal is None:  # current_principal raises when required; this keeps the type honest
        raise ApiError("sign in first (session cookie or bearer token)", status_code=401)
    return principal
