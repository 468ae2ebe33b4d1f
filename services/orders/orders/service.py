"""Use cases of the orders context. They take the boundary's session and never commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter
from shared.contracts.fulfillment import OrderDelivered
from shared.contracts.orders import (
    OrderCreated,
    OrderEvent,
    OrderExpired,
    OrderFailed,
    OrderFulfilled,
    OrderLine,
    OrderPaid,
    OrderRefunded,
    OrderUnderpaid,
)
from shared.contracts.payments import CreateInvoiceReply, CreateInvoiceRequest, PaymentStatusChanged
from shared.messaging import NotYetVisibleError, add_to_outbox
from shared.observability import get_logger
from sqlalchemy.ext.asyncio import AsyncSession

from orders import repository as repo
from orders.domain import (
    CHECKOUT_STATUSES,
    CatalogueEntry,
    OrderStatus,
    PaymentDecision,
    PricingError,
    RequestedLine,
    customer_message,
    decide_payment,
    failure_reason,
    hash_token,
    mask_email,
    new_token,
    new_token_seed,
    price_order,
    request_fingerprint,
    token_from_seed,
    token_matches,
)
from orders.errors import (
    CheckoutNotAllowedError,
    IdempotencyKeyReusedError,
    InvalidOrderError,
    OrderNotFoundError,
    PaymentProviderError,
)
from orders.models import Order, OrderHistory, OrderItem, Outbox, Product
from orders.schemas import (
    CheckoutOut,
    CreateOrderIn,
    HistoryOut,
    OrderCreatedOut,
    OrderItemOut,
    OrderOut,
    ProductOut,
)

log = get_logger(__name__)

TRANSITIONS = Counter("orders_transitions_total", "Order state transitions", ["status"])


# --- catalogue -------------------------------------------------------------------------------


async def list_products(session: AsyncSession) -> list[ProductOut]:
    products = await repo.list_active_products(session)
    return [
        ProductOut(
            sku=p.sku, title=p.title, description=p.description, price=p.price, currency=p.currency
        )
        for p in products
    ]


def _catalogue_entry(p: Product) -> CatalogueEntry:
    return CatalogueEntry(
        sku=p.sku, title=p.title, price=p.price, currency=p.currency, active=p.active
    )


# --- creating an order -----------------------------------------------------------------------


@dataclass(frozen=True)
class CreateOrderResult:
    order: OrderCreatedOut
    replayed: bool  # True: answered from an earlier request with the same Idempotency-Key


async def create_order(
    session: AsyncSession,
    body: CreateOrderIn,
    *,
    pepper: bytes,
    idempotency_key: str | None,
    correlation_id: str,
    now: datetime,
) -> CreateOrderResult:
    fingerprint = request_fingerprint(body.model_dump(mode="json"))
    if idempotency_key is not None:
        earlier = await _replay(session, idempotency_key, fingerprint, pepper)
        if earlier is not None:
            return earlier

    products = await repo.products_by_sku(session, (line.sku for line in body.items))
    try:
        priced = price_order(
            [RequestedLine(line.sku, line.quantity) for line in body.items],
            {sku: _catalogue_entry(p) for sku, p in products.items()},
        )
    except PricingError as exc:
        raise InvalidOrderError(exc.problems) from None

    order_id = uuid.uuid4()
    if idempotency_key is not None:
        seed = new_token_seed()
        claimed = await repo.claim_idempotency_key(
            session,
            key=idempotency_key,
            request_hash=fingerprint,
            order_id=order_id,
            token_seed=seed,
        )
        if not claimed:  # a concurrent twin committed first: answer with its result
            earlier = await _replay(session, idempotency_key, fingerprint, pepper)
            if earlier is None:  # pragma: no cover - the twin's row is committed by now
                raise RuntimeError("idempotency key vanished while claimed")
            return earlier
        token = token_from_seed(pepper, seed)
    else:
        token = new_token()

    order = Order(
        id=order_id,
        email=str(body.email),
        status=OrderStatus.CREATED.value,
        version=1,
        total=priced.total,
        currency=priced.currency,
        token_hash=hash_token(pepper, token),
        correlation_id=correlation_id,
        created_at=now,
        updated_at=now,
    )
    items = [
        OrderItem(
            order_id=order_id,
            line_no=i,
            sku=line.sku,
            title=line.title,
            quantity=line.quantity,
            unit_price=line.unit_price,
            line_total=line.line_total,
        )
        for i, line in enumerate(priced.lines)
    ]
    await repo.add_order(session, order, items)
    await repo.add_history(
        session,
        OrderHistory(
            order_id=order_id,
            version=1,
            from_status=None,
            status=OrderStatus.CREATED.value,
            cause_event_id=None,
            note="order placed",
            at=now,
        ),
    )
    await add_to_outbox(
        session,
        Outbox,
        OrderCreated(
            **_event_fields(order),
            items=_lines(items),
            created_at=now,
            correlation_id=correlation_id,
        ),
    )
    TRANSITIONS.labels(OrderStatus.CREATED.value).inc()

    result = OrderCreatedOut(
        order_id=str(order_id),
        order_token=token,
        status=order.status,
        total=order.total,
        currency=order.currency,
        items=[_item_out(i) for i in items],
        created_at=now,
    )
    if idempotency_key is not None:
        # Everything but the token: a retry re-derives that from the seed.
        await repo.store_idempotent_response(
            session, idempotency_key, result.model_dump(mode="json", exclude={"order_token"})
        )
    log.info(
        "order_created",
        order_id=str(order_id),
        total=str(order.total),
        currency=order.currency,
        lines=len(items),
    )
    return CreateOrderResult(result, replayed=False)


async def _replay(
    session: AsyncSession, key: str, fingerprint: bytes, pepper: bytes
) -> CreateOrderResult | None:
    row = await repo.find_idempotency_key(session, key)
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise IdempotencyKeyReusedError()
    stored: dict[str, Any] = dict(row.response or {})
    stored["order_token"] = token_from_seed(pepper, row.token_seed)
    return CreateOrderResult(OrderCreatedOut.model_validate(stored), replayed=True)


# --- reading an order ------------------------------------------------------------------------


def parse_order_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise OrderNotFoundError() from None


async def _authorised_order(
    session: AsyncSession,
    order_id: str,
    token: str | None,
    pepper: bytes,
    *,
    for_update: bool = False,
) -> Order:
    """The order, if the token opens it. Unknown id and wrong token look exactly alike."""
    order = await repo.get_order(session, parse_order_id(order_id), for_update=for_update)
    if order is None:
        # Same work as a real comparison, so timing does not tell "unknown" from "wrong".
        token_matches(pepper, token or "", b"\x00" * 32)
        raise OrderNotFoundError()
    if not token_matches(pepper, token, order.token_hash):
        raise OrderNotFoundError()
    return order


async def get_order(
    session: AsyncSession, order_id: str, token: str | None, *, pepper: bytes
) -> OrderOut:
    order = await _authorised_order(session, order_id, token, pepper)
    items = await repo.order_items(session, order.id)
    history = await repo.order_history(session, order.id)
    status = OrderStatus(order.status)
    return OrderOut(
        order_id=str(order.id),
        status=status.value,
        message=customer_message(status, order.payment_status, order.failure_reason),
        payment_status=order.payment_status,
        items=[_item_out(i) for i in items],
        total=order.total,
        currency=order.currency,
        email=mask_email(order.email),
        payment_url=order.payment_url,
        failure_reason=order.failure_reason,
        version=order.version,
        created_at=order.created_at,
        updated_at=order.updated_at,
        history=[
            HistoryOut(
                status=h.status,
                from_status=h.from_status,
                at=h.at,
                cause_event_id=str(h.cause_event_id) if h.cause_event_id else None,
                note=h.note,
            )
            for h in history
        ],
    )


# --- checkout --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckoutPlan:
    """Either the invoice we already have, or the request to send to payments."""

    existing: CheckoutOut | None = None
    request: CreateInvoiceRequest | None = None


async def plan_checkout(
    session: AsyncSession,
    order_id: str,
    token: str | None,
    *,
    pepper: bytes,
    storefront_url: str,
) -> CheckoutPlan:
    order = await _authorised_order(session, order_id, token, pepper)
    if order.status == OrderStatus.AWAITING_PAYMENT and order.payment_url:
        return CheckoutPlan(existing=_checkout_out(order))
    if OrderStatus(order.status) not in CHECKOUT_STATUSES:
        raise CheckoutNotAllowedError(order.status)
    items = await repo.order_items(session, order.id)
    back = f"{storefront_url.rstrip('/')}/orders/{order.id}"
    return CheckoutPlan(
        request=CreateInvoiceRequest(
            order_id=str(order.id),
            price_amount=order.total,
            price_currency=order.currency,
            description=_describe(items),
            success_url=back,
            cancel_url=back,
            correlation_id=order.correlation_id,
        )
    )


async def record_invoice(
    session: AsyncSession, order_id: str, reply: CreateInvoiceReply, *, now: datetime
) -> CheckoutOut:
    """Store the invoice payments created and move the order to awaiting_payment."""
    if not reply.ok:
        raise PaymentProviderError(reply.error_code, reply.error_message, reply.retryable)
    if not reply.invoice_url:
        raise PaymentProviderError(
            "no_invoice_url", "payments answered without an invoice URL", retryable=True
        )
    order = await repo.get_order(session, parse_order_id(order_id), for_update=True)
    if order is None:  # pragma: no cover - it was read a moment ago and orders are never deleted
        raise OrderNotFoundError()
    if reply.price_amount is not None and reply.price_amount != order.total:
        raise PaymentProviderError(
            "amount_mismatch",
            f"the invoice is for {reply.price_amount}, the order totals {order.total}",
            retryable=False,
        )
    status = OrderStatus(order.status)
    if status not in CHECKOUT_STATUSES:  # a payment event settled it while we were asking
        raise CheckoutNotAllowedError(order.status)
    if order.payment_url is None:
        order.payment_url = reply.invoice_url
        order.invoice_id = reply.invoice_id
        if reply.payment_id and order.payment_id is None:
            order.payment_id = _normal_id(reply.payment_id)
        order.updated_at = now
    if status is OrderStatus.CREATED:
        await _transition(
            session,
            order,
            OrderStatus.AWAITING_PAYMENT,
            now=now,
            cause_event_id=None,
            note=f"checkout: invoice {reply.invoice_id}",
        )
    await session.flush()
    log.info("order_checkout", order_id=str(order.id), invoice_id=order.invoice_id)
    return _checkout_out(order)


def _checkout_out(order: Order) -> CheckoutOut:
    assert order.payment_url is not None
    return CheckoutOut(
        order_id=str(order.id),
        payment_url=order.payment_url,
        amount=order.total,
        currency=order.currency,
        status=order.status,
        invoice_id=order.invoice_id,
    )


def _describe(items: Sequence[OrderItem]) -> str:
    text = ", ".join(f"{i.quantity} x {i.title}" for i in items)
    return text if len(text) <= 200 else text[:199] + "…"


# --- events from payments and fulfillment ----------------------------------------------------


async def apply_payment_status(
    session: AsyncSession, event: PaymentStatusChanged, *, now: datetime
) -> PaymentDecision:
    order_uuid = uuid.UUID(event.order_id)  # not a uuid: not our order id → retries, dead letter
    order = await repo.get_order(session, order_uuid, for_update=True)
    if order is None:
        raise NotYetVisibleError(f"order {event.order_id} not found", retry_after=2.0)
    payment_id = _normal_id(str(event.payment_id))
    decision = decide_payment(
        current=OrderStatus(order.status),
        known_payment_id=order.payment_id,
        known_version=order.payment_status_version,
        event_payment_id=payment_id,
        event_status=event.status,
        event_version=event.version,
    )
    log.info(
        "payment_status_applied",
        order_id=event.order_id,
        payment_status=event.status,
        payment_version=event.version,
        order_status=order.status,
        new_status=decision.new_status,
        why=decision.why,
    )
    if decision.record:
        order.payment_status = event.status
        order.payment_status_version = event.version
        order.payment_id = payment_id
        if event.invoice_id and order.invoice_id is None:
            order.invoice_id = event.invoice_id
        order.updated_at = now
    target = decision.new_status
    if target is None:
        return decision
    cause = event.caused()
    note = f"payment {event.status} (v{event.version}, {event.source})"
    previous = order.status
    if target in (OrderStatus.FAILED, OrderStatus.REFUNDED):
        order.failure_reason = failure_reason(event.status, event.note)
    await _transition(session, order, target, now=now, cause_event_id=event.event_id, note=note)
    fields = _event_fields(order)
    out: OrderEvent | None
    if target is OrderStatus.PAID:
        items = await repo.order_items(session, order.id)
        out = OrderPaid(**fields, **cause, items=_lines(items), payment_id=order.payment_id)
    elif target is OrderStatus.UNDERPAID:
        out = OrderUnderpaid(
            **fields,
            **cause,
            actually_paid=event.actually_paid,
            pay_amount=event.pay_amount,
            pay_currency=event.pay_currency,
        )
    elif target is OrderStatus.FAILED:
        out = OrderFailed(**fields, **cause, reason=order.failure_reason or event.status)
    elif target is OrderStatus.EXPIRED:
        out = OrderExpired(**fields, **cause)
    elif target is OrderStatus.REFUNDED:
        # Its own event: the older ones never carry the new status (see OrderRefunded).
        out = OrderRefunded(
            **fields,
            **cause,
            previous_status=previous,
            payment_id=order.payment_id,
            reason=order.failure_reason or "the payment was refunded",
        )
    else:  # awaiting_payment has no event of its own; the next one carries the version
        out = None
    if out is not None:
        await add_to_outbox(session, Outbox, out)
    return decision


async def apply_delivery(session: AsyncSession, event: OrderDelivered, *, now: datetime) -> bool:
    """paid → fulfilled. True when the order moved."""
    order = await repo.get_order(session, uuid.UUID(event.order_id), for_update=True)
    if order is None:
        raise NotYetVisibleError(f"order {event.order_id} not found", retry_after=2.0)
    if order.status == OrderStatus.FULFILLED:
        return False
    if order.status != OrderStatus.PAID:
        # Fulfillment delivers only on order_paid, so this is an operator action or a bug:
        # keep the order as it is and leave a trace.
        log.warning("delivery_for_unpaid_order", order_id=event.order_id, status=order.status)
        return False
    await _transition(
        session,
        order,
        OrderStatus.FULFILLED,
        now=now,
        cause_event_id=event.event_id,
        note=f"delivered {event.item_count} item(s), delivery {event.delivery_id}",
    )
    await add_to_outbox(session, Outbox, OrderFulfilled(**_event_fields(order), **event.caused()))
    return True


# --- expiry ----------------------------------------------------------------------------------


async def expire_due_orders(
    session: AsyncSession, *, now: datetime, wait_limit: timedelta, batch_size: int
) -> int:
    """Expire orders waiting longer than ``wait_limit`` with no payment under way."""
    orders = await repo.lock_orders_due_for_expiry(
        session, waiting_before=now - wait_limit, limit=batch_size
    )
    for order in orders:
        await _transition(
            session,
            order,
            OrderStatus.EXPIRED,
            now=now,
            cause_event_id=None,
            note=f"no payment within {int(wait_limit.total_seconds())} s",
        )
        await add_to_outbox(
            session,
            Outbox,
            OrderExpired(
                **_event_fields(order),
                correlation_id=order.correlation_id,
            ),
        )
    if orders:
        log.info("orders_expired", count=len(orders))
    return len(orders)


async def purge_idempotency_keys(session: AsyncSession, *, older_than: datetime) -> int:
    return await repo.purge_idempotency_keys(session, older_than)


# --- helpers ---------------------------------------------------------------------------------


async def _transition(
    session: AsyncSession,
    order: Order,
    target: OrderStatus,
    *,
    now: datetime,
    cause_event_id: uuid.UUID | None,
    note: str | None,
) -> None:
    previous = order.status
    order.status = target.value
    order.version += 1
    order.updated_at = now
    if target is OrderStatus.AWAITING_PAYMENT:
        order.awaiting_since = now
    await repo.add_history(
        session,
        OrderHistory(
            order_id=order.id,
            version=order.version,
            from_status=previous,
            status=target.value,
            cause_event_id=cause_event_id,
            note=note,
            at=now,
        ),
    )
    TRANSITIONS.labels(target.value).inc()


def _event_fields(order: Order) -> dict[str, Any]:
    return {
        "order_id": str(order.id),
        "status": order.status,
        "version": order.version,
        "email": order.email,
        "total": order.total,
        "currency": order.currency,
    }


def _lines(items: Sequence[OrderItem]) -> list[OrderLine]:
    return [
        OrderLine(sku=i.sku, title=i.title, quantity=i.quantity, unit_price=i.unit_price)
        for i in items
    ]


def _item_out(item: OrderItem) -> OrderItemOut:
    return OrderItemOut(
        sku=item.sku,
        title=item.title,
        quantity=item.quantity,
        unit_price=item.unit_price,
        line_total=item.line_total,
    )


def _normal_id(value: str) -> str:
    """Payment ids as uuids compare equal whatever their spelling; other ids are kept."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value
