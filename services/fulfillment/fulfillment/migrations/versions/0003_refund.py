"""Refunded orders: a new table, nothing else changes (expand only).

Revision ID: fulfillment_0003
Revises: fulfillment_0002
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "fulfillment_0003"
down_revision: str | None = "fulfillment_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "fulfillment"


def upgrade() -> None:
    op.create_table(
        "refund",
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("source_event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("order_id", name="pk_refund"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("refund", schema=SCHEMA)
