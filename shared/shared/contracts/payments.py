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


class PaymentAttentionRaised(Event):
    """Something about a payment that needs an operator: published once per distinct
    ``(payment_id, key)``; a repeat of the same situation is not published again.

    ``kind`` is an open set (plain text, so a consumer built before a new kind still reads the
    event): ``late_money`` (money for an order we had closed), ``child_payment`` (a repeated
    deposit / top-up), ``wrong_asset`` (a child in another coin), ``amount_discrepancy``
    (provider says finished, amounts disagree), ``overpaid``, ``unknown_status``, ``cancelled``,
    ``refunded``, ``price_mismatch``, ``provider_refused`` (``GET /payment`` answered 4xx),
    ``settled_by_operator``, ``attached_by_operator``.
    """

    SUBJECT: ClassVar[str] = subjects.PAYMENT_ATTENTION_RAISED

    payment_id: uuid.UUID
    order_id: str
    kind: str = Field(max_length=40)
    key: str = Field(max_length=120)  # identifies the situation within the payment (dedup)
    detail: str = Field(default="", max_length=500)
    provider_payment_id: str | None = None
    parent_payment_id: str | None = None
    provider_status: str | None = Field(default=None, max_length=40)
    payment_status: str | None = None  # our verdict on the order's payment at that moment
    amount: Amount | None = None  # the amount concerned (e.g. actually_paid of a child)
    currency: str | None = None


class SettlePaymentRequest(Request):
    """An operator declares the order's payment settled as paid (e.g. money confirmed by hand).

    ``action_id`` makes it exactly once: the same action sent twice settles once; a payment that
    is already ``finished`` answers ``ok`` with ``changed=False``.
    """

    SUBJECT: ClassVar[str] = subjects.SETTLE_PAYMENT

    order_id: str = Field(min_length=1, max_length=64)
    operator: str = Field(min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=500)
    action_id: uuid.UUID


class AttachPaymentRequest(Request):
    """An operator attaches a provider payment (by its NOWPayments ``payment_id``) to an order.

    Payments asks the provider for that payment (``GET /payment/{id}``) and counts it towards
    the order like any other payment of its invoice; exactly once per provider payment id.
    """

    SUBJECT: ClassVar[str] = subjects.ATTACH_PAYMENT

    order_id: str = Field(min_length=1, max_length=64)
    provider_payment_id: str = Field(pattern=r"^[0-9]{1,32}$")
    operator: str = Field(min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=500)
    action_id: uuid.UUID


class PaymentActionReply(Reply):
    """Answer to a settle or attach. Error codes: ``payment_not_found`` (no payment for the
    order), ``provider_payment_not_found``, ``belongs_to_other_order``, ``refunded``,
    ``provider_unavailable`` (retryable), ``unavailable`` (our database, retryable),
    ``invalid_request``."""

    payment_id: str | None = None
    status: str | None = None  # the payment's status after the action
    changed: bool = False  # False: nothing to do (already settled / already attached)
    retryable: bool = False
