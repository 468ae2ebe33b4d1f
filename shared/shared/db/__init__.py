"""Async SQLAlchemy plumbing: engines, sessions, one schema per service, Alembic per service."""

from shared.db.base import NAMING_CONVENTION, make_metadata
from shared.db.session import (
    DatabaseUnavailableError,
    create_engine,
    is_connection_error,
    make_session_factory,
    ping,
)

__all__ = [
    "NAMING_CONVENTION",
    "DatabaseUnavailableError",
    "create_engine",
    "is_connection_error",
    "make_metadata",
    "make_session_factory",
    "ping",
]
