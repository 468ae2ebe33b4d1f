"""Order status ``refunded`` (a paid or delivered order whose payment was refunded).

Expand only: the CHECK on ``order.status`` is widened; no row changes. Drop and re-add run in
the migration's one transaction, so there is no moment without the check (the table is locked
while existing rows are checked once). The previous release never writes the new value and
reads the column as text, so both releases run against this schema.

Revision ID: orders_0004
Revises: orders_0003
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "orders_0004"
down_revision: str | None = "orders_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "orders"

# The name orders_0002 really produced: the metadata's naming convention prefixes
# "ck_<table>_" to the name it was given.
_NAME = "ck_order_ck_order_status_known"
_OLD = "'created','awaiting_payment','paid','underpaid','failed','expired','fulfilled'"
_NEW = _OLD + ",'refunded'"


def _replace_check(values: str) -> None:
    table = f'{SCHEMA}."order"'
    op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {_NAME}")
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {_NAME} CHECK (status IN ({values}))")


def upgrade() -> None:
    _replace_check(_NEW)


def downgrade() -> None:
    # Only possible while no order is refunded (validation refuses otherwise), on purpose.
    _replace_check(_OLD)
