"""Orders events. Every event carries the order's state after it, with a version."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from shared.contracts import subjects
from shared.contracts.envelope import Event


class OrderLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str
    title: str
    quantity: int
    unit_price: Decimal


class OrderEvent(Event):
    order_id: str
    # Plain text, not a Literal: a consumer built before a new status (e.g. "refunded") still
    # reads the event. Today only OrderRefunded carries "refunded".
    status: str
    version: int  # number of transitions so far; projections keep the highest
    email: str
    total: Decimal
    currency: str


class OrderCreated(OrderEvent):
    SUBJECT: ClassVar[str] = subjects.ORDER_CREATED
    items: list[OrderLine]
    created_at: datetime


class OrderPaid(OrderEvent):
    SUBJECT: ClassVar[str] = subjects.ORDER_PAID
    items: list[OrderLine]
    payment_id: str | None = None


class OrderUnderpaid(OrderEvent):
    SUBJECT: ClassVar[str] = subjects.ORDER_UNDERPAID
    actually_paid: Decimal | None = None
    pay_amount: Decimal | None = None
    pay_currency: str | None = None


class OrderFailed(OrderEvent):
    SUBJECT: ClassVar[str] = subjects.ORDER_FAILED
    reason: str


class OrderExpired(OrderEvent):
    SUBJECT: ClassVar[str] = subjects.ORDER_EXPIRED


class OrderFulfilled(OrderEvent):
    SUBJECT: ClassVar[str] = subjects.ORDER_FULFILLED


class OrderRefunded(OrderEvent):
    """The payment of a paid order was refunded (by the provider or the merchant), before or
    after delivery: the goods are withdrawn. ``status`` is ``"refunded"``, a value only this
    event carries. Added after v1 on its own subject; consumers built before it never see it.
    """

    SUBJECT: ClassVar[str] = subjects.ORDER_REFUNDED
    previous_status: str  # the order's status before the refund: "paid" or "fulfilled"
    payment_id: str | None = None
    reason: str = ""
