"""The worker's consumers: payment outcomes and deliveries move orders forward."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from shared.contracts.fulfillment import OrderDelivered
from shared.contracts.payments import PaymentStatusChanged
from shared.messaging import Delivery, durable_consumer
from shared.runtime import ServiceContext
from sqlalchemy.ext.asyncio import AsyncSession

from orders import service
from orders.models import Inbox

PAYMENTS_DURABLE = "orders-payments"
FULFILLMENT_DURABLE = "orders-fulfillment"


async def on_payment_status(
    session: AsyncSession, event: PaymentStatusChanged, delivery: Delivery
) -> None:
    await service.apply_payment_status(session, event, now=datetime.now(UTC))


async def on_order_delivered(
    session: AsyncSession, event: OrderDelivered, delivery: Delivery
) -> None:
    await service.apply_delivery(session, event, now=datetime.now(UTC))


def register(ctx: ServiceContext) -> None:
    """Attach both durable consumers to the context's broker (before it starts)."""
    # Both handlers only read and write this service's tables: events handled together share a
    # transaction (GroupCommit); one that fails sends its batch back to one-by-one handling.
    policy = replace(ctx.consumer_policy, group_commit=True)
    durable_consumer(
        ctx.broker,
        subject=PaymentStatusChanged.SUBJECT,
        durable=PAYMENTS_DURABLE,
        event_type=PaymentStatusChanged,
        handler=on_payment_status,
        session_factory=ctx.sessions,
        inbox=Inbox,
        policy=policy,
        description="payment outcomes move orders to paid / underpaid / failed / expired",
    )
    durable_consumer(
        ctx.broker,
        subject=OrderDelivered.SUBJECT,
        durable=FULFILLMENT_DURABLE,
        event_type=OrderDelivered,
        handler=on_order_delivered,
        session_factory=ctx.sessions,
        inbox=Inbox,
        policy=policy,
        description="deliveries move paid orders to fulfilled",
    )
