"""Tables of the payments schema. No other service reads or writes them."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from shared.db import make_metadata
from shared.messaging import InboxMixin, OutboxMixin
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "payments"

# Unconstrained NUMERIC: the provider's amounts keep every digit they were sent with.
Amount = Numeric(asdecimal=True)


class Base(DeclarativeBase):
    metadata = make_metadata(SCHEMA)


class Outbox(OutboxMixin, Base):
    __tablename__ = "outbox"


class Inbox(InboxMixin, Base):
    __tablename__ = "inbox"


class Payment(Base):
    """One payment per order: our record of the provider invoice and where it stands."""

    __tablename__ = "payment"
    __table_args__ = (
        UniqueConstraint("order_id", name="uq_payment_order_id"),
        Index("ix_payment_invoice_id", "invoice_id"),
        Index("ix_payment_provider_payment_id", "provider_payment_id"),
        # The poller's scan: only payments still waiting for a verdict are indexed.
        Index(
            "ix_payment_due",
            "next_check_at",
            postgresql_where=text("next_check_at IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(32), default="nowpayments")
    status: Mapped[str] = mapped_column(String(20))
    price_amount: Mapped[Decimal] = mapped_column(Amount)
    price_currency: Mapped[str] = mapped_column(String(10))
    description: Mapped[str] = mapped_column(String(200), default="")
    success_url: Mapped[str | None] = mapped_column(String(500))
    cancel_url: Mapped[str | None] = mapped_column(String(500))
    correlation_id: Mapped[str | None] = mapped_column(String(100))

    # Provider ids are integers beyond 2^53 (JavaScript's exact range): kept as text.
    invoice_id: Mapped[str | None] = mapped_column(String(32))
    invoice_url: Mapped[str | None] = mapped_column(Text)
    invoice_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    invoice_attempts: Mapped[int] = mapped_column(Integer, default=0)
    provider_payment_id: Mapped[str | None] = mapped_column(String(32))

    pay_amount: Mapped[Decimal | None] = mapped_column(Amount)
    actually_paid: Mapped[Decimal | None] = mapped_column(Amount)
    pay_currency: Mapped[str | None] = mapped_column(String(20))
    outcome_amount: Mapped[Decimal | None] = mapped_column(Amount)
    outcome_currency: Mapped[str | None] = mapped_column(String(20))
    surplus: Mapped[Decimal | None] = mapped_column(Amount)
    shortfall: Mapped[Decimal | None] = mapped_column(Amount)
    provider_updated_at_ms: Mapped[int | None] = mapped_column(BigInteger)

    # Ledger position of the latest entry (applied or ignored); events carry it as `version`.
    ledger_seq: Mapped[int] = mapped_column(Integer, default=0)
    last_error_code: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)

    # Reconciliation: NULL once final, so the due index only holds live payments.
    next_check_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    checks_done: Mapped[int] = mapped_column(Integer, default=0)
    last_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    final_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PaymentTransition(Base):
    """Append-only ledger: every status the provider reported and what it did to the payment.

    A database trigger refuses UPDATE and DELETE, so history cannot be rewritten by mistake.
    """

    __tablename__ = "payment_transition"
    __table_args__ = (
        UniqueConstraint("payment_id", "seq", name="uq_payment_transition_seq"),
        Index("ix_payment_transition_payment_id", "payment_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    payment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("payment.id"))
    seq: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(10))
    outcome: Mapped[str] = mapped_column(String(10))  # applied | ignored | recorded
    reported_status: Mapped[str | None] = mapped_column(String(40))
    from_status: Mapped[str] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    provider_payment_id: Mapped[str | None] = mapped_column(String(32))
    pay_amount: Mapped[Decimal | None] = mapped_column(Amount)
    actually_paid: Mapped[Decimal | None] = mapped_column(Amount)
    provider_updated_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    event_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))  # the IPN event
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ProviderPayment(Base):
    """One provider payment counted towards an order's payment.

    NOWPayments is final per provider payment, not per order: repeated deposits and wrong-asset
    deposits are new payments naming their parent, and a customer who switches coin opens a
    second payment on the same invoice. Each keeps its own forward-only status here; the
    order's payment status (``payment.status``) is the verdict over all of them.
    """

    __tablename__ = "provider_payment"
    __table_args__ = (
        UniqueConstraint("provider_payment_id", name="uq_provider_payment_provider_payment_id"),
        Index("ix_provider_payment_payment_id", "payment_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    payment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("payment.id"))
    provider_payment_id: Mapped[str] = mapped_column(String(32))
    parent_payment_id: Mapped[str | None] = mapped_column(String(32))
    purchase_id: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(40))
    price_amount: Mapped[Decimal | None] = mapped_column(Amount)
    price_currency: Mapped[str | None] = mapped_column(String(10))
    pay_amount: Mapped[Decimal | None] = mapped_column(Amount)
    actually_paid: Mapped[Decimal | None] = mapped_column(Amount)
    pay_currency: Mapped[str | None] = mapped_column(String(20))
    outcome_amount: Mapped[Decimal | None] = mapped_column(Amount)
    outcome_currency: Mapped[str | None] = mapped_column(String(20))
    fixed_rate: Mapped[bool | None] = mapped_column(Boolean)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    provider_updated_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    attached_by: Mapped[str | None] = mapped_column(String(100))  # operator who attached it
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class PaymentAttention(Base):
    """Situations already raised to operators (``payments.attention_raised.v1``): one row per
    (payment, key), so a provider retrying the same IPN for days raises it once."""

    __tablename__ = "payment_attention"
    __table_args__ = (UniqueConstraint("payment_id", "key", name="uq_payment_attention_key"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    payment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("payment.id"))
    key: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PaymentAction(Base):
    """Operator commands (settle, attach) by their ``action_id``: the same action twice acts
    once and answers the first result."""

    __tablename__ = "payment_action"

    action_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    payment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("payment.id"))
    order_id: Mapped[str] = mapped_column(String(64))
    operator: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)
    provider_payment_id: Mapped[str | None] = mapped_column(String(32))
    status_after: Mapped[str] = mapped_column(String(20))
    changed: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
