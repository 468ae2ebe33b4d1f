"""Every query of the orders schema. Functions take the caller's session; none commits."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from orders.domain import NO_PAYMENT_YET, OrderStatus
from orders.models import IdempotencyKey, Order, OrderHistory, OrderItem, Product


async def list_active_products(session: AsyncSession) -> Sequence[Product]:
    result = await session.scalars(
        select(Product).where(Product.active.is_(True)).order_by(Product.title, Product.sku)
    )
    return result.all()


async def products_by_sku(session: AsyncSession, skus: Iterable[str]) -> dict[str, Product]:
    wanted = sorted(set(skus))
    if not wanted:
        return {}
    result = await session.scalars(select(Product).where(Product.sku.in_(wanted)))
    return {p.sku: p for p in result.all()}


async def get_order(
    session: AsyncSession, order_id: uuid.UUID, *, for_update: bool = False
) -> Order | None:
    stmt = select(Order).where(Order.id == order_id)
    if for_update:
        # populate_existing: a row read earlier in this session must show the locked version.
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    result: Order | None = (await session.scalars(stmt)).first()
    return result


async def order_items(session: AsyncSession, order_id: uuid.UUID) -> Sequence[OrderItem]:
    result = await session.scalars(
        select(OrderItem).where(OrderItem.order_id == order_id).order_by(OrderItem.line_no)
    )
    return result.all()


async def order_history(session: AsyncSession, order_id: uuid.UUID) -> Sequence[OrderHistory]:
    result = await session.scalars(
        select(OrderHistory).where(OrderHistory.order_id == order_id).order_by(OrderHistory.version)
    )
    return result.all()


async def add_order(session: AsyncSession, order: Order, items: Sequence[OrderItem]) -> None:
    session.add(order)
    await session.flush()  # the order row first: items and history reference it
    session.add_all(items)
    await session.flush()


async def add_history(session: AsyncSession, entry: OrderHistory) -> None:
    session.add(entry)
    await session.flush()


async def find_idempotency_key(session: AsyncSession, key: str) -> IdempotencyKey | None:
    row: IdempotencyKey | None = await session.get(IdempotencyKey, key)
    return row


async def claim_idempotency_key(
    session: AsyncSession, *, key: str, request_hash: bytes, order_id: uuid.UUID, token_seed: bytes
) -> bool:
    """True when this transaction owns ``key``.

    A concurrent request with the same key blocks on the primary key until the owner's
    transaction ends, then sees the committed row (False) or, if the owner rolled back, wins.
    """
    stmt = (
        insert(IdempotencyKey)
        .values(key=key, request_hash=request_hash, order_id=order_id, token_seed=token_seed)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(IdempotencyKey.key)
    )
    return (await session.execute(stmt)).first() is not None


async def store_idempotent_response(
    session: AsyncSession, key: str, response: dict[str, Any]
) -> None:
    await session.execute(
        update(IdempotencyKey).where(IdempotencyKey.key == key).values(response=response)
    )


async def purge_idempotency_keys(session: AsyncSession, older_than: datetime) -> int:
    result = await session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.created_at < older_than)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def lock_orders_due_for_expiry(
    session: AsyncSession, *, waiting_before: datetime, limit: int
) -> Sequence[Order]:
    """Waiting orders past their deadline with no payment under way, locked for this txn.

    SKIP LOCKED: two worker replicas take disjoint batches, and an order a payment event is
    updating right now is skipped rather than waited for (the next run sees its new state).
    """
    result = await session.scalars(
        select(Order)
        .where(
            Order.status == OrderStatus.AWAITING_PAYMENT.value,
            Order.awaiting_since < waiting_before,
            or_(Order.payment_status.is_(None), Order.payment_status.in_(NO_PAYMENT_YET)),
        )
        .order_by(Order.awaiting_since)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return result.all()


async def count_orders(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Order)) or 0)
