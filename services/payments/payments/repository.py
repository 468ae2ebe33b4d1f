"""Every query of the payments service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from payments.models import (
    Payment,
    PaymentAction,
    PaymentAttention,
    PaymentTransition,
    ProviderPayment,
)


async def get(session: AsyncSession, payment_id: uuid.UUID) -> Payment | None:
    return await session.get(Payment, payment_id)


async def get_by_order(session: AsyncSession, order_id: str) -> Payment | None:
    result = await session.execute(select(Payment).where(Payment.order_id == order_id))
    return result.scalar_one_or_none()


async def insert_if_absent(session: AsyncSession, values: dict[str, object]) -> None:
    """Create the order's payment unless it exists; concurrent callers get one row."""
    await session.execute(
        insert(Payment).values(**values).on_conflict_do_nothing(index_elements=["order_id"])
    )


async def lock(session: AsyncSession, payment_id: uuid.UUID) -> Payment | None:
    """The payment, re-read and row-locked until the transaction ends (serialises its ledger)."""
    result = await session.execute(
        select(Payment)
        .where(Payment.id == payment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return result.scalar_one_or_none()


async def find_for_report(
    session: AsyncSession,
    *,
    provider_payment_id: str | None,
    invoice_id: str | None,
    order_id: str | None,
    parent_payment_id: str | None = None,
    lock_if_ours: bool = False,
) -> tuple[Payment | None, str]:
    """The payment a provider report is about, and which key found it.

    Most specific key first: a payment id we learned, its parent (a repeated deposit), then our
    invoice, then our order id
    (the provider echoes it back; a payment made outside the invoice only has this one).
    With ``lock_if_ours`` a payment found by payment or invoice id comes row-locked (as from
    ``lock``); one found by order id never does: that row may still be held by the responder
    storing our invoice, and the caller decides what to do about it first.
    """

    def by(condition: ColumnElement[bool]) -> Select[Payment]:
        query = select(Payment).where(condition)
        if lock_if_ours:
            query = query.with_for_update().execution_options(populate_existing=True)
        return query

    if provider_payment_id:
        found = await session.execute(by(Payment.provider_payment_id == provider_payment_id))
        if (payment := found.scalars().first()) is not None:
            return payment, "payment_id"
        known = select(ProviderPayment.payment_id).where(
            ProviderPayment.provider_payment_id == provider_payment_id
        )
        found = await session.execute(by(Payment.id.in_(known.scalar_subquery())))
        if (payment := found.scalars().first()) is not None:
            return payment, "payment_id"
    if parent_payment_id:
        # A repeated or wrong-asset deposit: a new payment id naming one we know.
        parent = select(ProviderPayment.payment_id).where(
            ProviderPayment.provider_payment_id == parent_payment_id
        )
        found = await session.execute(
            by(
                (Payment.provider_payment_id == parent_payment_id)
                | Payment.id.in_(parent.scalar_subquery())
            )
        )
        if (payment := found.scalars().first()) is not None:
            return payment, "parent_payment_id"
    if invoice_id:
        found = await session.execute(by(Payment.invoice_id == invoice_id))
        if (payment := found.scalars().first()) is not None:
            return payment, "invoice_id"
    if order_id:
        payment = await get_by_order(session, order_id)
        if payment is not None:
            return payment, "order_id"
    return None, ""


def append_transition(session: AsyncSession, entry: PaymentTransition) -> None:
    session.add(entry)


async def transitions(session: AsyncSession, payment_id: uuid.UUID) -> Sequence[PaymentTransition]:
    result = await session.execute(
        select(PaymentTransition)
        .where(PaymentTransition.payment_id == payment_id)
        .order_by(PaymentTransition.seq)
    )
    return result.scalars().all()


async def claim_due(session: AsyncSession, *, now: datetime, limit: int) -> Sequence[Payment]:
    """Payments due for a reconciliation check, locked so another replica skips them.

    The caller moves their ``next_check_at`` forward in the same transaction (a lease): once
    committed, the other replica no longer sees them as due, without holding locks during the
    provider calls.
    """
    result = await session.execute(
        select(Payment)
        .where(Payment.next_check_at.is_not(None), Payment.next_check_at <= now)
        .order_by(Payment.next_check_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return result.scalars().all()


async def count_due(session: AsyncSession, *, now: datetime) -> int:
    result = await session.execute(
        select(func.count())
        .select_from(Payment)
        .where(Payment.next_check_at.is_not(None), Payment.next_check_at <= now)
    )
    return int(result.scalar_one())


# --- provider payments, attention, operator actions ---------------------------------------


async def provider_payments(session: AsyncSession, payment_id: uuid.UUID) -> list[ProviderPayment]:
    """Every provider payment of the order's payment (the caller holds the payment's lock)."""
    result = await session.execute(
        select(ProviderPayment)
        .where(ProviderPayment.payment_id == payment_id)
        .order_by(ProviderPayment.id)
        .execution_options(populate_existing=True)
    )
    return list(result.scalars().all())


async def owner_of_provider_payment(
    session: AsyncSession, provider_payment_id: str
) -> uuid.UUID | None:
    result = await session.execute(
        select(ProviderPayment.payment_id).where(
            ProviderPayment.provider_payment_id == provider_payment_id
        )
    )
    owner = result.scalar_one_or_none()
    if owner is not None:
        return owner
    result = await session.execute(
        select(Payment.id).where(Payment.provider_payment_id == provider_payment_id)
    )
    return result.scalars().first()


def add_provider_payment(session: AsyncSession, row: ProviderPayment) -> None:
    session.add(row)


async def claim_attention(
    session: AsyncSession, *, payment_id: uuid.UUID, key: str, kind: str
) -> bool:
    """True the first time this (payment, key) is raised; False for every repeat."""
    result = await session.execute(
        insert(PaymentAttention)
        .values(payment_id=payment_id, key=key[:120], kind=kind[:40])
        .on_conflict_do_nothing(constraint="uq_payment_attention_key")
        .returning(PaymentAttention.id)
    )
    return result.scalar_one_or_none() is not None


async def get_action(session: AsyncSession, action_id: uuid.UUID) -> PaymentAction | None:
    return await session.get(PaymentAction, action_id)


def add_action(session: AsyncSession, action: PaymentAction) -> None:
    session.add(action)


async def lock_by_order(session: AsyncSession, order_id: str) -> Payment | None:
    result = await session.execute(
        select(Payment)
        .where(Payment.order_id == order_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return result.scalar_one_or_none()


async def provider_payment_state(
    session: AsyncSession, provider_payment_id: str
) -> tuple[str, int | None] | None:
    """(status, provider updated_at ms) of a provider payment we hold, without locking."""
    result = await session.execute(
        select(ProviderPayment.status, ProviderPayment.provider_updated_at_ms).where(
            ProviderPayment.provider_payment_id == provider_payment_id
        )
    )
    row = result.first()
    return (row[0], row[1]) if row is not None else None
