"""Demo catalogue: a few game keys and licences in usd (one retired product stays hidden).

Rows are written out here rather than imported from the package so that this revision means
the same thing forever. ON CONFLICT keeps it safe on a database where an operator already
created a product with one of these skus.

Revision ID: orders_0003
Revises: orders_0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence
from decimal import Decimal

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "orders_0003"
down_revision: str | None = "orders_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "orders"

DEMO_PRODUCTS = (
    (
        "starfall-odyssey-steam",
        "Starfall Odyssey — Steam key",
        "Open-world space RPG. One Steam activation key, global region.",
        "19.99",
        True,
    ),
    (
        "neon-drift-steam",
        "Neon Drift — Steam key",
        "Arcade racing through a synthwave city. One Steam activation key.",
        "14.50",
        True,
    ),
    (
        "pixelforge-pro-1y",
        "PixelForge Pro — 1-year licence",
        "Pixel-art editor, one seat for twelve months. Licence key and installer link.",
        "9.99",
        True,
    ),
    (
        "vaultvpn-12m",
        "VaultVPN — 12-month licence",
        "VPN subscription for up to five devices, twelve months.",
        "29.00",
        True,
    ),
    (
        "soundscape-ambient-pack",
        "Soundscape Ambient Pack",
        "120 royalty-free ambient loops (WAV, ZIP download).",
        "4.99",
        True,
    ),
    (
        "retro-arcade-classic",
        "Retro Arcade Classic — Steam key",
        "No longer sold; kept so old orders still show its title.",
        "2.99",
        False,
    ),
)


_product = sa.table(
    "product",
    sa.column("sku", sa.String),
    sa.column("title", sa.String),
    sa.column("description", sa.Text),
    sa.column("price", sa.Numeric(12, 2)),
    sa.column("currency", sa.String),
    sa.column("active", sa.Boolean),
    schema=SCHEMA,
)


def upgrade() -> None:
    rows = [
        {
            "sku": sku,
            "title": title,
            "description": description,
            "price": Decimal(price),
            "currency": "usd",
            "active": active,
        }
        for sku, title, description, price, active in DEMO_PRODUCTS
    ]
    op.execute(
        postgresql.insert(_product).values(rows).on_conflict_do_nothing(index_elements=["sku"])
    )


def downgrade() -> None:
    op.execute(_product.delete().where(_product.c.sku.in_([row[0] for row in DEMO_PRODUCTS])))
