"""Operators, login attempts, revoked tokens, audit log and the read models.

Revision ID: admin_0002
Revises: admin_0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "admin_0002"
down_revision: str | None = "admin_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "admin"
TZ = sa.DateTime(timezone=True)
UUID = postgresql.UUID(as_uuid=True)
JSONB = postgresql.JSONB


def upgrade() -> None:
    op.create_table(
        "admin_user",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("disabled", sa.Boolean, server_default="false", nullable=False),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("last_login_at", TZ, nullable=True),
        sa.UniqueConstraint("username", name="uq_admin_user_username"),
        sa.CheckConstraint("role IN ('viewer', 'operator')", name="ck_admin_user_role"),
        schema=SCHEMA,
    )
    op.create_table(
        "login_attempt",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("succeeded", sa.Boolean, nullable=False),
        sa.Column("attempted_at", TZ, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_login_attempt_username_at", "login_attempt", ["username", "attempted_at"], schema=SCHEMA
    )
    op.create_index(
        "ix_login_attempt_ip_at", "login_attempt", ["ip", "attempted_at"], schema=SCHEMA
    )
    op.create_table(
        "revoked_token",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("expires_at", TZ, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("completed_at", TZ, nullable=True),
        sa.Column("actor_id", sa.String(64), nullable=True),
        sa.Column("actor_username", sa.String(64), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=True),
        sa.Column("target_id", sa.String(200), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", JSONB, nullable=False),
        sa.Column("ip", sa.String(64), nullable=True),
        schema=SCHEMA,
    )
    op.create_index("ix_audit_log_occurred_at", "audit_log", ["occurred_at", "id"], schema=SCHEMA)

    op.create_table(
        "payment_view",
        sa.Column("payment_id", UUID, primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("provider_payment_id", sa.String(64), nullable=True),
        sa.Column("invoice_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("previous_status", sa.String(32), nullable=False),
        sa.Column("is_final", sa.Boolean, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("price_amount", sa.Numeric, nullable=False),
        sa.Column("price_currency", sa.String(16), nullable=False),
        sa.Column("pay_amount", sa.Numeric, nullable=True),
        sa.Column("actually_paid", sa.Numeric, nullable=True),
        sa.Column("pay_currency", sa.String(16), nullable=True),
        sa.Column("surplus", sa.Numeric, nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("last_event_id", UUID, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_payment_view_created", "payment_view", ["created_at", "payment_id"], schema=SCHEMA
    )
    for col in ("order_id", "provider_payment_id", "invoice_id"):
        op.create_index(f"ix_payment_view_{col}", "payment_view", [col], schema=SCHEMA)

    op.create_table(
        "payment_transition_view",
        sa.Column("event_id", UUID, primary_key=True),
        sa.Column("payment_id", UUID, nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("provider_payment_id", sa.String(64), nullable=True),
        sa.Column("invoice_id", sa.String(64), nullable=True),
        sa.Column("previous_status", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("is_final", sa.Boolean, nullable=False),
        sa.Column("actually_paid", sa.Numeric, nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("causation_id", sa.String(100), nullable=True),
        sa.Column("correlation_id", sa.String(100), nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_payment_transition_view_payment",
        "payment_transition_view",
        ["payment_id", "version"],
        schema=SCHEMA,
    )
    for col in ("provider_payment_id", "invoice_id", "causation_id"):
        op.create_index(
            f"ix_payment_transition_view_{col}", "payment_transition_view", [col], schema=SCHEMA
        )

    op.create_table(
        "order_view",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("total", sa.Numeric, nullable=False),
        sa.Column("currency", sa.String(16), nullable=False),
        sa.Column("items", JSONB, nullable=True),
        sa.Column("payment_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("actually_paid", sa.Numeric, nullable=True),
        sa.Column("pay_amount", sa.Numeric, nullable=True),
        sa.Column("pay_currency", sa.String(16), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("last_event_id", UUID, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_order_view_created", "order_view", ["created_at", "order_id"], schema=SCHEMA
    )
    op.create_index("ix_order_view_status", "order_view", ["status"], schema=SCHEMA)
    op.create_index(
        "ix_order_view_email_lower", "order_view", [sa.text("lower(email)")], schema=SCHEMA
    )

    op.create_table(
        "order_event_view",
        sa.Column("event_id", UUID, primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("detail", JSONB, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_order_event_view_order", "order_event_view", ["order_id", "version"], schema=SCHEMA
    )

    op.create_table(
        "webhook_log_view",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("accepted", sa.Boolean, nullable=False),
        sa.Column("webhook_log_id", sa.BigInteger, nullable=True),
        sa.Column("failure_id", sa.BigInteger, nullable=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("dedup_key", sa.String(300), nullable=True),
        sa.Column("payment_id", sa.String(64), nullable=True),
        sa.Column("invoice_id", sa.String(64), nullable=True),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.Column("payment_status", sa.String(32), nullable=True),
        sa.Column("price_amount", sa.Numeric, nullable=True),
        sa.Column("price_currency", sa.String(16), nullable=True),
        sa.Column("pay_amount", sa.Numeric, nullable=True),
        sa.Column("actually_paid", sa.Numeric, nullable=True),
        sa.Column("pay_currency", sa.String(16), nullable=True),
        sa.Column("provider_updated_at", sa.BigInteger, nullable=True),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("raw_body", sa.Text, nullable=True),
        sa.Column("headers", JSONB, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("source_ip", sa.String(64), nullable=True),
        sa.Column("body_excerpt", sa.Text, nullable=True),
        sa.Column("dropped_since_last", sa.Integer, server_default="0", nullable=False),
        sa.Column("received_count", sa.Integer, server_default="1", nullable=False),
        sa.Column("replay_count", sa.Integer, server_default="0", nullable=False),
        sa.Column("first_event_id", UUID, nullable=False),
        sa.UniqueConstraint("webhook_log_id", name="uq_webhook_log_view_webhook_log_id"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_webhook_log_view_received", "webhook_log_view", ["received_at", "id"], schema=SCHEMA
    )
    for col in ("payment_id", "invoice_id"):
        op.create_index(f"ix_webhook_log_view_{col}", "webhook_log_view", [col], schema=SCHEMA)

    op.create_table(
        "webhook_event_view",
        sa.Column("event_id", UUID, primary_key=True),
        sa.Column("webhook_log_id", sa.BigInteger, nullable=False),
        sa.Column("replay", sa.Boolean, nullable=False),
        sa.Column("replayed_by", sa.String(64), nullable=True),
        sa.Column("replay_reason", sa.Text, nullable=True),
        sa.Column("occurred_at", TZ, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_webhook_event_view_log", "webhook_event_view", ["webhook_log_id"], schema=SCHEMA
    )

    op.create_table(
        "delivery_view",
        sa.Column("delivery_id", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("link_expires_at", TZ, nullable=False),
        sa.Column("delivered_at", TZ, nullable=False),
        sa.Column("event_id", UUID, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_delivery_view_delivered",
        "delivery_view",
        ["delivered_at", "delivery_id"],
        schema=SCHEMA,
    )
    op.create_index("ix_delivery_view_order", "delivery_view", ["order_id"], schema=SCHEMA)

    op.create_table(
        "email_view",
        sa.Column("event_id", UUID, primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("recipient_masked", sa.String(320), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("occurred_at", TZ, nullable=False),
        schema=SCHEMA,
    )
    op.create_index("ix_email_view_order", "email_view", ["order_id", "occurred_at"], schema=SCHEMA)

    op.create_table(
        "revocation_view",
        sa.Column("event_id", UUID, primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("revoked", sa.Integer, nullable=False),
        sa.Column("operator_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("occurred_at", TZ, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_revocation_view_order", "revocation_view", ["order_id", "occurred_at"], schema=SCHEMA
    )

    op.create_table(
        "dead_letter_view",
        sa.Column("consumer", sa.String(100), primary_key=True),
        sa.Column("stream_sequence", sa.BigInteger, primary_key=True),
        sa.Column("dl_sequence", sa.BigInteger, nullable=False),
        sa.Column("original_subject", sa.String(200), nullable=False),
        sa.Column("deliveries", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("event_id", sa.String(100), nullable=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("dead_lettered_at", TZ, nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_dead_letter_view_at",
        "dead_letter_view",
        ["dead_lettered_at", "dl_sequence"],
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in (
        "dead_letter_view",
        "revocation_view",
        "email_view",
        "delivery_view",
        "webhook_event_view",
        "webhook_log_view",
        "order_event_view",
        "order_view",
        "payment_transition_view",
        "payment_view",
        "audit_log",
        "revoked_token",
        "login_attempt",
        "admin_user",
    ):
        op.drop_table(table, schema=SCHEMA)
