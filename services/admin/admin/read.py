"""Reads that must agree with themselves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


@asynccontextmanager
async def snapshot(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose queries all see one snapshot (REPEATABLE READ, read only).

    A detail page reads a row and then its history in separate queries; under READ COMMITTED a
    projection committing in between showed the new history next to the old row (three
    transitions beside a payment still missing the invoice id the third one brought).
    """
    async with sessions() as session:
        await session.connection(
            execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        )
        yield session
