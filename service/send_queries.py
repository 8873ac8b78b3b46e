"""The send's statements (service.sender), each built once and bound by name: building them cost more CPU than
the database's answer, and a statement built afresh is also keyed for the compiled cache afresh."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import BindParameter, Row, bindparam, func, or_, update
from sqlmodel import Session, col, select

from service import optout_lock, row_objects
from service.models import (
    ALLOWED_AFTER_OPTOUT,
    Audience,
    DeliveryEvent,
    MessageStatus,
    OutboundMessage,
    UTCDateTime,
)

if TYPE_CHECKING:
    from service.sending.opt_out_policy import Scope

FAILED_DELIVERY = ("failed", "undelivered")
_AT = UTCDateTime()


@cache
def claim_checked(scope: Scope) -> Any:
    """sender._claim_checked's UPDATE for an opt-out scope, bound with `claim_id` and `claim_now`: the row
    claimed and returned (every column, in `row_objects.row_keys` order) when due, its outcome known and its
    number not opted out (or the text allowed anyway).

    The table's UPDATE, not the ORM's: the ORM's rebuilt its cache key on every call (a tenth of a missed call's
    CPU); `claimed` builds the object from the row."""
    table = OutboundMessage.__table__  # type: ignore[attr-defined]
    now: BindParameter[datetime] = bindparam("claim_now", type_=_AT)
    allowed_anyway = or_(col(OutboundMessage.audience) != Audience.borrower,
                         col(OutboundMessage.purpose).in_(ALLOWED_AFTER_OPTOUT))
    return (
        update(table)
        .where(table.c.id == bindparam("claim_id"), table.c.status == MessageStatus.pending,
               table.c.next_attempt_at <= now, table.c.unknown_outcome.is_(False),
               or_(allowed_anyway, ~optout_lock.opted_out_clause(scope)))
        .values(status=MessageStatus.sending, claimed_at=now, attempts=table.c.attempts + 1)
        .returning(*row_objects.columns(OutboundMessage))
    )


@cache
def column_names() -> frozenset[str]:
    """The outbound table's column names (each an attribute of OutboundMessage of the same name)."""
    return frozenset(row_objects.row_keys(OutboundMessage))


def claimed(session: Session, row: Row[Any]) -> OutboundMessage:
    """The row `claim_checked` returned as a persistent OutboundMessage in `session` (service.row_objects):
    what the ORM's UPDATE ... RETURNING would have given."""
    return row_objects.attached(session, OutboundMessage, row)


@cache
def write_counting_callbacks() -> Any:
    """sender._write_counting_early_callbacks's UPDATE of the table (not the ORM's): the row `write_id`, SET from
    the other parameters' names, returning how many delivery callbacks are already stored for `write_sid` (one
    that beat the send's own write of the SID: a failure, or a "delivered" the row must not miss)."""
    table = OutboundMessage.__table__  # type: ignore[attr-defined]
    early = select(func.count()).select_from(DeliveryEvent).where(
        col(DeliveryEvent.message_sid) == bindparam("write_sid"))
    return update(table).where(table.c.id == bindparam("write_id")).returning(early.scalar_subquery())
