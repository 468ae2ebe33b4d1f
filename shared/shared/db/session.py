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
    url: str, *, pool_size: int = 10, application_name: str = "bitloot", pool_timeout: float = 10
) -> AsyncEngine:
    # A fixed pool, no overflow and no pre-ping (docs/decisions.md, "Connection pool"):
    # overflow connections are closed on return, so a worker with more concurrent handlers than
    # pooled connections opened a new backend per message; a pre-ping is a round trip per
    # transaction. A connection that died with the server fails its one transaction, which is
    # retried (consumers) or answered 503 (APIs), and SQLAlchemy then recycles the whole pool.
    return _create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=False,
        pool_timeout=pool_timeout,
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


# asyncpg's names for "the server went away or is not accepting us right now".
_CONNECTION_ERROR_NAMES = (
    "Connection",  # PostgresConnectionError, ConnectionDoesNotExistError, ...
    "CannotConnectNow",
    "AdminShutdown",
    "CrashShutdown",
    "ServerShutdown",
    "TooManyConnections",
)


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means the database is unreachable, not that the query was wrong.

    SQLAlchemy wraps asyncpg's exception in its adapter's, so the whole chain is inspected.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OperationalError | InterfaceError):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(
            current,
            ConnectionError | OSError | socket.gaierror | asyncio.TimeoutError | TimeoutError,
        ):
            return True
        if any(mark in type(current).__name__ for mark in _CONNECTION_ERROR_NAMES):
            return True
        orig = getattr(current, "orig", None)
        current = (
            orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
        )
    return False
