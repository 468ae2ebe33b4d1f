"""Tables of the admin schema. No other service reads or writes them.

Two kinds of table live here: admin's own state (operators, login attempts, revoked tokens,
the audit log) and read models projected from other services' events. Read models are
disposable: ``python -m admin rebuild`` truncates them and replays the streams.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from shared.db import make_metadata
from shared.messaging import InboxMixin, OutboxMixin
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "admin"


class Base(DeclarativeBase):
    metadata = make_metadata(SCHEMA)


class Outbox(OutboxMixin, Base):
    __tablename__ = "outbox"


class Inbox(InboxMixin, Base):
    __tablename__ = "inbox"


# --- admin's own state -------------------------------------------------------------------------


class AdminUser(Base):
    __tablename__ = "admin_user"
    __table_args__ = (CheckConstraint("role IN ('viewer', 'operator')", name="role"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)  # stored lower-cased
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LoginAttempt(Base):
    __tablename__ = "login_attempt"
    __table_args__ = (
        Index("ix_login_attempt_username_at", "username", "attempted_at"),
        Index("ix_login_attempt_ip_at", "ip", "attempted_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    succeeded: Mapped[bool] = mapped_column(Boolean)
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RevokedToken(Base):
    """Tokens ended by logout before their ``exp``; rows are pruned once expired."""

    __tablename__ = "revoked_token"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditLog(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_occurred_at", "occurred_at", "id"),
        Index(
            "uq_audit_log_action_idempotency_key",
            "action",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    actor_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    actor_username: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    target_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Payment actions (settle / attach): the id sent to payments, and the client's
    # Idempotency-Key that produced it (unique per action), so a double submit sends one action.
    action_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(100), nullable=True)


class AttentionDecision(Base):
    """What an operator decided about an attention item: acknowledged (with a reason), or
    resolved by a successful settle/attach on its order. Admin's own state: keyed by the
    item's stable ``(payment_id, key)``, so it survives a rebuild of ``attention_item``."""

    __tablename__ = "attention_decision"
    __table_args__ = (
        CheckConstraint("state IN ('acknowledged', 'resolved')", name="state"),
        Index("ix_attention_decision_order", "order_id"),
    )

    payment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    actor_username: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    audit_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --- read models (projected from events only) --------------------------------------------------


class PaymentView(Base):
    __tablename__ = "payment_view"
    __table_args__ = (
        Index("ix_payment_view_created", "created_at", "payment_id"),
        Index("ix_payment_view_order_id", "order_id"),
        Index("ix_payment_view_provider_payment_id", "provider_payment_id"),
        Index("ix_payment_view_invoice_id", "invoice_id"),
        # The "needs attention" list and its gauge count these on every scrape.
        Index(
            "ix_payment_view_stuck",
            "status",
            postgresql_where=text("status IN ('partially_paid', 'mismatch')"),
        ),
    )

    payment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(32))
    provider_payment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    invoice_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(32))
    previous_status: Mapped[str] = mapped_column(String(32))
    is_final: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    price_amount: Mapped[Decimal] = mapped_column(Numeric)
    price_currency: Mapped[str] = mapped_column(String(16))
    pay_amount: Mapped[Decimal | None] = mapped_column(Numeric, nullable=True)
    actually_paid: Mapped[Decimal | None] = mapped_column(Numeric, nullable=True)
    pay_currency: Mapped[str | None] = mapped_column(String(16), nullable=True)
    surplus: Mapped[Decimal | None] = mapped_column(Numeric, nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))


class PaymentTransitionView(Base):
    """One row per PaymentStatusChanged event: the payment's history and what IPNs caused."""

    __tablename__ = "payment_transition_view"
    __table_args__ = (
        Index("ix_payment_transition_view_payment", "payment_id", "version"),
        Index("ix_payment_transition_view_provider_payment_id", "provider_payment_id"),
        Index("ix_payment_transition_view_invoice_id", "invoice_id"),
        Index("ix_payment_transition_view_causation_id", "causation_id"),
    )

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    payment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    order_id: Mapped[str] = mapped_column(String(64))
    provider_payment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    invoice_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    previous_status: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    is_final: Mapped[bool] = mapped_column(Boolean)
    actually_paid: Mapped[Decimal | None] = mapped_column(Numeric, nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    causation_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    correlation_id: Mapped[str] = mapped_column(String(100))


class OrderView(Base):
    __tablename__ = "order_view"
    __table_args__ = (
        Index("ix_order_view_created", "created_at", "order_id"),
        Index("ix_order_view_status", "status"),
        Index("ix_order_view_email_lower", text("lower(email)")),
    )

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    email: Mapped[str] = mapped_column(String(320))
    total: Mapped[Decimal] = mapped_column(Numeric)
    currency: Mapped[str] = mapped_column(String(16))
    items: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB, nullable=True)
    payment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    actually_paid: Mapped[Decimal | None] = mapped_column(Numeric, nullable=True)
    pay_amount: Mapped[Decimal | None] = mapped_column(Numeric, nullable=True)
    pay_currency: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))


