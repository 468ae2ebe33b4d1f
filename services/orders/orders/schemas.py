"""Request and response bodies of the orders API (the storefront codes against these shapes).

Amounts are ``Decimal`` and leave as JSON strings ("19.98"); nothing here is ever a float.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from orders.domain import MAX_LINES, MAX_QUANTITY, MIN_QUANTITY

Sku = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class ProductOut(BaseModel):
    sku: str
    title: str
    description: str
    price: Decimal = Field(examples=["9.99"])
    currency: str = Field(examples=["usd"])


class ProductList(BaseModel):
    items: list[ProductOut]


class OrderLineIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sku: Sku = Field(examples=["pixelforge-pro-1y"])
    # strict: true or "2" is not a quantity
    quantity: int = Field(ge=MIN_QUANTITY, le=MAX_QUANTITY, strict=True, examples=[2])


class CreateOrderIn(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "email": "player@example.com",
                    "items": [{"sku": "pixelforge-pro-1y", "quantity": 2}],
                }
            ]
        },
    )

    email: EmailStr = Field(examples=["player@example.com"])
    items: list[OrderLineIn] = Field(min_length=1, max_length=MAX_LINES)


class OrderItemOut(BaseModel):
    sku: str
    title: str
    quantity: int
    unit_price: Decimal = Field(examples=["9.99"])
    line_total: Decimal = Field(examples=["19.98"])


class OrderCreatedOut(BaseModel):
    order_id: str
    order_token: str = Field(
        description="Access token for this order. Returned once (and to a retry with the same "
        "Idempotency-Key); the server keeps only a keyed hash of it."
    )
    status: str = Field(examples=["created"])
    total: Decimal = Field(examples=["19.98"])
    currency: str = Field(examples=["usd"])
    items: list[OrderItemOut]
    created_at: datetime


class CheckoutOut(BaseModel):
    order_id: str
    payment_url: str = Field(description="The provider's hosted invoice page; redirect here.")
    amount: Decimal = Field(examples=["19.98"])
    currency: str = Field(examples=["usd"])
    status: str = Field(examples=["awaiting_payment"])
    invoice_id: str | None = None


class HistoryOut(BaseModel):
    status: str
    from_status: str | None = None
    at: datetime
    cause_event_id: str | None = Field(
        default=None,
        description="The event that caused this transition (None: an API call or the expiry job)",
    )
    note: str | None = None


class OrderOut(BaseModel):
    order_id: str
    status: str = Field(examples=["awaiting_payment"])
    message: str = Field(
        description="What to tell the customer about this status.",
        examples=["Waiting for your payment"],
    )
    payment_status: str | None = Field(
        default=None,
        description="Latest provider status seen (waiting, confirming, ...).",
        examples=["confirming"],
    )
    items: list[OrderItemOut]
    total: Decimal = Field(examples=["19.98"])
    currency: str
    email: str = Field(description="Masked: c***@example.com", examples=["p***@example.com"])
    payment_url: str | None = None
    failure_reason: str | None = None
    version: int
    created_at: datetime
    updated_at: datetime
    history: list[HistoryOut]


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorDetail(BaseModel):
    field: str | None = None
    reason: str
    code: str


class ValidationErrorOut(BaseModel):
    """422: ``detail`` is FastAPI's list (loc, msg, type); ``error`` names the first problem."""

    detail: list[FieldError]
    error: ErrorDetail


class ErrorOut(BaseModel):
    detail: str
    error: ErrorDetail
