"""Inbox guard: record a consumed event id in the same transaction as the handler's effect."""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, String, Table, func
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column


class InboxMixin:
    """Columns of a service's ``inbox`` table: one row per (consumer, event)."""

    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    subject: Mapped[str] = mapped_column(String(200))
    processed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


async def claim_event(
    session: AsyncSession, inbox: Any, *, consumer: str, event_id: uuid.UUID, subject: str
) -> bool:
    """True the first time this consumer sees ``event_id`` in a committed transaction.

    A concurrent duplicate blocks on the primary key until the first transaction ends, then
    gets False (committed) or True (rolled back) — so the effect happens exactly once.
    """
    table: Table = inbox.__table__
    result = await session.execute(
        _claim_statement(table), {"consumer": consumer, "event_id": event_id, "subject": subject}
    )
    return result.first() is not None


@functools.cache
def _claim_statement(table: Table) -> Any:
    # Built once per table: SQLAlchemy memoises a statement's cache key on the object, so a
    # constant statement with separate parameters skips rebuilding and re-keying it per event.
    return insert(table).on_conflict_do_nothing().returning(table.c.event_id)
