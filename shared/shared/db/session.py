from __future__ import annotations

import asyncio
import socket

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine


class DatabaseUnavailableError(RuntimeError):
    """The database cannot be reached right now; callers answer 503 or retry."""


def create_engine(
    url: str, *, pool_size: int = 10, application_name: str = "bitloot"
) -> AsyncEngine:
    return _create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=5,
        connect_args={
            "timeout": 3,
            "command_timeout": 10,
            "server_settings": {"application_name": application_name},
        },
    )


def make_session_factory(
    engine: AsyncEngine, info: dict[str, object] | None = None
) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: handlers read what they wrote after the boundary commits.
    # ``info`` is copied into every session (the outbox waker travels this way).
    return async_sessionmaker(engine, expire_on_commit=False, info=info or {})


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means the database is unreachable, not that the query was wrong."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        name = type(orig).__name__ if orig is not None else ""
        if "Connection" in name or "CannotConnectNow" in name or "AdminShutdown" in name:
            return True
    return isinstance(
        exc, ConnectionError | OSError | socket.gaierror | asyncio.TimeoutError | TimeoutError
    )
