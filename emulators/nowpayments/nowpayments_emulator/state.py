"""In-memory provider state: invoices, payments, delivery misbehaviour and injected API faults."""

from __future__ import annotations

import asyncio
import random
import re
import string
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .coins import COINS, Coin, convert, fiat_value, make_address, pay_amount_for
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
    "cancelled",
]
FINAL_STATUSES: frozenset[str] = frozenset(
    {"finished", "partially_paid", "failed", "refunded", "expired", "cancelled"}
)
# A status the provider may add one day: a lowercase word, as its statuses are.
UNKNOWN_STATUS = re.compile(r"[a-z][a-z0-9_]{0,39}")
IpnShape = Literal["current", "legacy"]
PaymentKind = Literal["original", "repeated_deposit", "wrong_asset"]
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
# Lifetimes (Postman "NOWPayments API", Create payment): a floating-rate payment waits 7 days for
# a deposit; is_fixed_rate / is_fee_paid_by_user freeze the rate for 20 minutes, then it expires.
FLOATING_RATE_LIFETIME = 7 * 24 * 3600.0
FIXED_RATE_LIFETIME = 20 * 60.0
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
    # Seconds before each retry, e.g. [60, 300, 900]; replaces retries/retry_interval when set.
    retry_schedule: list[float] | None = Field(default=None, max_length=50)
    # "legacy": updated_at as ISO text, keys in the provider's order (unsorted), no fee object.
    ipn_shape: IpnShape | None = None


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
    retry_schedule: tuple[float, ...] = ()
    ipn_shape: IpnShape = "current"

    def retry_delays(self) -> tuple[float, ...]:
        """The wait before each retry: the schedule if one is set, else retries × interval."""
        if self.retry_schedule:
            return self.retry_schedule
        return (self.retry_interval,) * self.retries


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
        retry_schedule=tuple(config.ipn_retry_schedule),
    )
    for layer in layers:
        if layer is None:
            continue
        changes: dict[str, Any] = layer.model_dump(exclude_none=True)
        if "drop_statuses" in changes:
            changes["drop_statuses"] = frozenset(changes["drop_statuses"])
        if "retry_schedule" in changes:
            changes["retry_schedule"] = tuple(changes["retry_schedule"])
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


class Clock:
    """The emulator's time: the wall clock plus an offset tests move forward.

    Everything time-based reads it (timestamps, lifetimes, expiry, retry waits), so a test can
    jump 7 days ahead without waiting. `sleep` wakes early when the clock is advanced past it.
    """

    def __init__(self) -> None:
        self.offset = 0.0
        self._moved: asyncio.Event | None = None

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def ms(self) -> int:
        return int(self.now().timestamp() * 1000)

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        self._wake()

    def reset(self) -> None:
        self.offset = 0.0
        self._wake()

    def _wake(self) -> None:
        if self._moved is not None:
            self._moved.set()
            self._moved = None

    async def sleep(self, seconds: float) -> None:
        """Wait until the emulator's clock has moved `seconds` on (real time or advanced)."""
        await self.sleep_until(self.now() + timedelta(seconds=seconds))

    async def sleep_until(self, due: datetime) -> None:
        """Wait until the emulator's clock reads `due` (at once if it already does)."""
        while True:
            remaining = (due - self.now()).total_seconds()
            if remaining <= 0:
                return
            if self._moved is None:
                self._moved = asyncio.Event()
            moved = self._moved
            try:
                await asyncio.wait_for(moved.wait(), remaining)
            except TimeoutError:
                pass


_WALL_CLOCK = Clock()


def now() -> datetime:
    return _WALL_CLOCK.now()


