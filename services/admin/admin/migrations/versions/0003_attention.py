"""Payments that need attention: attention_item (read model), attention_decision (operators'
acknowledgements and resolutions), audit_log.action_id / idempotency_key for exactly-once
payment actions, and a partial index for the stuck-payment count. Expand only.

Revision ID: admin_0003
Revises: admin_0002
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "admin_0003"
down_revision: str | None = "admin_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "admin"
TZ = sa.DateTime(timezone=True)
UUID = postgresql.UUID(as_uuid=True)


def upgrade() -> None:
    op.create_table(
        "attention_item",
        sa.Column("payment_id", UUID, primary_key=True),
        sa.Column("key", sa.String(120), primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("provider_payment_id", sa.String(64), nullable=True),
        sa.Column("parent_payment_id", sa.String(64), nullable=True),
        sa.Column("provider_status", sa.String(40), nullable=True),
        sa.Column("payment_status", sa.String(32), nullable=True),
        sa.Column("amount", sa.Numeric, nullable=True),
        sa.Column("currency", sa.String(16), nullable=True),
        sa.Column("raised_at", TZ, nullable=False),
        sa.Column("event_id", UUID, nullable=False),
        sa.PrimaryKeyConstraint("payment_id", "key", name="pk_attention_item"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_attention_item_raised",
        "attention_item",
        ["raised_at", "payment_id", "key"],
        schema=SCHEMA,
    )
    op.create_index(
        "ix_attention_item_order", "attention_item", ["order_id", "raised_at"], schema=SCHEMA
    )
    op.create_table(
        "attention_decision",
        sa.Column("payment_id", UUID, primary_key=True),
        sa.Column("key", sa.String(120), primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=True),
        sa.Column("actor_username", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("audit_id", sa.BigInteger, nullable=True),
        sa.Column("decided_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("payment_id", "key", name="pk_attention_decision"),
        sa.CheckConstraint(
            "state IN ('acknowledged', 'resolved')", name="ck_attention_decision_state"
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_attention_decision_order", "attention_decision", ["order_id"], schema=SCHEMA
    )
    op.add_column("audit_log", sa.Column("action_id", UUID, nullable=True), schema=SCHEMA)
    op.add_column(
        "audit_log", sa.Column("idempotency_key", sa.String(100), nullable=True), schema=SCHEMA
    )
    op.create_index(
        "uq_audit_log_action_idempotency_key",
        "audit_log",
        ["action", "idempotency_key"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index(
        "ix_payment_view_stuck",
        "payment_view",
        ["status"],
        schema=SCHEMA,
        postgresql_where=sa.text("status IN ('partially_paid', 'mismatch')"),
    )


def downgrade() -> None:
    op.drop_index("ix_payment_view_stuck", "payment_view", schema=SCHEMA)
    op.drop_index("uq_audit_log_action_idempotency_key", "audit_log", schema=SCHEMA)
    op.drop_column("audit_log", "idempotency_key", schema=SCHEMA)
    op.drop_column("audit_log", "action_id", schema=SCHEMA)
    op.drop_table("attention_decision", schema=SCHEMA)
    op.drop_table("attention_item", schema=SCHEMA)
