"""Payments events and the create-invoice request orders sends."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, ClassVar, Literal

from pydantic import Field, PlainSerializer

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


def _plain(value: Decimal) -> str:
    return format(value, "f")


# A Decimal that travels as a JSON string in plain notation: "0.00000001", never "1E-8"
# (pydantic's default is str(Decimal), which switches to exponents below 1e-6).
Amount = Annotated[Decimal, PlainSerializer(_plain, return_type=str, when_used="json")]


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
    price_amount: Amount
    price_currency: str
    pay_amount: Amount | None = None
    actually_paid: Amount | None = None
    pay_currency: str | None = None
    surplus: Amount | None = None  # overpayment, recorded, still paid
    note: str | None = None
    # Added after v1 shipped (defaults keep older consumers and payloads valid):
    shortfall: Amount | None = None  # underpayment (pay_amount - actually_paid), in pay_currency
    provider_status: str | None = None  # what the provider said; `status` is our verdict
    outcome_amount: Amount | None = None  # what reaches us after the provider's fees
    outcome_currency: str | None = None


class CreateInvoiceRequest(Request):
    SUBJECT: ClassVar[str] = subjects.CREATE_INVOICE

    order_id: str = Field(max_length=64)
    price_amount: Amount = Field(gt=0)
    price_currency: str = Field(min_length=3, max_length=10)
    description: str = Field(default="", max_length=200)
    success_url: str | None = Field(default=None, max_length=500)
    cancel_url: str | None = Field(default=None, max_length=500)


class CreateInvoiceReply(Reply):
    payment_id: str | None = None
    invoice_id: str | None = None
    invoice_url: str | None = None
    price_amount: Amount | None = None
    price_currency: str | None = None
    status: str | None = None
    retryable: bool = False
