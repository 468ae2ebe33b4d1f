"""Catalogue, orders, order items, order history and idempotency keys.

Revision ID: orders_0002
Revises: orders_0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "orders_0002"
down_revision: str | None = "orders_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "orders"


def _now() -> sa.TextClause:
    return sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "product",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("price", sa.Numeric(12, 2), nullable=False),
        sa.Column("currency", sa.String(10), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.CheckConstraint("price > 0", name="ck_product_price_positive"),
        sa.PrimaryKeyConstraint("sku", name="pk_product"),
        schema=SCHEMA,
    )
    op.create_table(
        "order",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("total", sa.Numeric(14, 2), nullable=False),
        sa.Column("currency", sa.String(10), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("correlation_id", sa.String(100), nullable=False),
        sa.Column("payment_id", sa.String(64), nullable=True),
        sa.Column("invoice_id", sa.String(64), nullable=True),
        sa.Column("payment_url", sa.String(500), nullable=True),
        sa.Column("payment_status", sa.String(20), nullable=True),
        sa.Column("payment_status_version", sa.Integer, nullable=True),
        sa.Column("failure_reason", sa.Text, nullable=True),
        sa.Column("awaiting_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_order"),
        sa.CheckConstraint(
            "status IN ('created','awaiting_payment','paid','underpaid','failed','expired',"
            "'fulfilled')",
            name="ck_order_status_known",
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_order_awaiting_since",
        "order",
        ["awaiting_since"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'awaiting_payment'"),
    )
    op.create_table(
        "order_item",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("order_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("line_no", sa.Integer, nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price", sa.Numeric(12, 2), nullable=False),
        sa.Column("line_total", sa.Numeric(14, 2), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_order_item"),
        sa.ForeignKeyConstraint(
            ["order_id"],
            [f"{SCHEMA}.order.id"],
            ondelete="CASCADE",
            name="fk_order_item_order_id_order",
        ),
        sa.UniqueConstraint("order_id", "line_no", name="uq_order_item_order_id_line_no"),
        sa.CheckConstraint("quantity BETWEEN 1 AND 10", name="ck_order_item_quantity_range"),
        schema=SCHEMA,
    )
    op.create_table(
        "order_history",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("order_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("from_status", sa.String(20), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("cause_event_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_order_history"),
        sa.ForeignKeyConstraint(
            ["order_id"],
            [f"{SCHEMA}.order.id"],
            ondelete="CASCADE",
            name="fk_order_history_order_id_order",
        ),
        sa.UniqueConstraint("order_id", "version", name="uq_order_history_order_id_version"),
        schema=SCHEMA,
    )
    op.create_index(
        "uq_order_history_paid_once",
        "order_history",
        ["order_id"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'paid'"),
    )
    op.create_table(
        "idempotency_key",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("order_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("token_seed", sa.LargeBinary(32), nullable=False),
        sa.Column("response", postgresql.JSONB, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("key", name="pk_idempotency_key"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_idempotency_key_created_at", "idempotency_key", ["created_at"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("idempotency_key", schema=SCHEMA)
    op.drop_table("order_history", schema=SCHEMA)
    op.drop_table("order_item", schema=SCHEMA)
    op.drop_index("ix_order_awaiting_since", table_name="order", schema=SCHEMA)
    op.drop_table("order", schema=SCHEMA)
    op.drop_table("product", schema=SCHEMA)
