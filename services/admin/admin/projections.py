"""Read models from events. Every projection is idempotent and order-independent on its own
(upserts keyed by entity id with a newest-version guard, history rows keyed by event id), so the
inbox guard is a second line of defence and ``rebuild`` can replay without it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from shared.contracts import subjects
from shared.contracts.envelope import Event
from shared.contracts.fulfillment import EmailSent, GrantsRevoked, OrderDelivered
from shared.contracts.orders import (
    OrderCreated,
    OrderEvent,
    OrderExpired,
    OrderFailed,
    OrderFulfilled,
    OrderPaid,
    OrderRefunded,
    OrderUnderpaid,
)
from shared.contracts.payments import PaymentAttentionRaised, PaymentStatusChanged
from shared.contracts.webhooks import IpnReceived, IpnRejected
from shared.messaging import DeadLetter, Delivery
from shared.observability import strip_secret_headers
from sqlalchemy.ext.asyncio import AsyncSession

from admin import repository as repo
from admin.domain import accepted_log_id, rejected_log_id, short_event_type

Project = Callable[[AsyncSession, Any, Delivery], Awaitable[None]]


@dataclass(frozen=True)
class Projection:
    event_type: type[Event]
    apply: Project


async def project_payment(
    session: AsyncSession, event: PaymentStatusChanged, delivery: Delivery
) -> None:
    await repo.upsert_payment(
        session,
        {
            "payment_id": event.payment_id,
            "order_id": event.order_id,
            "provider": event.provider,
            "provider_payment_id": event.provider_payment_id,
            "invoice_id": event.invoice_id,
            "status": event.status,
            "previous_status": event.previous_status,
            "is_final": event.is_final,
            "source": event.source,
            "version": event.version,
            "price_amount": event.price_amount,
            "price_currency": event.price_currency,
            "pay_amount": event.pay_amount,
            "actually_paid": event.actually_paid,
            "pay_currency": event.pay_currency,
            "surplus": event.surplus,
            "note": event.note,
            # The first event seen may not be the first one published: LEAST() settles it.
            "created_at": event.occurred_at,
            "updated_at": event.occurred_at,
            "last_event_id": event.event_id,
        },
    )
    await repo.insert_payment_transition(
        session,
        {
            "event_id": event.event_id,
            "payment_id": event.payment_id,
            "order_id": event.order_id,
            "provider_payment_id": event.provider_payment_id,
            "invoice_id": event.invoice_id,
            "previous_status": event.previous_status,
            "status": event.status,
            "source": event.source,
            "version": event.version,
            "is_final": event.is_final,
            "actually_paid": event.actually_paid,
            "note": event.note,
            "occurred_at": event.occurred_at,
            "causation_id": event.causation_id,
            "correlation_id": event.correlation_id,
        },
    )


def _cut(value: str | None, length: int) -> str | None:
    return value[:length] if value is not None else None


async def project_attention(
    session: AsyncSession, event: PaymentAttentionRaised, delivery: Delivery
) -> None:
    """One row per ``(payment_id, key)``; the earliest copy wins, so a redelivery or a replay
    changes nothing. Operators' decisions live in ``attention_decision`` (not rebuilt)."""
    await repo.upsert_attention(
        session,
        {
            "payment_id": event.payment_id,
            "key": event.key,
            "order_id": event.order_id,
            "kind": event.kind,
            "detail": event.detail,
            # Unbounded in the contract: cut to the columns rather than dead-letter the event.
            "provider_payment_id": _cut(event.provider_payment_id, 64),
            "parent_payment_id": _cut(event.parent_payment_id, 64),
            "provider_status": event.provider_status,
            "payment_status": _cut(event.payment_status, 32),
            "amount": event.amount,
            "currency": _cut(event.currency, 16),
            "raised_at": event.occurred_at,
            "event_id": event.event_id,
        },
    )


def _order_extras(event: OrderEvent) -> dict[str, Any]:
    """What this kind of order event adds beyond the common state."""
    extras: dict[str, Any] = {}
    if isinstance(event, OrderCreated | OrderPaid):
        extras["items"] = [line.model_dump(mode="json") for line in event.items]
    if isinstance(event, OrderPaid):
        extras["payment_id"] = event.payment_id
    if isinstance(event, OrderFailed):
        extras["reason"] = event.reason
    if isinstance(event, OrderRefunded):
        extras["payment_id"] = event.payment_id
        extras["reason"] = event.reason or None
    if isinstance(event, OrderUnderpaid):
        extras["actually_paid"] = event.actually_paid
        extras["pay_amount"] = event.pay_amount
        extras["pay_currency"] = event.pay_currency
    return extras


async def project_order(session: AsyncSession, event: OrderEvent, delivery: Delivery) -> None:
    extras = _order_extras(event)
    created_at = event.created_at if isinstance(event, OrderCreated) else event.occurred_at
    row: dict[str, Any] = {
        "order_id": event.order_id,
        "status": event.status,
        "version": event.version,
        "email": event.email,
        "total": event.total,
        "currency": event.currency,
        "items": None,
        "payment_id": None,
        "reason": None,
        "actually_paid": None,
        "pay_amount": None,
        "pay_currency": None,
        "created_at": created_at,
        "updated_at": event.occurred_at,
        "last_event_id": event.event_id,
        **extras,
    }
    await repo.upsert_order(session, row)
    detail = {k: v for k, v in extras.items() if k != "items" and v is not None}
    await repo.insert_order_event(
        session,
        {
            "event_id": event.event_id,
            "order_id": event.order_id,
            "event_type": short_event_type(event.SUBJECT),
            "status": event.status,
            "version": event.version,
            "occurred_at": event.occurred_at,
            "detail": {k: str(v) for k, v in detail.items()},
        },
    )


