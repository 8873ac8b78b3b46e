"""Bearer tokens for a broker's CRM (`textback tokens`): one broker each, shown once, stored as SHA-256 only,
listed, revoked. A token works on the API as `Authorization: Bearer <token>` (service.web.principal.resolve)
for as long as it is not revoked and its broker is active in the brokers file."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from service.access import digest, new_token
from service.models import ApiToken, Broker, utcnow

PREFIX = "tbk_"  # marks a textback token wherever it turns up (a secret scanner, a log, a paste)


@dataclass(frozen=True)
class TokenRow:
    """A token as listed: never the token itself."""

    id: int
    broker: str  # the broker's Twilio number
    name: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def active_broker(session: Session, twilio_number: str) -> Broker | None:
    return session.exec(
        select(Broker).where(Broker.twilio_number == twilio_number, col(Broker.active).is_(True))
    ).first()


def create_token(session: Session, *, broker: Broker, name: str | None, now: datetime | None = None) -> tuple[int, str]:
    """Store a new token for `broker`; returns its id and the token (shown once, never stored)."""
    if broker.id is None:
        msg = "tokens are for saved brokers"
        raise ValueError(msg)
    token = new_token(PREFIX)
    row = ApiToken(token_hash=digest(token), broker_id=broker.id, name=name, created_at=now or utcnow())
    session.add(row)
    session.flush()
    if row.id is None:  # just flushed
        msg = "token row has no id after flush"
        raise RuntimeError(msg)
    return row.id, token


def list_tokens(session: Session) -> list[TokenRow]:
    rows = session.exec(select(ApiToken, Broker.twilio_number).join(Broker, col(Broker.id) == ApiToken.broker_id)
                        .order_by(col(ApiToken.id))).all()
    return [TokenRow(id=t.id or 0, broker=number, name=t.name, created_at=t.created_at,
                     last_used_at=t.last_used_at, revoked_at=t.revoked_at) for t, number in rows]


def revoke_token(session: Session, token_id: int, *, now: datetime | None = None) -> ApiToken | None:
    """Revoke token `token_id` (kept as a record); None when there is no such token."""
    row = session.get(ApiToken, token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = now or utcnow()
        session.add(row)
    return row
