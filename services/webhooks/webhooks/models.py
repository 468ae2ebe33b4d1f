"""Tables of the webhooks schema. No other service reads or writes them."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from shared.db import make_metadata
from shared.messaging import InboxMixin, OutboxMixin
from sqlalchemy import (
    BigInteger,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "webhooks"


class Base(DeclarativeBase):
    metadata = make_metadata(SCHEMA)


class Outbox(OutboxMixin, Base):
    __tablename__ = "outbox"


class Inbox(InboxMixin, Base):
    __tablename__ = "inbox"


class WebhookLog(Base):
    """Every verified IPN once per dedup key, with the exact bytes the provider signed."""

    __tablename__ = "webhook_log"
    __table_args__ = (Index("ix_webhook_log_payment_id", "payment_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    dedup_key: Mapped[str] = mapped_column(String(300), unique=True)
    payment_id: Mapped[str] = mapped_column(String(64))
    invoice_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    order_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    payment_status: Mapped[str] = mapped_column(String(32))
    actually_paid: Mapped[Decimal | None] = mapped_column(Numeric, nullable=True)
    provider_updated_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    signature: Mapped[str] = mapped_column(String(128))
    verified_by: Mapped[str] = mapped_column(String(32))  # raw|canonical / current|previous
    raw_body: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, str]] = mapped_column(JSONB)
    source_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))  # the first IpnReceived
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    received_count: Mapped[int] = mapped_column(Integer, server_default="1")
    replay_count: Mapped[int] = mapped_column(Integer, server_default="0")
    last_replayed_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )


class WebhookFailure(Base):
    """A rejected request, kept for operators; capped (see domain.FailureBudget)."""

    __tablename__ = "webhook_failure"
    __table_args__ = (Index("ix_webhook_failure_received_at", "received_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(String(300))
    headers: Mapped[dict[str, str]] = mapped_column(JSONB)
    # Bytes, not text: a rejected body may hold NUL or invalid UTF-8.
    body_excerpt: Mapped[bytes] = mapped_column(LargeBinary)
    body_size: Mapped[int] = mapped_column(Integer)
    source_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    dropped_before: Mapped[int] = mapped_column(Integer, server_default="0")
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
