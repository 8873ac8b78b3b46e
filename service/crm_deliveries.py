"""The CRM webhook delivery log: list deliveries (the API and `textback webhooks list`) and put a failed one
back in the queue (`POST /api/webhooks/deliveries/{id}/retry`, `textback webhooks retry`).

Scoped like the leads: a principal sees the deliveries of its brokers (a session opened from an alert link,
those of its one lead); one it may not see is the same 404 as one that does not exist. A delivery's body is
never shown here: it holds borrower data, and the CRM has it.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from service import crm_webhooks, paging
from service.access import Principal
from service.crm_delivery import current_secret
from service.crm_webhooks import DeliveryStatus
from service.errors import ApiError
from service.leads_view import iso
from service.logs import log
from service.models import Broker, WebhookDelivery, utcnow

logger = logging.getLogger("textback.crm_webhooks")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
NOT_FOUND = "no such webhook delivery"
STATUSES = tuple(s.value for s in DeliveryStatus)


def delivery_json(row: WebhookDelivery, broker: Broker | None) -> dict[str, Any]:
    """One delivery as the API and the CLI show it (no body)."""
    return {
        "id": row.id,
        "delivery_id": row.delivery_id,
        "broker": broker.twilio_number if broker else None,
        "lead_id": row.lead_id,
        "url": row.url,
        "event": row.event,
        "status": row.status,
        "attempts": row.attempts,
        "response_status": row.response_status,
        "last_error": row.last_error,
        "created_at": iso(row.created_at),
        "delivered_at": iso(row.delivered_at),
        "next_attempt_at": iso(row.next_attempt_at) if row.status == DeliveryStatus.pending else None,
    }


def encode_cursor(row_id: int) -> str:
    """The opaque cursor of the page after delivery `row_id`."""
    return paging.encode_cursor("delivery", row_id)


def decode_cursor(cursor: str) -> int:
    """The delivery id a cursor continues after (400 naming `cursor` otherwise)."""
    return paging.decode_cursor("delivery", cursor)


def check_status(status: str | None) -> str | None:
    if status in (None, ""):
        return None
    if status not in STATUSES:
        raise ApiError(f"status: unknown status {status!r}; one of {', '.join(STATUSES)}", status_code=400)
    return status


def list_deliveries(session: Session, *, principal: Principal | None, status: str | None = None,
                    broker_id: int | None = None, cursor: str | None = None,
                    limit: int = DEFAULT_LIMIT) -> tuple[list[dict[str, Any]], str | None]:
    """One page of deliveries, newest first, and the next page's cursor (None on the last). `principal` None
    is the operator at the command line: every broker."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(f"limit: must be a whole number from 1 to {MAX_LIMIT}", status_code=400)
    query = select(WebhookDelivery)
    if principal is not None:
        query = query.where(col(WebhookDelivery.broker_id).in_(sorted(principal.broker_ids)))
        if principal.lead_id is not None:
            query = query.where(WebhookDelivery.lead_id == principal.lead_id)
    if broker_id is not None:
        query = query.where(WebhookDelivery.broker_id == broker_id)
    if check_status(status):
        query = query.where(WebhookDelivery.status == status)
    if cursor:
        query = query.where(col(WebhookDelivery.id) < decode_cursor(cursor))
    rows = list(session.exec(query.order_by(col(WebhookDelivery.id).desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    brokers = {b.id: b for b in session.exec(
        select(Broker).where(col(Broker.id).in_({r.broker_id for r in rows})))}
    items = [delivery_json(r, brokers.get(r.broker_id)) for r in rows]
    return items, encode_cursor(rows[-1].id) if more and rows[-1].id is not None else None


def retry(session: Session, delivery_id: int, *, principal: Principal | None, actor: str) -> dict[str, Any]:
    """Put a failed delivery back in the queue for a full round of attempts (the caller commits, then calls
    `wake`). 404 for one the principal may not see; 409 unless it failed, or when its webhook is gone."""
    row = session.get(WebhookDelivery, delivery_id)
    if row is None or (principal is not None and not principal.may_see(row.broker_id, row.lead_id)):
        raise ApiError(NOT_FOUND, status_code=404)
    if row.status != DeliveryStatus.failed:
        raise ApiError(f"only a failed delivery can be retried; this one is {row.status}", status_code=409)
    broker = session.get(Broker, row.broker_id)
    try:
        current_secret(broker, row.url, row.event)
    except LookupError as exc:
        raise ApiError(f"{exc}: add the webhook back before retrying", status_code=409) from None
    row.status, row.attempts, row.next_attempt_at, row.claimed_at = DeliveryStatus.pending, 0, utcnow(), None
    session.add(row)
    session.flush()
    log(logger, logging.INFO, "crm webhook retry requested", delivery_id=row.delivery_id, actor=actor)
    return delivery_json(row, broker)


def wake(engine: Engine) -> None:
    """After the retry's commit: the delivery loops of this process send it now (others on their next sweep)."""
    crm_webhooks.notify(engine)
