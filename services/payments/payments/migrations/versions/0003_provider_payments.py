"""Several provider payments per order, raised attention, operator actions (expand only:
new tables, nothing existing changes, so the previous release runs against this schema).

Revision ID: payments_0003
Revises: payments_0002
Create Date: 2026-12-04
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "payments_0003"
down_revision: str | None = "payments_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "payments"


def _tz(name: str, **kwargs: Any) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), **kwargs)


def _payment_fk(table: str) -> sa.Column[Any]:
    return sa.Column(
        "payment_id",
        postgresql.UUID(as_uuid=True),
        sa.ForeignKey(f"{SCHEMA}.payment.id", name=f"fk_{table}_payment_id_payment"),
        nullable=False,
    )


def _outcome_check(values: str) -> None:
    # Raw SQL: the constraint keeps exactly the name 0002 gave it (the naming convention
    # prefixed the name it was declared with).
    table = f"{SCHEMA}.payment_transition"
    name = "ck_payment_transition_ck_payment_transition_outcome"
    op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK (outcome IN ({values}))")


def upgrade() -> None:
    # A ledger entry may now say "recorded": a provider payment of the order moved, the order's
    # payment did not. Widening a CHECK is expand-safe: the previous release never writes it.
    _outcome_check("'applied','ignored','recorded'")
    op.create_table(
        "provider_payment",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        _payment_fk("provider_payment"),
        sa.Column("provider_payment_id", sa.String(32), nullable=False),
        sa.Column("parent_payment_id", sa.String(32), nullable=True),
        sa.Column("purchase_id", sa.String(32), nullable=True),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("price_amount", sa.Numeric(), nullable=True),
        sa.Column("price_currency", sa.String(10), nullable=True),
        sa.Column("pay_amount", sa.Numeric(), nullable=True),
        sa.Column("actually_paid", sa.Numeric(), nullable=True),
        sa.Column("pay_currency", sa.String(20), nullable=True),
        sa.Column("outcome_amount", sa.Numeric(), nullable=True),
        sa.Column("outcome_currency", sa.String(20), nullable=True),
        sa.Column("fixed_rate", sa.Boolean, nullable=True),
        _tz("expires_at", nullable=True),
        sa.Column("provider_updated_at_ms", sa.BigInteger, nullable=True),
        sa.Column("attached_by", sa.String(100), nullable=True),
        _tz("created_at", nullable=False, server_default=sa.func.now()),
        _tz("updated_at", nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("provider_payment_id", name="uq_provider_payment_provider_payment_id"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_provider_payment_payment_id", "provider_payment", ["payment_id"], schema=SCHEMA
    )
    op.create_table(
        "payment_attention",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        _payment_fk("payment_attention"),
        sa.Column("key", sa.String(120), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        _tz("created_at", nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("payment_id", "key", name="uq_payment_attention_key"),
        schema=SCHEMA,
    )
    op.create_table(
        "payment_action",
        sa.Column("action_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        _payment_fk("payment_action"),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("operator", sa.String(100), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("provider_payment_id", sa.String(32), nullable=True),
        sa.Column("status_after", sa.String(20), nullable=False),
        sa.Column("changed", sa.Boolean, nullable=False),
        _tz("created_at", nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )


def downgrade() -> None:
    _outcome_check("'applied','ignored'")
    op.drop_table("payment_action", schema=SCHEMA)
    op.drop_table("payment_attention", schema=SCHEMA)
    op.drop_index("ix_provider_payment_payment_id", "provider_payment", schema=SCHEMA)
    op.drop_table("provider_payment", schema=SCHEMA)
