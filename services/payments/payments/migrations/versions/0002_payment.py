"""Payment and the append-only payment_transition ledger.

Revision ID: payments_0002
Revises: payments_0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "payments_0002"
down_revision: str | None = "payments_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "payments"


def _tz(name: str, **kwargs: Any) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), **kwargs)


def upgrade() -> None:
    op.create_table(
        "payment",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("price_amount", sa.Numeric(), nullable=False),
        sa.Column("price_currency", sa.String(10), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("success_url", sa.String(500), nullable=True),
        sa.Column("cancel_url", sa.String(500), nullable=True),
        sa.Column("correlation_id", sa.String(100), nullable=True),
        sa.Column("invoice_id", sa.String(32), nullable=True),
        sa.Column("invoice_url", sa.Text, nullable=True),
        _tz("invoice_expires_at", nullable=True),
        sa.Column("invoice_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("provider_payment_id", sa.String(32), nullable=True),
        sa.Column("pay_amount", sa.Numeric(), nullable=True),
        sa.Column("actually_paid", sa.Numeric(), nullable=True),
        sa.Column("pay_currency", sa.String(20), nullable=True),
        sa.Column("outcome_amount", sa.Numeric(), nullable=True),
        sa.Column("outcome_currency", sa.String(20), nullable=True),
        sa.Column("surplus", sa.Numeric(), nullable=True),
        sa.Column("shortfall", sa.Numeric(), nullable=True),
        sa.Column("provider_updated_at_ms", sa.BigInteger, nullable=True),
        sa.Column("ledger_seq", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error_code", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        _tz("next_check_at", nullable=True),
        sa.Column("checks_done", sa.Integer, nullable=False, server_default="0"),
        _tz("last_checked_at", nullable=True),
        _tz("created_at", nullable=False, server_default=sa.func.now()),
        _tz("updated_at", nullable=False, server_default=sa.func.now()),
        _tz("final_at", nullable=True),
        sa.UniqueConstraint("order_id", name="uq_payment_order_id"),
        sa.CheckConstraint(
            "status IN ('created','waiting','confirming','confirmed','sending','finished',"
            "'partially_paid','failed','expired','refunded','mismatch')",
            name="ck_payment_status",
        ),
        schema=SCHEMA,
    )
    op.create_index("ix_payment_invoice_id", "payment", ["invoice_id"], schema=SCHEMA)
    op.create_index(
        "ix_payment_provider_payment_id", "payment", ["provider_payment_id"], schema=SCHEMA
    )
    op.create_index(
        "ix_payment_due",
        "payment",
        ["next_check_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("next_check_at IS NOT NULL"),
    )

    op.create_table(
        "payment_transition",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "payment_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey(f"{SCHEMA}.payment.id", name="fk_payment_transition_payment_id_payment"),
            nullable=False,
        ),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("reported_status", sa.String(40), nullable=True),
        sa.Column("from_status", sa.String(20), nullable=False),
        sa.Column("to_status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("provider_payment_id", sa.String(32), nullable=True),
        sa.Column("pay_amount", sa.Numeric(), nullable=True),
        sa.Column("actually_paid", sa.Numeric(), nullable=True),
        sa.Column("provider_updated_at_ms", sa.BigInteger, nullable=True),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=True),
        _tz("created_at", nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("payment_id", "seq", name="uq_payment_transition_seq"),
        sa.CheckConstraint(
            "source IN ('ipn','poll','admin','invoice')", name="ck_payment_transition_source"
        ),
        sa.CheckConstraint(
            "outcome IN ('applied','ignored')", name="ck_payment_transition_outcome"
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_payment_transition_payment_id", "payment_transition", ["payment_id"], schema=SCHEMA
    )
    # Append-only for real: a ledger that can be edited is not evidence. TRUNCATE (tests,
    # operators resetting a dev database) is a statement trigger and stays possible.
    op.execute(
        f"""
        CREATE FUNCTION {SCHEMA}.payment_transition_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'payment_transition is append-only (% refused)', TG_OP;
        END;
        $$
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER payment_transition_append_only
        BEFORE UPDATE OR DELETE ON {SCHEMA}.payment_transition
        FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.payment_transition_append_only()
        """
    )


def downgrade() -> None:
    op.execute(
        f"DROP TRIGGER IF EXISTS payment_transition_append_only ON {SCHEMA}.payment_transition"
    )
    op.execute(f"DROP FUNCTION IF EXISTS {SCHEMA}.payment_transition_append_only()")
    op.drop_table("payment_transition", schema=SCHEMA)
    op.drop_table("payment", schema=SCHEMA)
