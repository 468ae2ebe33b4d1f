from __future__ import annotations

from sqlalchemy import MetaData

# Stable constraint names so Alembic autogenerate produces the same names everywhere.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def make_metadata(schema: str) -> MetaData:
    """Metadata bound to one service's schema: a service's tables never leave it."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)
