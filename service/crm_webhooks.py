"""Outgoing webhooks to a broker's CRM (`webhooks:` in the brokers file): what is queued and how it is signed.

`enqueue` persists one WebhookDelivery row per subscribed webhook in the caller's transaction, so a CRM hears
of exactly what was committed; once that transaction commits, the delivery loops listening on its database in
this process are woken (`on_queued`), and service.crm_delivery sends the rows outside any transaction.

The contract a receiver verifies (documented in the README with a Python snippet):

    X-Textback-Timestamp: <unix seconds>
    X-Textback-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>

The secret lives only in the brokers file (and the broker row synced from it), never in a delivery row: each
attempt is signed afresh, with the secret configured for that URL at the time of the attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.leads_view import iso, last_message_times, lead_summary
from service.models import Broker, Lead, WebhookDelivery

SIGNATURE_VERSION = "v1"
EVENT_HEADER = "X-Textback-Event"
DELIVERY_HEADER = "X-Textback-Delivery"
TIMESTAMP_HEADER = "X-Textback-Timestamp"
SIGNATURE_HEADER = "X-Textback-Signature"


class DeliveryStatus(StrEnum):
    pending = "pending"  # waiting for its first attempt or its next retry (next_attempt_at)
    sending = "sending"  # claimed by a delivery loop (claimed_at); taken over when the claim goes stale
    delivered = "delivered"  # the CRM answered 2xx
    failed = "failed"  # refused for good (4xx, removed webhook) or given up after every attempt


def enqueue(session: Session, *, broker: Broker, lead: Lead, event: str, cause: str, data: dict[str, Any],
            at: datetime) -> list[WebhookDelivery]:
    """Queue `event` about `lead` to every webhook of `broker` that subscribes to it."""
    rows: list[WebhookDelivery] = []
    hooks = [hook for hook in broker.webhooks or [] if event in hook.get("events", [])]
    if not hooks:
        return rows
    # The lead as the API's list shows it, its last message time included (one query, only when a CRM listens).
    summary = lead_summary(lead, broker, last_message_at=last_message_times(session, [lead.id]).get(lead.id)
                           if lead.id is not None else None)
    for hook in hooks:
        delivery_id = uuid.uuid4().hex
        body = {"id": delivery_id, "event": event, "cause": cause, "occurred_at": iso(at),
                "lead": summary, "data": data}
        row = WebhookDelivery(delivery_id=delivery_id, broker_id=broker.id or 0, lead_id=lead.id, url=hook["url"],
                              event=event, body=json.dumps(body, separators=(",", ":"), sort_keys=True))
        session.add(row)
        rows.append(row)
    if rows:
        _wake_after_commit(session)
    return rows


def signature(secret: str, timestamp: int, body: str) -> str:
    """The X-Textback-Signature value: v1= and the hex HMAC-SHA256 of "<timestamp>.<body>" keyed by the secret."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={mac}"


def signed_headers(*, secret: str, event: str, delivery_id: str, body: str, timestamp: int,
                   user_agent: str) -> dict[str, str]:
    """Every header of one delivery attempt."""
    return {
        "Content-Type": "application/json",
        "User-Agent": user_agent,
        EVENT_HEADER: event,
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


# ---------------------------------------------------------------------------------------------------------
# Waking the delivery loops of this process once a transaction that queued deliveries has committed.

_WAKE_PENDING = "crm_webhooks.wake_pending"
_LISTENING = "crm_webhooks.listening"
_listeners_lock = threading.Lock()
_listeners: dict[str, set[Callable[[], None]]] = {}


def _database(engine: Engine) -> str:
    """The database an engine talks to: two engines on one database wake each other's loops."""
    return engine.url.render_as_string(hide_password=True)


def on_queued(engine: Engine, callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` after every commit in this process that queued deliveries on `engine`'s database (or
    put one back in the queue); returns the function that stops it."""
    key = _database(engine)
    with _listeners_lock:
        _listeners.setdefault(key, set()).add(callback)

    def stop() -> None:
        with _listeners_lock:
            _listeners.get(key, set()).discard(callback)

    return stop


def notify(engine: Engine) -> None:
    """Wake the delivery loops listening on `engine`'s database (call after a commit)."""
    with _listeners_lock:
        callbacks = list(_listeners.get(_database(engine), ()))
    for callback in callbacks:
        callback()


def _wake_after_commit(session: Session) -> None:
    session.info[_WAKE_PENDING] = True
    if not session.info.get(_LISTENING):
        session.info[_LISTENING] = True
        event.listen(session, "after_commit", _committed)


def _committed(session: Session) -> None:
    """After a commit: wake the loops when it was the outermost one (a savepoint's release commits nothing)."""
    if session.in_nested_transaction() or not session.info.pop(_WAKE_PENDING, False):
        return
    bind = session.get_bind()
    notify(bind if isinstance(bind, Engine) else bind.engine)
