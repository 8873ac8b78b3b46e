"""Durable rate limits for sign-in: one AuthAttempt row per counted request, shared by every process.

A key names what is counted ("code:phone:+1...", "code:ip:203.0.113.9", "check:ip:..."); a request over a limit
is refused with 429 and a Retry-After of the seconds until the oldest counted request leaves the window. A
refused request is not counted, so a client that keeps trying is let in again once the window has passed.
Concurrent requests from several processes may overshoot a limit by the number in flight at once: the limit is
a brake on guessing and texting, not an exact quota.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func
from sqlmodel import Session, col, select

from service.errors import ApiError
from service.models import AuthAttempt


@dataclass(frozen=True)
class Limit:
    """At most `limit` requests under `key` per `window`; `what` names it in the refusal."""

    key: str
    limit: int
    what: str


def retry_after(session: Session, limit: Limit, *, window: timedelta, now: datetime) -> int | None:
    """Seconds until `limit` lets one more request in, or None when it does now."""
    since = now - window
    count, oldest = session.exec(
        select(func.count(), func.min(AuthAttempt.at))
        .where(AuthAttempt.key == limit.key, col(AuthAttempt.at) > since)
    ).one()
    if count < limit.limit or oldest is None:
        return None
    return max(1, math.ceil((oldest + window - now).total_seconds()))


def count(session: Session, limits: list[Limit], *, window: timedelta, now: datetime) -> None:
    """Refuse (429, Retry-After) when any of `limits` is reached; otherwise count this request under each."""
    for limit in limits:
        wait = retry_after(session, limit, window=window, now=now)
        if wait is not None:
            raise ApiError(f"too many {limit.what}, try again in {wait} s", status_code=429,
                           details={"retry_after": wait}, headers={"Retry-After": str(wait)})
    for limit in limits:
        session.add(AuthAttempt(key=limit.key, at=now))
    session.flush()


def purge(session: Session, *, window: timedelta, now: datetime) -> int:
    """Forget the requests that no longer count (older than the window)."""
    stmt = delete(AuthAttempt).where(col(AuthAttempt.at) <= now - window).execution_options(synchronize_session=False)
    result = cast("CursorResult[Any]", session.execute(stmt))  # a DELETE's result is a cursor result
    return result.rowcount or 0
