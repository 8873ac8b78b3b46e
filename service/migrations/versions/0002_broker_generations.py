"""The brokers file's generations (brokers reload, service.broker_set) and the index the unprocessed-replies
sweep, /ready and /metrics read.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 13:01:00.411676
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | Sequence[str] | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Each object only when missing: a database whose revision record was lost (or tables made by hand from the
    # models) may hold them already, and the upgrade then still ends at the models.
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("brokergeneration"):
        op.create_table('brokergeneration',
        sa.Column('generation', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('sha256', sa.String(), nullable=False),
        sa.Column('brokers', sa.Integer(), nullable=False),
        sa.Column('applied_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('applied_by', sa.String(), nullable=False),
        sa.PrimaryKeyConstraint('generation', name=op.f('pk_brokergeneration'))
        )
    if "ix_inboundmessage_status_received" not in {ix["name"] for ix in inspector.get_indexes("inboundmessage")}:
        with op.batch_alter_table('inboundmessage', schema=None) as batch_op:
            batch_op.create_index('ix_inboundmessage_status_received', ['status', 'received_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('inboundmessage', schema=None) as batch_op:
        batch_op.drop_index('ix_inboundmessage_status_received')

    op.drop_table('brokergeneration')
