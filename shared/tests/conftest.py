"""Test-only tables for exercising the messaging platform against real Postgres and NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

import pytest
from shared.contracts.envelope import Event
from shared.db import create_engine, make_metadata, make_session_factory
from shared.messaging import InboxMixin, OutboxMixin
from shared.testing.plugin import Infra
from sqlalchemy import Integer, String, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "platform_test"


class Base(DeclarativeBase):
    metadata = make_metadata(SCHEMA)


class Outbox(OutboxMixin, Base):
    __tablename__ = "outbox"


class Inbox(InboxMixin, Base):
    __tablename__ = "inbox"


class Effect(Base):
    """What a test handler does: one row per handled event."""

    __tablename__ = "effect"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    note: Mapped[str] = mapped_column(String(100))


class PingHappened(Event):
    """A test event on a subject that lives in the ORDERS stream."""

    SUBJECT: ClassVar[str] = "orders.order_created.v1"
    note: str


@pytest.fixture
async def platform_db(
    clean_infra: Infra,
) -> AsyncIterator[tuple[AsyncEngine, async_sessionmaker[AsyncSession]]]:
    engine = create_engine(clean_infra.database_url, pool_size=5)
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        await conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        await conn.run_sync(Base.metadata.create_all)
    yield engine, make_session_factory(engine)
    await engine.dispose()