class OrderEventView(Base):
    __tablename__ = "order_event_view"
    __table_args__ = (Index("ix_order_event_view_order", "order_id", "version"),)

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


class WebhookLogView(Base):
    """Accepted (IpnReceived) and rejected (IpnRejected) callbacks in one list.

    ``id`` is the public id: ``a-<webhook_log_id>`` or ``r-<failure_id>`` (``r-<event_id>``
    when the webhooks gateway did not store the failure because its flood cap was reached).
    """

    __tablename__ = "webhook_log_view"
    __table_args__ = (
        Index("ix_webhook_log_view_received", "received_at", "id"),
        Index("ix_webhook_log_view_payment_id", "payment_id"),
        Index("ix_webhook_log_view_invoice_id", "invoice_id"),
    )

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    accepted: Mapped[bool] = mapped_column(Boolean)
    webhook_log_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, unique=True)
    failure_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    provider: Mapped[str] = mapped_column(String(32))
    dedup_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    payment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    invoice_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    order_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    payment_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    price_amount: Mapped[Decimal | None] = mapped_column(Numeric, nullable=True)
    price_currency: Mapped[str | None] = mapped_column(String(16), nullable=True)
    pay_amount: Mapped[Decimal | None] = mapped_column(Numeric, nullable=True)
    actually_paid: Mapped[Decimal | None] = mapped_column(Numeric, nullable=True)
    pay_currency: Mapped[str | None] = mapped_column(String(16), nullable=True)
    provider_updated_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    raw_body: Mapped[str | None] = mapped_column(Text, nullable=True)
    headers: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    source_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    body_excerpt: Mapped[str | None] = mapped_column(Text, nullable=True)
    dropped_since_last: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    received_count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    replay_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    first_event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))


class WebhookEventView(Base):
    """Every IpnReceived publication of one webhook log: the original and each replay."""

    __tablename__ = "webhook_event_view"
    __table_args__ = (Index("ix_webhook_event_view_log", "webhook_log_id"),)

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    webhook_log_id: Mapped[int] = mapped_column(BigInteger)
    replay: Mapped[bool] = mapped_column(Boolean)
    replayed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    replay_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeliveryView(Base):
    __tablename__ = "delivery_view"
    __table_args__ = (
        Index("ix_delivery_view_delivered", "delivered_at", "delivery_id"),
        Index("ix_delivery_view_order", "order_id"),
    )

    delivery_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64))
    item_count: Mapped[int] = mapped_column(Integer)
    link_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))


class EmailView(Base):
    __tablename__ = "email_view"
    __table_args__ = (Index("ix_email_view_order", "order_id", "occurred_at"),)

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64))
    template: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    recipient_masked: Mapped[str] = mapped_column(String(320))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RevocationView(Base):
    __tablename__ = "revocation_view"
    __table_args__ = (Index("ix_revocation_view_order", "order_id", "occurred_at"),)

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64))
    revoked: Mapped[int] = mapped_column(Integer)
    operator_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeadLetterView(Base):
    __tablename__ = "dead_letter_view"
    __table_args__ = (Index("ix_dead_letter_view_at", "dead_lettered_at", "dl_sequence"),)

    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    stream_sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    dl_sequence: Mapped[int] = mapped_column(BigInteger)  # position in the DEADLETTER stream
    original_subject: Mapped[str] = mapped_column(String(200))
    deliveries: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text)
    event_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    body: Mapped[str] = mapped_column(Text)
    dead_lettered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AttentionItem(Base):
    """One ``PaymentAttentionRaised`` per ``(payment_id, key)`` (payments publishes a situation
    once; a redelivered copy is the same row). Its state is derived when read: resolved by an
    ``*_by_operator`` item of the same order raised later, or by an ``attention_decision``."""

    __tablename__ = "attention_item"
    __table_args__ = (
        Index("ix_attention_item_raised", "raised_at", "payment_id", "key"),
        Index("ix_attention_item_order", "order_id", "raised_at"),
    )

    payment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
    provider_payment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    parent_payment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    provider_status: Mapped[str | None] = mapped_column(String(40), nullable=True)
    payment_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    amount: Mapped[Decimal | None] = mapped_column(Numeric, nullable=True)
    currency: Mapped[str | None] = mapped_column(String(16), nullable=True)
    raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))


# Truncated by ``rebuild`` (with the inbox, whose rows only guard these tables).
READ_MODELS: tuple[type[Base], ...] = (
    PaymentView,
    PaymentTransitionView,
    OrderView,
    OrderEventView,
    WebhookLogView,
    WebhookEventView,
    DeliveryView,
    EmailView,
    RevocationView,
    DeadLetterView,
    AttentionItem,
)
