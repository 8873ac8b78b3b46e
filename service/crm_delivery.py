"""Send queued CRM webhooks: claim -> sign -> POST (no transaction open) -> delivered, retried, or failed.

A due row (pending and next_attempt_at reached, or `sending` with a claim older than `stale_after`: its
process died mid-attempt) is claimed with one compare-and-set UPDATE that counts the attempt, and the claim
commits before the request; the attempt number is the claim's token, so a result is written only while the
claim is still ours. Each attempt is signed afresh with the secret the brokers file gives that URL now.

What an answer means (`verdict`): 2xx delivered; 5xx, 408, 429, a timeout or a connection error retried after
RETRY_SCHEDULE (jittered; a 429's or 503's Retry-After is honoured, capped) until crm_webhook_max_attempts;
any other answer (3xx: redirects are not followed; 4xx; 410 Gone) failed at once. A failure is logged at
warning with the delivery id, the URL's host and the status, never the body (it holds borrower data).

Deliveries run in a thread of their own (DeliveryLoop), woken after every commit that queued one and on every
sweep of the worker, so a slow CRM never holds up a Twilio webhook or a text.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import httpx
from sqlalchemy import and_, or_, update
from sqlmodel import Session, col, select

from service import crm_webhooks
from service.crm_webhooks import DeliveryStatus
from service.db import session_scope
from service.logs import log
from service.models import Broker, WebhookDelivery, utcnow

if TYPE_CHECKING:
    from service.context import AppContext
    from service.settings import Settings

logger = logging.getLogger("textback.crm_webhooks")

# Seconds before the 2nd, 3rd... attempt (the last step repeats); each is jittered by +-20%.
RETRY_SCHEDULE = (30, 120, 600, 3600, 6 * 3600)
JITTER = 0.2
RETRIED_STATUSES = frozenset({408, 429})
REMOVED = "webhook removed from brokers file"
UNSUBSCRIBED = "event no longer subscribed in brokers file"
BATCH = 50

Verdict = Literal["delivered", "retry", "failed"]


def verdict(response_status: int | None) -> Verdict:
    """What an attempt's answer means; None is a timeout or a connection error."""
    if response_status is None or response_status >= 500 or response_status in RETRIED_STATUSES:
        return "retry"
    if 200 <= response_status < 300:
        return "delivered"
    return "failed"


def retry_delay(attempts: int) -> timedelta:
    """How long after failed attempt number `attempts` (1-based) the next one waits: the schedule, jittered."""
    step = RETRY_SCHEDULE[min(max(attempts, 1), len(RETRY_SCHEDULE)) - 1]
    return timedelta(seconds=step * random.uniform(1 - JITTER, 1 + JITTER))  # noqa: S311 - jitter, not crypto


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), or None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def user_agent() -> str:
    try:
        return f"textback/{version('textback')}"
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "textback/dev"


@dataclass(frozen=True)
class Attempt:
    """The outcome of one attempt, before it is recorded."""

    verdict: Verdict
    response_status: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds, from the answer's Retry-After header


# ---------------------------------------------------------------------------------------------------------
# Claim, send, record


def _due(now: datetime, stale_before: datetime) -> Any:
    return or_(
        and_(col(WebhookDelivery.status) == DeliveryStatus.pending, col(WebhookDelivery.next_attempt_at) <= now),
        and_(col(WebhookDelivery.status) == DeliveryStatus.sending, col(WebhookDelivery.claimed_at) < stale_before),
    )


def stale_after(settings: Settings) -> timedelta:
    """How old a claim must be to be taken over: stale_claim_seconds, but never less than an attempt can last
    (connect, write and read each get the timeout), so a slow live attempt is not sent twice."""
    return timedelta(seconds=max(settings.stale_claim_seconds, 3 * settings.crm_webhook_timeout_seconds + 5))


