"""Outgoing webhooks to a broker's CRM (`webhooks:` in the brokers file).

`enqueue` persists one WebhookDelivery row per subscribed webhook in the caller's transaction; the worker
delivers them after commit, signed, with retries (see the delivery section below).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlmodel import Session

from service.leads_view import iso, lead_summary
from service.models import Broker, Lead, WebhookDelivery


def enqueue(session: Session, *, broker: Broker, lead: Lead, event: str, cause: str, data: dict[str, Any],
            at: datetime) -> list[WebhookDelivery]:
    """Queue `event` about `lead` to every webhook of `broker` that subscribes to it."""
    rows: list[WebhookDelivery] = []
    for hook in broker.webhooks or []:
        if event not in hook.get("events", []):
            continue
        delivery_id = uuid.uuid4().hex
        body = {"id": delivery_id, "event": event, "cause": cause, "occurred_at": iso(at),
                "lead": lead_summary(lead, broker), "data": data}
        row = WebhookDelivery(delivery_id=delivery_id, broker_id=broker.id or 0, lead_id=lead.id, url=hook["url"],
                              event=event, body=json.dumps(body, separators=(",", ":"), sort_keys=True))
        session.add(row)
        rows.append(row)
    return rows
