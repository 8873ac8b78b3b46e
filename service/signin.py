"""Sign-in by a one-time code texted to the user's phone, and the sessions it opens and ends.

`request_code` answers the same whatever the phone (no account enumeration): it counts the request against the
rate limits, stores a code for the phone (any phone: a phone that is no user gets a code nobody is ever told,
so the stored rows, the work done and every later answer are the same) and, only for a user, queues the text
from their home broker's number (template `sign_in_code`, sent by the worker after commit). A code is 6 random
digits, valid CODE_MINUTES, checked at most CODE_ATTEMPTS times, used once; a newer code ends the older ones.
Only an HMAC-SHA256 of the code is stored (salted per code and keyed with the Twilio auth token when there is
one, so a copy of the database alone does not give a live code away); the text that carried it forgets it
once sent (service.one_time).

`sign_in` checks a code in constant time and opens a session (service.web.principal.start_session).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, delete, update
from sqlmodel import Session, col, select

from service import rate_limits
from service.access import User
from service.alerts import alert_sender_for, pending_ids
from service.db import session_scope
from service.errors import ApiError
from service.models import LoginCode, Purpose, UserSession, utcnow
from service.outbox import queue_text
from service.phones import InvalidPhone, to_e164
from service.rate_limits import Limit
from service.web.principal import start_session, users

if TYPE_CHECKING:
    from service.context import AppContext

CODE_MINUTES = 10
CODE_ATTEMPTS = 5
CODE_DIGITS = 6
TEMPLATE = "sign_in_code"
KEEP_DEAD_CODES = timedelta(days=1)  # used or expired codes are deleted after this


@dataclass(frozen=True)
class SignedIn:
    """A new session: the cookie value (shown once), its CSRF token, and who it is."""

    user: User
    token: str
    csrf_token: str


def parse_phone(value: str) -> str:
    """The phone of a sign-in request in E.164 (a US number may be written nationally); 422 naming `phone`."""
    try:
        return to_e164(value)
    except InvalidPhone as exc:
        message = f"phone: not a phone number ({exc}); write it like +14155550123"
        raise ApiError(message, status_code=422, details=[{"key": "phone", "message": str(exc)}]) from None


def parse_code(value: str) -> str:
    """The code as typed (spaces and dashes ignored); 422 naming `code` unless it is 6 digits."""
    code = "".join(value.split()).replace("-", "")
    if len(code) != CODE_DIGITS or not code.isascii() or not code.isdigit():
        message = f"code: {CODE_DIGITS} digits, as texted"
        raise ApiError(message, status_code=422, details=[{"key": "code", "message": message}])
    return code


def user_json(ctx: AppContext, user: User) -> dict[str, Any]:
    """A user as the API shows them: phone, name, role and the Twilio numbers of the brokers they see."""
    numbers = sorted(b.twilio_number for b in ctx.brokers_by_number.values() if b.id in user.broker_ids)
    return {"phone": user.phone, "name": user.name, "role": user.role, "brokers": numbers}


def _hash(ctx: AppContext, phone: str, code: str, salt: str) -> str:
    key = (ctx.settings.twilio_auth_token or "").encode() + salt.encode()
    return f"{salt}${hmac.new(key, f'{phone}:{code}'.encode(), hashlib.sha256).hexdigest()}"


def _window(ctx: AppContext) -> timedelta:
    return timedelta(minutes=ctx.settings.signin_window_minutes)


def request_code(ctx: AppContext, *, phone: str, address: str, now: datetime | None = None) -> list[int]:
    """Store a new code for `phone` and text it when the phone is a user's; returns the ids of texts to send
    now. 429 (nothing stored) over the limits per phone or per client address."""
    now = now or utcnow()
    settings = ctx.settings
    with session_scope(ctx.engine) as session:
        rate_limits.count(session, [
            Limit(f"code:phone:{phone}", settings.signin_codes_per_phone, "sign-in codes for this phone"),
            Limit(f"code:ip:{address}", settings.signin_codes_per_address, "sign-in codes from this address"),
        ], window=_window(ctx), now=now)
        session.exec(update(LoginCode)
                     .where(col(LoginCode.phone) == phone, col(LoginCode.used_at).is_(None),
                            col(LoginCode.expires_at) > now)
                     .values(expires_at=now))
        code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
        session.add(LoginCode(phone=phone, code_hash=_hash(ctx, phone, code, secrets.token_hex(8)), created_at=now,
                              expires_at=now + timedelta(minutes=CODE_MINUTES)))
        user = users(ctx).get(phone)
        ids = _text_code(session, ctx, user, code) if user is not None else []
        _purge(session, ctx, now)
    return ids


def _text_code(session: Session, ctx: AppContext, user: User, code: str) -> list[int]:
    """The code, texted from the user's home broker's number (the alerts sender if that one cannot send)."""
    broker = next((b for b in ctx.brokers_by_number.values() if b.id == user.home_broker_id), None)
    if broker is None:
        return []
    queued = queue_text(session, ctx, broker=broker, to=user.phone, template_id=TEMPLATE, purpose=Purpose.sign_in,
                        values={"code": code}, from_phone=alert_sender_for(session, ctx, broker))
    return pending_ids([queued.msg] if queued is not None else [])


def _purge(session: Session, ctx: AppContext, now: datetime) -> None:
    """Forget rate-limit rows past their window and codes dead for a day."""
    rate_limits.purge(session, window=_window(ctx), now=now)
    session.execute(delete(LoginCode).where(col(LoginCode.expires_at) < now - KEEP_DEAD_CODES)
                    .execution_options(synchronize_session=False))


def _refuse(message: str, **details: object) -> ApiError:
    return ApiError(message, status_code=401, details=details or None)


def sign_in(ctx: AppContext, *, phone: str, code: str, address: str, user_agent: str | None = None,
            now: datetime | None = None) -> SignedIn:
    """Check `code` for `phone` and open a session. 401 for a wrong, expired, used or exhausted code (each
    check of the newest code counts, even a right one past the limit), 429 over the limit per address."""
    now = now or utcnow()
    with Session(ctx.engine, expire_on_commit=False) as session:
        try:
            rate_limits.count(session, [Limit(f"check:ip:{address}", ctx.settings.signin_checks_per_address,
                                              "sign-in attempts from this address")], window=_window(ctx), now=now)
        except ApiError:
            session.rollback()
            raise
        session.commit()  # the attempt counts, whatever follows
        row = session.exec(select(LoginCode).where(LoginCode.phone == phone)
                           .order_by(col(LoginCode.id).desc()).limit(1)).first()
        if row is None or row.id is None:
            raise _refuse("wrong code")
        if row.used_at is not None:
            raise _refuse("code already used, request a new one")
        if row.attempts >= CODE_ATTEMPTS:
            raise _refuse("too many attempts, request a new code")
        if row.expires_at <= now:
            raise _refuse("code expired, request a new one")
        checked = row.attempts + 1  # this check's number
        if not _take(session, _counted_attempt(row.id)):
            raise _refuse("too many attempts, request a new code")
        salt = row.code_hash.partition("$")[0]
        if not hmac.compare_digest(_hash(ctx, phone, code, salt), row.code_hash):
            raise _refuse("wrong code", attempts_left=max(CODE_ATTEMPTS - checked, 0))
        if not _take(session, update(LoginCode).where(col(LoginCode.id) == row.id, col(LoginCode.used_at).is_(None))
                     .values(used_at=now)):
            raise _refuse("code already used, request a new one")
        user = users(ctx).get(phone)
        if user is None:  # no user's phone ever got this code; or the brokers file changed since it was sent
            raise _refuse("wrong code")
        token, stored = start_session(session, phone=phone, user_agent=user_agent, now=now)
        session.commit()
        return SignedIn(user=user, token=token, csrf_token=stored.csrf_token)


def _counted_attempt(code_id: int) -> Any:
    return (update(LoginCode)
            .where(col(LoginCode.id) == code_id, col(LoginCode.used_at).is_(None),
                   col(LoginCode.attempts) < CODE_ATTEMPTS)
            .values(attempts=LoginCode.attempts + 1))


def _take(session: Session, statement: Any) -> bool:
    """Run a guarded UPDATE and commit it; True when it changed the row (the guard held)."""
    result = cast("CursorResult[Any]", session.execute(statement))  # an UPDATE's result is a cursor result
    session.commit()
    return result.rowcount == 1


def end_session(session: Session, session_id: int, *, now: datetime | None = None) -> None:
    """Revoke one session (logout): its cookie signs no one in any more."""
    row = session.get(UserSession, session_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = now or utcnow()
        session.add(row)


def revoke_sessions(session: Session, phone: str, *, now: datetime | None = None) -> int:
    """Revoke every live session of `phone` (a lost phone, a person who left); returns how many."""
    rows = session.exec(select(UserSession).where(UserSession.phone == phone,
                                                  col(UserSession.revoked_at).is_(None))).all()
    for row in rows:
        row.revoked_at = now or utcnow()
        session.add(row)
    return len(rows)
