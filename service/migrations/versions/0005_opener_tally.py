"""openertally: borrower openers per minute, kept by a trigger on outboundmessage, so the circuit breaker reads
an upper bound of its window in a few rows and counts exactly only when the bound reaches its limit
(service.opener_tally). Openers already stored are tallied too, so the bound holds from the first read.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 16:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from service import opener_tally

revision: str = '0005'
down_revision: str | Sequence[str] | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The table only when missing: a database whose revision record was lost (or tables made by hand from the
    # models) may hold it already, and the upgrade then still ends at the models.
    bind = op.get_bind()
    if not sa.inspect(bind).has_table("openertally"):
        op.create_table('openertally',
        sa.Column('minute', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('shard', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('minute', 'shard', name=op.f('pk_openertally'))
        )
    opener_tally.install(bind)
    opener_tally.backfill(bind)


def downgrade() -> None:
    opener_tally.uninstall(op.get_bind())
    op.drop_table('openertally')