def due_ids(ctx: AppContext, *, now: datetime | None = None, limit: int = BATCH) -> list[int]:
    """Ids of deliveries due now (stale claims included), oldest due first."""
    now = now or utcnow()
    stale_before = now - stale_after(ctx.settings)
    with Session(ctx.engine) as session:
        rows = session.exec(
            select(WebhookDelivery.id).where(_due(now, stale_before))
            .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.id)).limit(limit)
        ).all()
    return [r for r in rows if r is not None]


def _claim(ctx: AppContext, delivery_id: int, now: datetime) -> int | None:
    """Move a due row to `sending` (counting the attempt); the claim's token (the attempt number), or None."""
    stale_before = now - stale_after(ctx.settings)
    with session_scope(ctx.engine) as session:
        claimed = session.exec(
            update(WebhookDelivery)
            .where(col(WebhookDelivery.id) == delivery_id, _due(now, stale_before))
            .values(status=DeliveryStatus.sending, claimed_at=now, attempts=WebhookDelivery.attempts + 1)
        )
        if claimed.rowcount != 1:
            return None
        return session.exec(select(WebhookDelivery.attempts).where(col(WebhookDelivery.id) == delivery_id)).one()


def current_secret(broker: Broker | None, url: str, event: str) -> str:
    """The secret the brokers file gives `url` now; raises LookupError with the reason it cannot be sent."""
    hooks = [h for h in (broker.webhooks or []) if h.get("url") == url] if broker and broker.active else []
    if not hooks:
        raise LookupError(REMOVED)
    for hook in hooks:
        if event in hook.get("events", []):
            return str(hook["secret"])
    raise LookupError(UNSUBSCRIBED)


def _post(client: httpx.Client, row: WebhookDelivery, secret: str) -> Attempt:
    """One signed request; the answer's body is never read (only its status and Retry-After)."""
    headers = crm_webhooks.signed_headers(secret=secret, event=row.event, delivery_id=row.delivery_id,
                                          body=row.body, timestamp=int(time.time()), user_agent=user_agent())
    try:
        with client.stream("POST", row.url, content=row.body.encode(), headers=headers) as response:
            status = response.status_code
            retry_after = parse_retry_after(response.headers.get("retry-after"), utcnow())
    except httpx.TimeoutException as exc:
        return Attempt("retry", error=f"timeout ({type(exc).__name__})")
    except httpx.TransportError as exc:
        return Attempt("retry", error=f"connection error ({type(exc).__name__})")
    except Exception as exc:  # an invalid URL or a bug: recorded like a failure that may pass, never lost
        return Attempt("retry", error=f"unexpected {type(exc).__name__}")
    kind = verdict(status)
    reason = httpx.codes.get_reason_phrase(status)
    error = None if kind == "delivered" else f"HTTP {status} {reason}".strip()
    if 300 <= status < 400:
        error = f"{error}: redirects are not followed (point the webhook at the final URL)"
    return Attempt(kind, response_status=status, error=error, retry_after=retry_after)


