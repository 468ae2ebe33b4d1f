"""Payments events and the create-invoice request orders sends."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import ClassVar, Literal

from pydantic import Field

from shared.contracts import subjects
from shared.contracts.envelope import Event, Reply, Request

PaymentStatus = Literal[
    "created",
    "waiting",
    "confirming",
    "confirmed",
    "sending",
    "finished",
    "partially_paid",
    "failed",
    "expired",
    "refunded",
    "mismatch",
]
TransitionSource = Literal["ipn", "poll", "admin", "invoice"]


class PaymentStatusChanged(Event):
    """Published once per real change of a payment's status (never for ignored late ones)."""

    SUBJECT: ClassVar[str] = subjects.PAYMENT_STATUS_CHANGED

    payment_id: uuid.UUID
    order_id: str
    provider: str = "nowpayments"
    provider_payment_id: str | None = None
    invoice_id: str | None = None
    previous_status: PaymentStatus
    status: PaymentStatus
    is_final: bool
    source: TransitionSource
    version: int  # position in the payment's ledger; projections keep the highest
    price_amount: Decimal
    price_currency: str
    pay_amount: Decimal | None = None
    actually_paid: Decimal | None = None
    pay_currency: str | None = None
    surplus: Decimal | None = None  # overpayment, recorded, still paid
    note: str | None = None
    # Added after v1 shipped (defaults keep older consumers and payloads valid):
    shortfall: Decimal | None = None  # underpayment (pay_amount - actually_paid), in pay_currency
    provider_status: str | None = None  # what the provider said; `status` is our verdict
    outcome_amount: Decimal | None = None  # what reaches us after the provider's fees
    outcome_currency: str | None = None


class CreateInvoiceRequest(Request):
    SUBJECT: ClassVar[str] = subjects.CREATE_INVOICE

    order_id: str = Field(max_length=64)
    price_amount: Decimal = Field(gt=0)
    price_currency: str = Field(min_length=3, max_length=10)
    description: str = Field(default="", max_length=200)
    success_url: str | None = Field(default=None, max_length=500)
    cancel_url: str | None = Field(default=None, max_length=500)


class CreateInvoiceReply(Reply):
    payment_id: str | None = None
    invoice_id: str | None = None
    invoice_url: str | None = None
    price_amount: Decimal | None = None
    price_currency: str | None = None
    status: str | None = None
    retryable: bool = False
