"""In-memory provider state: invoices, payments, delivery misbehaviour and injected API faults."""

from __future__ import annotations

import random
import string
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .coins import COINS, Coin, fiat_value, make_address, pay_amount_for
from .config import EmulatorConfig

PaymentStatus = Literal[
    "waiting",
    "confirming",
    "confirmed",
    "sending",
    "partially_paid",
    "finished",
    "failed",
    "refunded",
    "expired",
]
FINAL_STATUSES: frozenset[str] = frozenset(
    {"finished", "partially_paid", "failed", "refunded", "expired"}
)
DeliveryOrder = Literal["sequential", "reverse", "shuffle", "final_first"]
ApiOperation = Literal[
    "*",
    "status",
    "currencies",
    "create_invoice",
    "create_payment",
    "invoice_payment",
    "get_payment",
    "list_payments",
    "auth",
    "min_amount",
    "estimate",
    "full_currencies",
    "merchant_coins",
    "update_estimate",
]

# The provider keeps a small cut; it shows up in fee.serviceFee and outcome_amount.
SERVICE_FEE_RATE = Decimal("0.005")
_ID_BASE = 5_000_000_000  # real ids already exceed 2^32; merchants must not squeeze them into int32


class BehaviourPatch(BaseModel):
    """Delivery misbehaviour; a field left None inherits from the next layer down."""

    model_config = ConfigDict(extra="forbid")

    duplicates: int | None = Field(default=None, ge=1, le=20, description="copies of each IPN")
    order: DeliveryOrder | None = None
    drop_statuses: list[PaymentStatus] | None = None
    drop_final: bool | None = None
    retries: int | None = Field(default=None, ge=0, le=50)
    retry_interval: float | None = Field(default=None, ge=0, le=3600)
    callback_timeout: float | None = Field(default=None, gt=0, le=120)
    step_delay: float | None = Field(default=None, ge=0, le=600)


@dataclass(frozen=True, slots=True)
class Behaviour:
    duplicates: int
    order: DeliveryOrder
    drop_statuses: frozenset[str]
    drop_final: bool
    retries: int
    retry_interval: float
    callback_timeout: float
    step_delay: float


def resolve_behaviour(config: EmulatorConfig, *layers: BehaviourPatch | None) -> Behaviour:
    """Apply patches in order over the config's defaults; later layers win."""
    behaviour = Behaviour(
        duplicates=1,
        order="sequential",
        drop_statuses=frozenset(),
        drop_final=False,
        retries=config.ipn_retries,
        retry_interval=config.ipn_retry_interval,
        callback_timeout=config.callback_timeout,
        step_delay=config.step_delay,
    )
    for layer in layers:
        if layer is None:
            continue
        changes: dict[str, Any] = layer.model_dump(exclude_none=True)
        if "drop_statuses" in changes:
            changes["drop_statuses"] = frozenset(changes["drop_statuses"])
        behaviour = replace(behaviour, **changes)
    return behaviour


class Fault(BaseModel):
    """Make the provider API itself misbehave for the next `count` calls of an operation."""

    model_config = ConfigDict(extra="forbid")

    operation: ApiOperation = "*"
    count: int = Field(default=1, ge=1, le=1000)
    # None answers normally after `delay`: a slow but healthy provider.
    status_code: int | None = Field(default=500, ge=400, le=599)
    delay: float = Field(default=0.0, ge=0, le=120)
    code: str = "INTERNAL_SERVER_ERROR"
    message: str = "Emulated provider failure"


def iso(moment: datetime) -> str:
    """The provider's timestamp form: ISO 8601, milliseconds, Z."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Invoice:
    id: int
    token_id: str
    price_amount: Decimal
    price_currency: str
    pay_currency: str | None
    order_id: str | None
    order_description: str | None
    ipn_callback_url: str | None
    success_url: str | None
    cancel_url: str | None
    partially_paid_url: str | None
    customer_email: str | None
    is_fixed_rate: bool
    is_fee_paid_by_user: bool
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    expired_manually: bool = False
    payment_ids: list[int] = field(default_factory=list)
    behaviour: BehaviourPatch | None = None

    def is_expired(self, at: datetime | None = None) -> bool:
        return self.expired_manually or (at or now()) >= self.expires_at


@dataclass(slots=True)
class Payment:
    payment_id: int
    invoice_id: int | None
    purchase_id: str
    payment_status: str
    pay_address: str
    price_amount: Decimal
    price_currency: str
    pay_amount: Decimal
    actually_paid: Decimal
    coin: Coin
    order_id: str | None
    order_description: str | None
    ipn_callback_url: str | None
    created_at: datetime
    updated_at_ms: int
    history: list[str] = field(default_factory=list)

    @property
    def pay_currency(self) -> str:
        return self.coin.code

    @property
    def updated_at(self) -> datetime:
        return datetime.fromtimestamp(self.updated_at_ms / 1000, UTC)

    def apply(self, status: str, actually_paid: Decimal | None) -> None:
        self.payment_status = status
        if actually_paid is not None:
            self.actually_paid = self.coin.quantize(actually_paid)
        # Strictly increasing, so (payment_id, status, updated_at) never collides between steps.
        self.updated_at_ms = max(int(time.time() * 1000), self.updated_at_ms + 1)
        self.history.append(status)

    def _settled_base(self) -> Decimal:
        # Before anything arrives the provider quotes the outcome of the expected amount.
        return self.actually_paid if self.actually_paid > 0 else self.pay_amount

    @property
    def service_fee(self) -> Decimal:
        return (self._settled_base() * SERVICE_FEE_RATE).quantize(
            self.coin.quantum, rounding=ROUND_HALF_UP
        )

    @property
    def outcome_amount(self) -> Decimal:
        return self._settled_base() - self.service_fee

    @property
    def actually_paid_at_fiat(self) -> Decimal:
        return fiat_value(self.actually_paid, self.coin, self.price_currency)

    def ipn_body(self) -> dict[str, object]:
        """Every field the provider posts in an IPN (order does not matter; the encoder sorts)."""
        return {
            "payment_id": self.payment_id,
            "invoice_id": self.invoice_id,
            "parent_payment_id": None,
            "payment_status": self.payment_status,
            "pay_address": self.pay_address,
            "payin_extra_id": None,
            "price_amount": self.price_amount,
            "price_currency": self.price_currency,
            "pay_amount": self.pay_amount,
            "actually_paid": self.actually_paid,
            "actually_paid_at_fiat": self.actually_paid_at_fiat,
            "pay_currency": self.pay_currency,
            "order_id": self.order_id,
            "order_description": self.order_description,
            "purchase_id": self.purchase_id,
            "outcome_amount": self.outcome_amount,
            "outcome_currency": self.pay_currency,
            "fee": {
                "currency": self.pay_currency,
                "depositFee": Decimal(0),
                "serviceFee": self.service_fee,
                "withdrawalFee": Decimal(0),
            },
            "payment_extra_ids": None,
            "updated_at": self.updated_at_ms,
        }

    def api_view(self) -> dict[str, object]:
        """GET /v1/payment/{id}: the provider's current truth, dropped IPNs notwithstanding."""
        return {
            "payment_id": self.payment_id,
            "invoice_id": self.invoice_id,
            "payment_status": self.payment_status,
            "pay_address": self.pay_address,
            "payin_extra_id": None,
            "price_amount": self.price_amount,
            "price_currency": self.price_currency,
            "pay_amount": self.pay_amount,
            "actually_paid": self.actually_paid,
            "pay_currency": self.pay_currency,
            "order_id": self.order_id,
            "order_description": self.order_description,
            "purchase_id": self.purchase_id,
            "outcome_amount": self.outcome_amount,
            "outcome_currency": self.pay_currency,
            "payout_hash": None,
            "payin_hash": None,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "type": "crypto2crypto",
        }