def later(moment: datetime, seconds: float) -> datetime:
    return moment + timedelta(seconds=seconds)


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
    clock: Clock = field(default=_WALL_CLOCK, repr=False)

    def is_expired(self, at: datetime | None = None) -> bool:
        return self.expired_manually or (at or self.clock.now()) >= self.expires_at


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
    # Repeated and wrong-asset deposits are new payments pointing at the original.
    parent_payment_id: int | None = None
    kind: PaymentKind = "original"
    is_fixed_rate: bool = False
    is_fee_paid_by_user: bool = False
    # When a payment still waiting for its deposit expires (7 days floating, 20 min fixed).
    valid_until: datetime = field(default_factory=now)
    # The merchant's payout coin (outcome_currency); the pay coin unless configured.
    outcome_coin: Coin | None = None
    deposit_fee_rate: Decimal = Decimal(0)
    withdrawal_fee_rate: Decimal = Decimal(0)
    fiat_mode: str = "zero"
    clock: Clock = field(default=_WALL_CLOCK, repr=False)

    @property
    def pay_currency(self) -> str:
        return self.coin.code

    @property
    def outcome(self) -> Coin:
        return self.outcome_coin or self.coin

    @property
    def updated_at(self) -> datetime:
        return datetime.fromtimestamp(self.updated_at_ms / 1000, UTC)

    def apply(self, status: str, actually_paid: Decimal | None) -> None:
        self.payment_status = status
        if actually_paid is not None:
            self.actually_paid = self.coin.quantize(actually_paid)
        # Strictly increasing, so (payment_id, status, updated_at) never collides between steps.
        self.updated_at_ms = max(self.clock.ms(), self.updated_at_ms + 1)
        self.history.append(status)

    def is_due_to_expire(self, at: datetime) -> bool:
        """Still waiting for coins when its lifetime ran out: the provider expires it."""
        return self.payment_status == "waiting" and at >= self.valid_until

    def _settled_base(self) -> Decimal:
        # Before anything arrives the provider quotes the outcome of the expected amount; a real
        # `finished` with actually_paid 0 also carries a positive outcome_amount.
        base = self.actually_paid if self.actually_paid > 0 else self.pay_amount
        return convert(base, self.coin, self.outcome)

    def _fee(self, rate: Decimal) -> Decimal:
        return (self._settled_base() * rate).quantize(self.outcome.quantum, rounding=ROUND_HALF_UP)

    @property
    def service_fee(self) -> Decimal:
        return self._fee(SERVICE_FEE_RATE)

    @property
    def deposit_fee(self) -> Decimal:
        return self._fee(self.deposit_fee_rate)

    @property
    def withdrawal_fee(self) -> Decimal:
        return self._fee(self.withdrawal_fee_rate)

    @property
    def outcome_amount(self) -> Decimal:
        return self._settled_base() - self.service_fee - self.deposit_fee - self.withdrawal_fee

    @property
    def actually_paid_at_fiat(self) -> Decimal:
        # The real provider usually sends 0 here, even for a paid payment.
        if self.fiat_mode == "zero":
            return Decimal(0)
        return fiat_value(self.actually_paid, self.coin, self.price_currency)

    def ipn_body(self, shape: IpnShape = "current") -> dict[str, object]:
        """Every field the provider posts in an IPN.

        "current": order does not matter, the encoder sorts. "legacy": the order of the
        provider's webhook example (Postman "NOWPayments API", Webhooks Examples), sent as is,
        `updated_at` as ISO text and no `fee` object.
        """
        if shape == "legacy":
            return {
                "payment_id": self.payment_id,
                "parent_payment_id": self.parent_payment_id,
                "invoice_id": self.invoice_id,
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
                "outcome_currency": self.outcome.code,
                "payment_extra_ids": None,
                "updated_at": iso(self.updated_at),
            }
        return {
            "payment_id": self.payment_id,
            "invoice_id": self.invoice_id,
            "parent_payment_id": self.parent_payment_id,
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
            "outcome_currency": self.outcome.code,
            "fee": {
                "currency": self.outcome.code,
                "depositFee": self.deposit_fee,
                "serviceFee": self.service_fee,
                "withdrawalFee": self.withdrawal_fee,
            },
            "payment_extra_ids": None,
            "updated_at": self.updated_at_ms,
        }

    def lifetime_view(self) -> dict[str, object]:
        """Rate type and expiry, as in the provider's create-payment response."""
        return {
            "is_fixed_rate": self.is_fixed_rate,
            "is_fee_paid_by_user": self.is_fee_paid_by_user,
            # The provider's estimate expiry; here the end of the payment's lifetime.
            "expiration_estimate_date": iso(self.valid_until),
            "valid_until": iso(self.valid_until),
        }

    def api_view(self) -> dict[str, object]:
        """GET /v1/payment/{id}: the provider's current truth, dropped IPNs notwithstanding."""
        return {
            "payment_id": self.payment_id,
            "invoice_id": self.invoice_id,
            "parent_payment_id": self.parent_payment_id,
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
            "outcome_currency": self.outcome.code,
            "payout_hash": None,
            "payin_hash": None,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            **self.lifetime_view(),
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
        self.clock = Clock()
        self._next_id = _ID_BASE + rng.randrange(1_000_000_000)

    def reset(self) -> None:
        self.clock.reset()
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
        created = self.clock.now()
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
            expires_at=later(created, self._config.invoice_lifetime),
            clock=self.clock,
        )
        self.invoices[invoice.id] = invoice
        return invoice

    def _outcome_coin(self, coin: Coin) -> Coin:
        configured = self._config.outcome_currency
        return COINS.get(configured, coin) if configured else coin

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
        is_fixed_rate: bool = False,
        is_fee_paid_by_user: bool = False,
    ) -> Payment:
        created = self.clock.now()
        if invoice is not None:
            is_fixed_rate = is_fixed_rate or invoice.is_fixed_rate
            is_fee_paid_by_user = is_fee_paid_by_user or invoice.is_fee_paid_by_user
        # "The fee paid by user payment can be only fixed rate" (Create payment).
        is_fixed_rate = is_fixed_rate or is_fee_paid_by_user
        lifetime = FIXED_RATE_LIFETIME if is_fixed_rate else FLOATING_RATE_LIFETIME
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
            is_fixed_rate=is_fixed_rate,
            is_fee_paid_by_user=is_fee_paid_by_user,
            valid_until=later(created, lifetime),
            **self._money_settings(coin),
        )
        self.payments[payment.payment_id] = payment
        if invoice is not None:
            invoice.payment_ids.append(payment.payment_id)
            invoice.updated_at = created
        return payment

    def _money_settings(self, coin: Coin) -> dict[str, Any]:
        return {
            "outcome_coin": self._outcome_coin(coin),
            "deposit_fee_rate": self._config.deposit_fee_rate,
            "withdrawal_fee_rate": self._config.withdrawal_fee_rate,
            "fiat_mode": self._config.actually_paid_at_fiat,
            "clock": self.clock,
        }

    def create_child(
        self,
        parent: Payment,
        *,
        coin: Coin,
        amount: Decimal,
        status: str,
        kind: PaymentKind,
        quote: str = "order",
    ) -> Payment:
        """A repeated or wrong-asset deposit: a new payment on the parent's address and ids.

        It keeps the parent's invoice_id, purchase_id, order_id, pay_address and callback; the
        expected amounts (price_amount, pay_amount) stay the order's, converted to the deposit's
        coin for a wrong asset, and actually_paid is what arrived. With quote "deposit" the child
        quotes the deposit itself: pay_amount = what arrived, price_amount = its fiat value.
        """
        created = self.clock.now()
        received = coin.quantize(amount)
        if quote == "deposit":
            price_amount = fiat_value(received, coin, parent.price_currency).normalize()
            pay_amount = received
        else:
            price_amount = parent.price_amount
            pay_amount = convert(parent.pay_amount, parent.coin, coin)
        child = Payment(
            payment_id=self.new_id(),
            invoice_id=parent.invoice_id,
            purchase_id=parent.purchase_id,
            payment_status=status,
            pay_address=parent.pay_address,
            price_amount=price_amount,
            price_currency=parent.price_currency,
            pay_amount=pay_amount,
            actually_paid=received,
            coin=coin,
            order_id=parent.order_id,
            order_description=parent.order_description,
            ipn_callback_url=parent.ipn_callback_url,
            created_at=created,
            updated_at_ms=max(int(created.timestamp() * 1000), parent.updated_at_ms + 1),
            history=[status],
            parent_payment_id=parent.payment_id,
            kind=kind,
            is_fixed_rate=parent.is_fixed_rate,
            is_fee_paid_by_user=parent.is_fee_paid_by_user,
            # Funds already arrived: nothing is left to wait for, so it never expires.
            valid_until=parent.valid_until,
            **self._money_settings(coin),
        )
        self.payments[child.payment_id] = child
        invoice = self.invoices.get(parent.invoice_id) if parent.invoice_id else None
        if invoice is not None:
            invoice.payment_ids.append(child.payment_id)
            invoice.updated_at = created
        return child

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