async def project_ipn_received(
    session: AsyncSession, event: IpnReceived, delivery: Delivery
) -> None:
    await repo.record_webhook_publication(
        session,
        {
            "event_id": event.event_id,
            "webhook_log_id": event.webhook_log_id,
            "replay": event.replay,
            "replayed_by": event.replayed_by,
            "replay_reason": event.replay_reason,
            "occurred_at": event.occurred_at,
        },
    )
    # Forward-compatible: a gateway that counts duplicate deliveries may report the count.
    reported = getattr(event, "received_count", None)
    await repo.upsert_accepted_webhook(
        session,
        {
            "id": accepted_log_id(event.webhook_log_id),
            "accepted": True,
            "webhook_log_id": event.webhook_log_id,
            "provider": event.provider,
            "dedup_key": event.dedup_key[:300],
            "payment_id": event.payment_id,
            "invoice_id": event.invoice_id,
            "order_id": event.order_id,
            "payment_status": event.payment_status,
            "price_amount": event.price_amount,
            "price_currency": event.price_currency,
            "pay_amount": event.pay_amount,
            "actually_paid": event.actually_paid,
            "pay_currency": event.pay_currency,
            "provider_updated_at": event.provider_updated_at,
            "received_at": event.received_at,
            "raw_body": event.raw_body,
            # Already stripped by the gateway; stripped again so no path can store a secret.
            "headers": strip_secret_headers(event.headers.items()),
            "payload": event.payload,
            "received_count": 1,
            "replay_count": 0,
            "first_event_id": event.event_id,
        },
        reported if isinstance(reported, int) else None,
    )


async def project_ipn_rejected(
    session: AsyncSession, event: IpnRejected, delivery: Delivery
) -> None:
    await repo.insert_rejected_webhook(
        session,
        {
            "id": rejected_log_id(event.failure_id, event.event_id),
            "accepted": False,
            "failure_id": event.failure_id,
            "provider": event.provider,
            "received_at": event.received_at,
            "reason": event.reason,
            "source_ip": event.source_ip,
            "body_excerpt": event.body_excerpt,
            "dropped_since_last": event.dropped_since_last,
            "headers": {},
            "payload": {},
            "first_event_id": event.event_id,
        },
    )


async def project_delivered(
    session: AsyncSession, event: OrderDelivered, delivery: Delivery
) -> None:
    await repo.insert_delivery(
        session,
        {
            "delivery_id": event.delivery_id,
            "order_id": event.order_id,
            "item_count": event.item_count,
            "link_expires_at": event.link_expires_at,
            "delivered_at": event.occurred_at,
            "event_id": event.event_id,
        },
    )


async def project_email(session: AsyncSession, event: EmailSent, delivery: Delivery) -> None:
    await repo.insert_email(
        session,
        {
            "event_id": event.event_id,
            "order_id": event.order_id,
            "template": event.template,
            "status": event.status,
            "attempts": event.attempts,
            "recipient_masked": event.recipient_masked,
            "error": event.error,
            "occurred_at": event.occurred_at,
        },
    )


async def project_revoked(session: AsyncSession, event: GrantsRevoked, delivery: Delivery) -> None:
    await repo.insert_revocation(
        session,
        {
            "event_id": event.event_id,
            "order_id": event.order_id,
            "revoked": event.revoked,
            "operator_id": event.operator_id,
            "reason": event.reason,
            "occurred_at": event.occurred_at,
        },
    )


async def project_dead_letter(session: AsyncSession, letter: DeadLetter, dl_sequence: int) -> None:
    """Keyed by (consumer, original stream sequence): the same failure parked twice is one row."""
    await repo.insert_dead_letter(
        session,
        {
            "consumer": letter.consumer,
            "stream_sequence": letter.stream_sequence,
            "dl_sequence": dl_sequence,
            "original_subject": letter.original_subject,
            "deliveries": letter.deliveries,
            "error": letter.error,
            "event_id": letter.event_id,
            "body": letter.body,
            "dead_lettered_at": letter.dead_lettered_at,
        },
    )


PROJECTIONS: dict[str, Projection] = {
    subjects.PAYMENT_STATUS_CHANGED: Projection(PaymentStatusChanged, project_payment),
    subjects.PAYMENT_ATTENTION_RAISED: Projection(PaymentAttentionRaised, project_attention),
    subjects.ORDER_CREATED: Projection(OrderCreated, project_order),
    subjects.ORDER_PAID: Projection(OrderPaid, project_order),
    subjects.ORDER_UNDERPAID: Projection(OrderUnderpaid, project_order),
    subjects.ORDER_FAILED: Projection(OrderFailed, project_order),
    subjects.ORDER_EXPIRED: Projection(OrderExpired, project_order),
    subjects.ORDER_FULFILLED: Projection(OrderFulfilled, project_order),
    subjects.ORDER_REFUNDED: Projection(OrderRefunded, project_order),
    subjects.IPN_RECEIVED: Projection(IpnReceived, project_ipn_received),
    subjects.IPN_REJECTED: Projection(IpnRejected, project_ipn_rejected),
    subjects.ORDER_DELIVERED: Projection(OrderDelivered, project_delivered),
    subjects.EMAIL_SENT: Projection(EmailSent, project_email),
    subjects.GRANTS_REVOKED: Projection(GrantsRevoked, project_revoked),
}

DEAD_LETTER_SUBJECT = "deadletter.>"
