"""webhook_log (verified IPNs, one row per dedup key) and webhook_failure (rejections).

Revision ID: webhooks_0002
Revises: webhooks_0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "webhooks_0002"
down_revision: str | None = "webhooks_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "webhooks"
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "webhook_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("dedup_key", sa.String(300), nullable=False),
        sa.Column("payment_id", sa.String(64), nullable=False),
        sa.Column("invoice_id", sa.String(64), nullable=True),
        sa.Column("order_id", sa.String(100), nullable=True),
        sa.Column("payment_status", sa.String(32), nullable=False),
        sa.Column("actually_paid", sa.Numeric, nullable=True),
        sa.Column("provider_updated_at", sa.BigInteger, nullable=True),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("verified_by", sa.String(32), nullable=False),
        sa.Column("raw_body", sa.LargeBinary, nullable=False),
        sa.Column("headers", postgresql.JSONB, nullable=False),
        sa.Column("source_ip", sa.String(64), nullable=True),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("received_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("last_received_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("received_count", sa.Integer, server_default="1", nullable=False),
        sa.Column("replay_count", sa.Integer, server_default="0", nullable=False),
        sa.Column("last_replayed_at", TZ, nullable=True),
        sa.UniqueConstraint("dedup_key", name="uq_webhook_log_dedup_key"),
        schema=SCHEMA,
    )
    op.create_index("ix_webhook_log_payment_id", "webhook_log", ["payment_id"], schema=SCHEMA)

    op.create_table(
        "webhook_failure",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("detail", sa.String(300), nullable=False),
        sa.Column("headers", postgresql.JSONB, nullable=False),
        sa.Column("body_excerpt", sa.LargeBinary, nullable=False),
        sa.Column("body_size", sa.Integer, nullable=False),
        sa.Column("source_ip", sa.String(64), nullable=True),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("dropped_before", sa.Integer, server_default="0", nullable=False),
        sa.Column("received_at", TZ, server_default=sa.func.now(), nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_webhook_failure_received_at", "webhook_failure", ["received_at"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("webhook_failure", schema=SCHEMA)
    op.drop_table("webhook_log", schema=SCHEMA)
