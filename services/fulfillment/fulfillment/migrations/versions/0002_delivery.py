"""Deliveries, their items, download grants, the email log and reissue rate limits.

Revision ID: fulfillment_0002
Revises: fulfillment_0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "fulfillment_0002"
down_revision: str | None = "fulfillment_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "fulfillment"


def _ts(name: str, *, nullable: bool = False, default: bool = False) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=sa.func.now() if default else None,
    )


def upgrade() -> None:
    op.create_table(
        "delivery",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("correlation_id", sa.String(100), nullable=False),
        sa.Column("source_event_id", postgresql.UUID(as_uuid=True), nullable=False),
        _ts("created_at", default=True),
        _ts("revoked_at", nullable=True),
        sa.Column("revoked_reason", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_delivery"),
        sa.UniqueConstraint("order_id", name="uq_delivery_order_id"),
        schema=SCHEMA,
    )
    op.create_table(
        "delivery_item",
        sa.Column("delivery_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("sku", sa.String(100), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("object_key", sa.String(500), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("delivery_id", "position", name="pk_delivery_item"),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            [f"{SCHEMA}.delivery.id"],
            name="fk_delivery_item_delivery_id_delivery",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("object_key", name="uq_delivery_item_object_key"),
        schema=SCHEMA,
    )
    op.create_table(
        "download_grant",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("delivery_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        _ts("created_at", default=True),
        _ts("expires_at"),
        sa.Column("max_downloads", sa.Integer, nullable=False),
        sa.Column("downloads", sa.Integer, server_default="0", nullable=False),
        _ts("last_download_at", nullable=True),
        _ts("revoked_at", nullable=True),
        sa.Column("revoked_reason", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_download_grant"),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            [f"{SCHEMA}.delivery.id"],
            name="fk_download_grant_delivery_id_delivery",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "downloads >= 0 AND downloads <= max_downloads",
            name="ck_download_grant_downloads_in_cap",
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_download_grant_delivery_id", "download_grant", ["delivery_id"], schema=SCHEMA
    )
    op.create_index("ix_download_grant_order_id", "download_grant", ["order_id"], schema=SCHEMA)
    op.create_index(
        "uq_download_grant_initial",
        "download_grant",
        ["delivery_id"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("kind = 'initial'"),
    )
    op.create_table(
        "email_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("template", sa.String(40), nullable=False),
        sa.Column("ref", sa.String(100), server_default="", nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("context", postgresql.JSONB, nullable=False),
        sa.Column("correlation_id", sa.String(100), nullable=True),
        sa.Column("status", sa.String(20), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer, server_default="0", nullable=False),
        _ts("next_attempt_at", default=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("provider_message_id", sa.String(200), nullable=True),
        _ts("created_at", default=True),
        _ts("sent_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_email_log"),
        sa.UniqueConstraint("order_id", "template", "ref", name="uq_email_log_order_template_ref"),
        schema=SCHEMA,
    )
    op.create_index("ix_email_log_order_id", "email_log", ["order_id"], schema=SCHEMA)
    op.create_index(
        "ix_email_log_due",
        "email_log",
        ["next_attempt_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "rate_limit",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("tokens", sa.Float, nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("key", name="pk_rate_limit"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("rate_limit", schema=SCHEMA)
    op.drop_table("email_log", schema=SCHEMA)
    op.drop_table("download_grant", schema=SCHEMA)
    op.drop_table("delivery_item", schema=SCHEMA)
    op.drop_table("delivery", schema=SCHEMA)