def _result_values(ctx: AppContext, attempts: int, attempt: Attempt, now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {"response_status": attempt.response_status, "claimed_at": None}
    if attempt.verdict == "delivered":
        return {**values, "status": DeliveryStatus.delivered, "delivered_at": now, "last_error": None}
    if attempt.verdict == "failed":
        return {**values, "status": DeliveryStatus.failed, "last_error": attempt.error}
    if attempts >= ctx.settings.crm_webhook_max_attempts:
        return {**values, "status": DeliveryStatus.failed,
                "last_error": f"{attempt.error}; gave up after {attempts} attempts"}
    delay = retry_delay(attempts)
    if attempt.retry_after is not None and attempt.response_status in {429, 503}:
        delay = timedelta(seconds=max(min(attempt.retry_after, ctx.settings.crm_webhook_retry_after_max_seconds), 1))
    return {**values, "status": DeliveryStatus.pending, "next_attempt_at": now + delay, "last_error": attempt.error}


def _record(ctx: AppContext, row: WebhookDelivery, token: int, attempt: Attempt) -> str | None:
    """Write the attempt's outcome while the claim is still ours; the new status (None: the claim was lost)."""
    now = utcnow()
    values = _result_values(ctx, token, attempt, now)
    with session_scope(ctx.engine) as session:
        held = session.exec(
            update(WebhookDelivery)
            .where(col(WebhookDelivery.id) == row.id, col(WebhookDelivery.status) == DeliveryStatus.sending,
                   col(WebhookDelivery.attempts) == token)
            .values(**values)
        ).rowcount == 1
    status = str(values["status"])
    host = urlsplit(row.url).hostname
    if not held:
        log(logger, logging.WARNING, "crm webhook result dropped: its claim was taken over", delivery_id=row.delivery_id,
            host=host, attempt=token)
        return None
    if attempt.verdict == "delivered":
        log(logger, logging.INFO, "crm webhook delivered", delivery_id=row.delivery_id, host=host, webhook_event=row.event,
            status=attempt.response_status, attempts=token)
    else:
        log(logger, logging.WARNING, "crm webhook failed", delivery_id=row.delivery_id, host=host, webhook_event=row.event,
            status=attempt.response_status, error=attempt.error, attempts=token,
            outcome="retry scheduled" if status == DeliveryStatus.pending else "failed")
    return status


def deliver_one(ctx: AppContext, client: httpx.Client, delivery_id: int, *, now: datetime | None = None) -> str | None:
    """Claim one due delivery and attempt it; its new status, or None when it was not due or not ours."""
    token = _claim(ctx, delivery_id, now or utcnow())
    if token is None:
        return None
    with Session(ctx.engine, expire_on_commit=False) as session:
        row = session.get(WebhookDelivery, delivery_id)
        if row is None:  # just claimed
            raise RuntimeError(f"claimed webhook delivery {delivery_id} not found")
        broker = session.get(Broker, row.broker_id)
    try:
        secret = current_secret(broker, row.url, row.event)
    except LookupError as exc:
        return _record(ctx, row, token, Attempt("failed", error=str(exc)))
    return _record(ctx, row, token, _post(client, row, secret))


def deliver_due(ctx: AppContext, ids: list[int] | None = None) -> dict[str, int]:
    """Attempt every due delivery (or the given ones); a count per resulting status."""
    counts: dict[str, int] = {}
    todo = ids if ids is not None else due_ids(ctx)
    if not todo:
        return counts
    timeout = httpx.Timeout(ctx.settings.crm_webhook_timeout_seconds)
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for delivery_id in todo:
            status = deliver_one(ctx, client, delivery_id)
            if status:
                counts[status] = counts.get(status, 0) + 1
    return counts


class DeliveryLoop:
    """The thread that sends CRM webhooks, woken by commits that queued some and by the worker's sweeps."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._due = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Any = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def wake(self) -> None:
        self._due.set()

    def sweep(self) -> None:
        """The worker's sweep: wake the thread, or (no thread: tests, one-off runs) deliver here."""
        if self.running:
            self.wake()
        else:
            deliver_due(self.ctx)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._due.wait()
            self._due.clear()
            if self._stop.is_set():
                break
            try:
                deliver_due(self.ctx)
            except Exception as exc:  # the rows stay due: the next sweep tries again
                log(logger, logging.WARNING, "crm webhook sweep failed", exc_type=type(exc).__name__)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._unsubscribe = crm_webhooks.on_queued(self.ctx.engine, self.wake)
            self._thread = threading.Thread(target=self._loop, name="textback-crm-webhooks", daemon=True)
            self._thread.start()
            self.wake()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._stop.set()
        self._due.set()
        if self._thread is not None:
            self._thread.join(timeout=3 * self.ctx.settings.crm_webhook_timeout_seconds + 5)
            self._thread = None
