"""Tables of the fulfillment schema. No other service reads or writes them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from shared.db import make_metadata
from shared.messaging import InboxMixin, OutboxMixin
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "fulfillment"


class Base(DeclarativeBase):
    metadata = make_metadata(SCHEMA)


class Outbox(OutboxMixin, Base):
    __tablename__ = "outbox"


class Inbox(InboxMixin, Base):
    __tablename__ = "inbox"


class Delivery(Base):
    """One per order: the goods exist in the bucket. Its uniqueness is the exactly-once guard."""

    __tablename__ = "delivery"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    item_count: Mapped[int] = mapped_column(Integer)
    correlation_id: Mapped[str] = mapped_column(String(100))
    source_event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Set by an operator's revocation: no link works and no reissue is granted afterwards.
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)


class Refund(Base):
    """An order whose payment was refunded. Its grants are revoked, and it is never delivered
    afterwards: OrderPaid and OrderRefunded arrive on different consumers, in either order."""

    __tablename__ = "refund"

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source_event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    reason: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DeliveryItem(Base):
    """One stored object per order line; sha256 lets a regeneration prove it is the same file."""

    __tablename__ = "delivery_item"

    delivery_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("delivery.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)
    object_key: Mapped[str] = mapped_column(String(500), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)


class DownloadGrant(Base):
    """What one emailed link allows. The signed token only names the grant."""

    __tablename__ = "download_grant"
    __table_args__ = (
        CheckConstraint("downloads >= 0 AND downloads <= max_downloads", name="downloads_in_cap"),
        # At most one grant minted by the delivery itself; reissues add more rows.
        Index(
            "uq_download_grant_initial",
            "delivery_id",
            unique=True,
            postgresql_where=text("kind = 'initial'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("delivery.id", ondelete="CASCADE"), index=True
    )
    order_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # initial | reissue
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    max_downloads: Mapped[int] = mapped_column(Integer)
    downloads: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_download_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)


class EmailLog(Base):
    """One row per email we mean to send; (order, template, ref) makes a redelivery a no-op.

    ``ref`` is empty for one-per-order templates and the grant id for reissues, which may repeat.
    """

    __tablename__ = "email_log"
    __table_args__ = (
        UniqueConstraint("order_id", "template", "ref", name="uq_email_log_order_template_ref"),
        Index(
            "ix_email_log_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), index=True)
    template: Mapped[str] = mapped_column(String(40))
    ref: Mapped[str] = mapped_column(String(100), default="", server_default="")
    recipient: Mapped[str] = mapped_column(String(320))
    context: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    correlation_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    provider_message_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RateLimit(Base):
    """Token buckets for the public reissue endpoint, shared by every api replica."""

    __tablename__ = "rate_limit"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
