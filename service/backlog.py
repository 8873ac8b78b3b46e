"""The work backlog, measured cheaply: texts due and not sent, replies not processed, webhooks still spooled.

`/ready` (service.app) says the backlog is stuck when the oldest of them has waited longer than
`TEXTBACK_READY_BACKLOG_SECONDS`; `/metrics` (service.metrics) exports the same numbers as gauges. Two
aggregate queries and one directory listing, nothing else:

- texts: pending (or claimed) rows whose `next_attempt_at` has passed. A text deferred to quiet hours' end, or
  waiting for a retry's backoff, is due only then, so it is never "stuck" before; a claim (`sending`) keeps the
  time it fell due, so a text left in `sending` by a dead process with no sweep to reclaim it shows too. Read
  through the index on `outboundmessage.status` (only unsettled rows match).
- replies: received (or claimed) inbound messages, by `received_at`. inboundmessage has no index on `status`:
  this scans the table, as the worker's own sweep (service.worker.due_inbound_ids) does every second;
  an index on (status, received_at) would serve both.
- spool: `spool-*` / `claimed-*` files (service.spool) not written for longer than the bound while the
  database answers: the worker would have replayed and deleted them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import case, func
from sqlmodel import Session, col, select

from service.models import InboundMessage, MessageStatus, OutboundMessage, utcnow
from service.spool import ACTIVE, CLAIMED

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

UNSENT = (MessageStatus.pending, MessageStatus.sending)
UNPROCESSED = ("received", "processing")


@dataclass(frozen=True)
class Backlog:
    """What waits, and for how long the oldest of each kind has waited (seconds; 0 when nothing waits)."""

    pending_texts: int  # unsent texts, deferred ones included
    due_texts: int  # unsent texts whose time has come
    oldest_due_seconds: float
    unprocessed_replies: int
    oldest_reply_seconds: float
    spooled_files: int
    oldest_spool_seconds: float

    def stuck(self, bound_seconds: float) -> list[str]:
        """The kinds of work whose oldest item has waited longer than the bound."""
        ages = {"texts": self.oldest_due_seconds, "replies": self.oldest_reply_seconds,
                "spool": self.oldest_spool_seconds}
        return [kind for kind, age in ages.items() if age > bound_seconds]


def _age(then: datetime | None, now: datetime) -> float:
    return round(max((now - then).total_seconds(), 0.0), 1) if then is not None else 0.0


def _spooled(directory: Path | None) -> tuple[int, float]:
    """Spool files waiting for replay and the seconds since the stalest was last written."""
    if directory is None:
        return 0, 0.0
    try:
        mtimes = [entry.stat().st_mtime for entry in os.scandir(directory)
                  if entry.name.startswith((ACTIVE, CLAIMED)) and entry.name.endswith(".jsonl")]
    except OSError:
        return 0, 0.0
    if not mtimes:
        return 0, 0.0
    return len(mtimes), round(max(time.time() - min(mtimes), 0.0), 1)


def measure(engine: Engine, spool_dir: Path | None, *, now: datetime | None = None) -> Backlog:
    """The backlog as the database and the spool directory show it now (raises if the database fails)."""
    now = now or utcnow()
    due = col(OutboundMessage.next_attempt_at) <= now
    with Session(engine) as session:
        pending, due_count, oldest_due = session.exec(
            select(func.count(), func.sum(case((due, 1), else_=0)),
                   func.min(case((due, col(OutboundMessage.next_attempt_at)), else_=None)))
            .where(col(OutboundMessage.status).in_(UNSENT))
        ).one()
        replies, oldest_reply = session.exec(
            select(func.count(), func.min(col(InboundMessage.received_at)))
            .where(col(InboundMessage.status).in_(UNPROCESSED))
        ).one()
    files, spool_age = _spooled(spool_dir)
    return Backlog(
        pending_texts=int(pending or 0), due_texts=int(due_count or 0), oldest_due_seconds=_age(oldest_due, now),
        unprocessed_replies=int(replies or 0), oldest_reply_seconds=_age(oldest_reply, now),
        spooled_files=files, oldest_spool_seconds=spool_age,
    )
