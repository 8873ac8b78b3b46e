"""Webhooks through a database outage: spool what cannot be stored, answer from memory, replay it later.

When a webhook's transaction fails because the database is unreachable, the app spools the verified form
(`service.spool`) and answers with the TwiML it can give without the database (`webhooks.offline_answer`: the
caller still rings through to the broker). The worker replays the spool in arrival order through the same
handlers as soon as the database answers; every handler is idempotent on CallSid / MessageSid, so a record
replayed twice (or one Twilio also retried) changes nothing. A missed call replayed later than
`replay_opener_max_age_seconds` alerts the broker instead of texting the caller (`calls.start_opener`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from service.calls import replayed_at
from service.db import ping, session_scope
from service.errors import GuardNotReady, WebhookError
from service.logs import log, request_id
from service.spool import SpooledWebhook, SpoolError
from service.twilio.webhooks import WEBHOOKS, Handler, offline_answer

if TYPE_CHECKING:
    from service.context import AppContext

logger = logging.getLogger("textback.replay")


def database_unavailable(exc: BaseException) -> bool:
    """The database could not be reached or used at all (as opposed to a bug or a constraint): nothing was
    committed, and the same work will succeed once it is back."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def spool_webhook(ctx: AppContext, path: str, form: Mapping[str, str], *, rid: str | None) -> str:
    """Spool a verified webhook the database could not take; return the TwiML to answer with.

    The form is checked as its handler would check it first (a bad request still gets its 4xx and is not
    spooled). Raises SpoolError when the spool cannot be written (the caller answers 503, as before)."""
    answer = offline_answer(ctx, path, form)
    if ctx.spool is None:
        raise SpoolError("no spool configured")
    ctx.spool.append(path, form, request_id=rid)
    log(logger, logging.WARNING, "database unavailable; webhook spooled", path=path)
    return answer


@dataclass
class ReplayResult:
    """What one replay pass did."""

    replayed: int = 0
    refused: int = 0
    dead: int = 0
    left: int = 0
    seconds: float = 0.0
    send_ids: list[int] = field(default_factory=list)
    inbound_ids: list[int] = field(default_factory=list)


class _GuardNotReady(Exception):
    """A replay that needed a verdict while the guard is not ready: the rest stays spooled."""


class _DatabaseGone(Exception):
    pass


def replay_spool(ctx: AppContext) -> ReplayResult:
    """Replay every spooled webhook this process can claim, oldest first, if the database answers."""
    result = ReplayResult()
    spool = ctx.spool
    if spool is None or not spool.has_files() or not ping(ctx.engine):
        return result
    started = time.perf_counter()
    claims = spool.claim()
    records = sorted(
        ((record.received_at, i, j, record)
         for i, claim in enumerate(claims) for j, record in enumerate(claim.records)),
        key=lambda item: item[:3],
    )
    try:
        for done, (_, _, _, record) in enumerate(records):
            try:
                _replay_one(ctx, WEBHOOKS, record, result)
            except (_DatabaseGone, _GuardNotReady):
                result.left = len(records) - done
                raise
    except (_DatabaseGone, _GuardNotReady) as paused:
        for claim in claims:
            claim.release()
        result.seconds = time.perf_counter() - started
        why = "database unavailable again" if isinstance(paused, _DatabaseGone) else "the output guard is not ready"
        log(logger, logging.WARNING, f"spool replay paused: {why}", replayed=result.replayed, left=result.left)
        return result
    for claim in claims:
        claim.done()
    result.seconds = time.perf_counter() - started
    if records:
        log(logger, logging.INFO, "spool replayed", replayed=result.replayed, refused=result.refused,
            dead=result.dead, files=len(claims), seconds=round(result.seconds, 3))
    return result


def _replay_one(ctx: AppContext, handlers: Mapping[str, Handler], record: SpooledWebhook, result: ReplayResult) -> None:
    handler = handlers.get(record.path)
    assert ctx.spool is not None  # noqa: S101 - replay_spool checked
    if handler is None:
        result.dead += 1
        ctx.spool.dead_letter(record, "no handler for this path")
        log(logger, logging.ERROR, "spooled webhook for an unknown path kept aside", path=record.path,
            origin=record.origin)
        return
    rid = request_id.set(record.request_id)
    age = replayed_at.set(record.received_at)
    try:
        with session_scope(ctx.engine) as session:
            outcome = handler(session, ctx, record.form)
    except GuardNotReady as exc:  # no verdict (a restart whose guard failed): kept for the next replay
        raise _GuardNotReady from exc
    except WebhookError as exc:
        # Refused as Twilio's own delivery would have been (e.g. a broker removed since): nothing to store.
        result.refused += 1
        log(logger, logging.WARNING, "spooled webhook refused", path=record.path, status=exc.status_code,
            reason=str(exc), origin=record.origin)
        return
    except Exception as exc:
        if database_unavailable(exc):
            raise _DatabaseGone from exc
        result.dead += 1
        ctx.spool.dead_letter(record, type(exc).__name__)
        log(logger, logging.ERROR, "spooled webhook failed; kept aside", path=record.path,
            exc_type=type(exc).__name__, origin=record.origin)
        return
    finally:
        replayed_at.reset(age)
        request_id.reset(rid)
    result.replayed += 1
    result.send_ids += outcome.send_ids
    result.inbound_ids += outcome.inbound_ids
