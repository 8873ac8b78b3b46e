"""outboundmessage: indexes for the queue-time gate counts (the circuit breaker's openers in its window across
brokers, a broker's texts in the last day), so the one statement that counts them stays flat as the table grows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 16:22:00.493846
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | Sequence[str] | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_outboundmessage_broker_created": ["broker_id", "created_at"],
    "ix_outboundmessage_purpose_created": ["purpose", "created_at"],
}


def upgrade() -> None:
    # Each index only when missing: a database whose revision record was lost (or tables made by hand from the
    # models) may hold them already, and the upgrade then still ends at the models.
    present = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("outboundmessage")}
    missing = {name: columns for name, columns in INDEXES.items() if name not in present}
    if missing:
        with op.batch_alter_table('outboundmessage', schema=None) as batch_op:
            for name, columns in missing.items():
                batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outboundmessage', schema=None) as batch_op:
        for name in INDEXES:
            batch_op.drop_index(name)
