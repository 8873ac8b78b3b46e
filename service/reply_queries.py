"""A reply's claim and hold (service.worker), each built once and bound by name, as the send's are
(service.send_queries): table UPDATEs returning the reply's every column, so the claim is also its read and the
hold (the processing transaction's first write) also its load; service.row_objects builds the objects."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import bindparam, update

from service import row_objects
from service.models import InboundMessage, UTCDateTime

_AT = UTCDateTime()


@cache
def claim() -> Any:
    """`received` to `processing`, the attempt counted (its number is the claim's token); bound with
    `claim_id` and `claim_now`. Returns the reply, or no row when it was not `received`."""
    table = InboundMessage.__table__  # type: ignore[attr-defined]
    return (
        update(table)
        .where(table.c.id == bindparam("claim_id"), table.c.status == "received")
        .values(status="processing", attempts=table.c.attempts + 1, processed_at=bindparam("claim_now", type_=_AT))
        .returning(*row_objects.columns(InboundMessage))
    )


@cache
def hold() -> Any:
    """`processing` to `processed` only while the claim is still ours (`hold_token`, the claim's attempt);
    bound with `hold_id`, `hold_token` and `hold_now`. Returns the reply, or no row when the claim was lost."""
    table = InboundMessage.__table__  # type: ignore[attr-defined]
    return (
        update(table)
        .where(table.c.id == bindparam("hold_id"), table.c.status == "processing",
               table.c.attempts == bindparam("hold_token"))
        .values(status="processed", processed_at=bindparam("hold_now", type_=_AT))
        .returning(*row_objects.columns(InboundMessage))
    )
