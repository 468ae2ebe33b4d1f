"""Message boundaries of the worker: durable consumers of orders events and the revoke responder.

Each consumer runs its handler in the transaction that also records the event in the inbox
(see ``shared.messaging.consumer``), and that transaction is the commit boundary.
"""

from __future__ import annotations

from typing import Any

from shared.contracts.fulfillment import RevokeGrantsReply, RevokeGrantsRequest
from shared.contracts.orders import (
    OrderExpired,
    OrderFailed,
    OrderPaid,
    OrderRefunded,
    OrderUnderpaid,
)
from shared.db import is_connection_error
from shared.messaging import Delivery, durable_consumer
from shared.messaging.rpc import register_responder
from shared.observability import get_logger
from shared.runtime import ServiceContext
from sqlalchemy.ext.asyncio import AsyncSession

from fulfillment import domain, service
from fulfillment.errors import UnknownOrderError
from fulfillment.models import Inbox
from fulfillment.service import Fulfillment

log = get_logger(__name__)

DURABLE_PAID = "fulfillment-paid"
DURABLE_UNDERPAID = "fulfillment-underpaid"
DURABLE_FAILED = "fulfillment-failed"
DURABLE_EXPIRED = "fulfillment-expired"
DURABLE_REFUNDED = "fulfillment-refunded"


def register(ctx: ServiceContext, f: Fulfillment) -> list[Any]:
    async def on_paid(session: AsyncSession, event: OrderPaid, _: Delivery) -> None:
        await service.deliver_paid_order(session, f, event)

    async def on_underpaid(session: AsyncSession, event: OrderUnderpaid, _: Delivery) -> None:
        await service.queue_notice(
            session,
            event,
            domain.TEMPLATE_UNDERPAID,
            {
                "actually_paid": service.amount_or_none(event.actually_paid),
                "pay_amount": service.amount_or_none(event.pay_amount),
                "pay_currency": (event.pay_currency or "").upper() or None,
                "total": service.amount_or_none(event.total),
                "currency": event.currency,
            },
        )

    async def on_failed(session: AsyncSession, event: OrderFailed, _: Delivery) -> None:
        await service.queue_notice(
            session, event, domain.TEMPLATE_PAYMENT_FAILED, {"reason": event.reason[:200]}
        )

    async def on_expired(session: AsyncSession, event: OrderExpired, _: Delivery) -> None:
        await service.queue_notice(session, event, domain.TEMPLATE_PAYMENT_EXPIRED, {})

    async def on_refunded(session: AsyncSession, event: OrderRefunded, _: Delivery) -> None:
        await service.withdraw_refunded_order(session, event)

    common: dict[str, Any] = {
        "session_factory": ctx.sessions,
        "inbox": Inbox,
        "policy": ctx.consumer_policy,
    }
    subscribers = [
        durable_consumer(
            ctx.broker,
            subject=OrderPaid.SUBJECT,
            durable=DURABLE_PAID,
            event_type=OrderPaid,
            handler=on_paid,
            **common,
        ),
        durable_consumer(
            ctx.broker,
            subject=OrderUnderpaid.SUBJECT,
            durable=DURABLE_UNDERPAID,
            event_type=OrderUnderpaid,
            handler=on_underpaid,
            **common,
        ),
        durable_consumer(
            ctx.broker,
            subject=OrderFailed.SUBJECT,
            durable=DURABLE_FAILED,
            event_type=OrderFailed,
            handler=on_failed,
            **common,
        ),
        durable_consumer(
            ctx.broker,
            subject=OrderExpired.SUBJECT,
            durable=DURABLE_EXPIRED,
            event_type=OrderExpired,
            handler=on_expired,
            **common,
        ),
        durable_consumer(
            ctx.broker,
            subject=OrderRefunded.SUBJECT,
            durable=DURABLE_REFUNDED,
            event_type=OrderRefunded,
            handler=on_refunded,
            **common,
        ),
    ]

    async def on_revoke(request: RevokeGrantsRequest) -> RevokeGrantsReply:
        try:
            async with ctx.sessions() as session, session.begin():
                revoked = await service.revoke_order_grants(session, request)
        except UnknownOrderError:
            return RevokeGrantsReply(
                ok=False,
                error_code="unknown_order",
                error_message=f"order {request.order_id} has no delivery to revoke",
            )
        except Exception as exc:
            if is_connection_error(exc):
                return RevokeGrantsReply(
                    ok=False, error_code="unavailable", error_message="database unavailable"
                )
            raise
        return RevokeGrantsReply(ok=True, revoked=revoked)

    subscribers.append(
        register_responder(ctx.broker, RevokeGrantsRequest, on_revoke, queue="fulfillment")
    )
    return subscribers
