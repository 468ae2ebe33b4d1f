"""Outbox and inbox tables of the payments schema.

Revision ID: payments_0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from shared.db.migration_ops import create_inbox, create_outbox, drop_messaging_tables

revision: str = "payments_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "payments"


def upgrade() -> None:
    create_outbox(SCHEMA)
    create_inbox(SCHEMA)


def downgrade() -> None:
    drop_messaging_tables(SCHEMA)