class Store:
    """All provider state. Single event loop, so plain dicts need no locking."""

    def __init__(self, config: EmulatorConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self.invoices: dict[int, Invoice] = {}
        self.payments: dict[int, Payment] = {}
        self.behaviour = BehaviourPatch()
        self.faults: list[Fault] = []
        self._next_id = _ID_BASE + rng.randrange(1_000_000_000)

    def reset(self) -> None:
        self.invoices.clear()
        self.payments.clear()
        self.behaviour = BehaviourPatch()
        self.faults.clear()

    def new_id(self) -> int:
        # One sequence for invoices and payments, so mixing the two up finds nothing.
        self._next_id += self._rng.randrange(1, 97)
        return self._next_id

    def create_invoice(
        self,
        *,
        price_amount: Decimal,
        price_currency: str,
        pay_currency: str | None,
        order_id: str | None,
        order_description: str | None,
        ipn_callback_url: str | None,
        success_url: str | None,
        cancel_url: str | None,
        partially_paid_url: str | None,
        customer_email: str | None,
        is_fixed_rate: bool,
        is_fee_paid_by_user: bool,
    ) -> Invoice:
        created = now()
        invoice = Invoice(
            id=self.new_id(),
            token_id="".join(
                self._rng.choice(string.ascii_letters + string.digits) for _ in range(9)
            ),
            price_amount=price_amount,
            price_currency=price_currency,
            pay_currency=pay_currency,
            order_id=order_id,
            order_description=order_description,
            ipn_callback_url=ipn_callback_url,
            success_url=success_url,
            cancel_url=cancel_url,
            partially_paid_url=partially_paid_url,
            customer_email=customer_email,
            is_fixed_rate=is_fixed_rate,
            is_fee_paid_by_user=is_fee_paid_by_user,
            created_at=created,
            updated_at=created,
            expires_at=datetime.fromtimestamp(
                created.timestamp() + self._config.invoice_lifetime, UTC
            ),
        )
        self.invoices[invoice.id] = invoice
        return invoice

    def create_payment(
        self,
        *,
        coin: Coin,
        price_amount: Decimal,
        price_currency: str,
        invoice: Invoice | None,
        order_id: str | None,
        order_description: str | None,
        ipn_callback_url: str | None,
        pay_amount: Decimal | None = None,
    ) -> Payment:
        created = now()
        payment = Payment(
            payment_id=self.new_id(),
            invoice_id=invoice.id if invoice else None,
            purchase_id=str(4_000_000_000 + self._rng.randrange(1_000_000_000)),
            payment_status="waiting",
            pay_address=make_address(coin, self._rng),
            price_amount=price_amount,
            price_currency=price_currency,
            pay_amount=coin.quantize(pay_amount)
            if pay_amount is not None
            else pay_amount_for(price_amount, price_currency, coin),
            actually_paid=Decimal(0),
            coin=coin,
            order_id=order_id,
            order_description=order_description,
            ipn_callback_url=ipn_callback_url,
            created_at=created,
            updated_at_ms=int(created.timestamp() * 1000),
            history=["waiting"],
        )
        self.payments[payment.payment_id] = payment
        if invoice is not None:
            invoice.payment_ids.append(payment.payment_id)
            invoice.updated_at = created
        return payment

    def take_fault(self, operation: str) -> Fault | None:
        """Consume one injected fault matching this operation, if any is armed."""
        for fault in self.faults:
            if fault.operation in (operation, "*"):
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                return fault
        return None


def coin_for(code: str | None) -> Coin | None:
    return COINS.get(code.lower()) if code else None
