"""outboundmessage: the gate counts' indexes hold every column the counts test (audience, status, purpose and,
for a broker's openers, the number), so counting reads index entries (on PostgreSQL, rows too recent to be marked
all-visible are still checked in the table); they replace 0003's two indexes, whose leading columns they keep.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 00:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | Sequence[str] | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = {
    "ix_outboundmessage_broker_created": ["broker_id", "created_at"],
    "ix_outboundmessage_purpose_created": ["purpose", "created_at"],
}
NEW = {
    "ix_outboundmessage_broker_counts": ["broker_id", "created_at", "purpose", "audience", "status", "to_phone"],
    "ix_outboundmessage_purpose_counts": ["purpose", "created_at", "audience", "status"],
}


def _swap(drop: dict[str, list[str]], create: dict[str, list[str]]) -> None:
    # Each index only when missing (or present, to drop): a database whose revision record was lost (or tables
    # made by hand from the models) may hold them already, and the upgrade then still ends at the models.
    present = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("outboundmessage")}
    with op.batch_alter_table('outboundmessage', schema=None) as batch_op:
        for name, columns in create.items():
            if name not in present:
                batch_op.create_index(name, columns, unique=False)
        for name in drop:
            if name in present:
                batch_op.drop_index(name)


def upgrade() -> None:
    _swap(OLD, NEW)


def downgrade() -> None:
    _swap(NEW, OLD)
