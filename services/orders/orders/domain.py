"""Pure order rules: pricing, the forward-only state machine, tokens, customer messages. No I/O."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

MAX_LINES = 20
MIN_QUANTITY = 1
MAX_QUANTITY = 10
PRICE_PLACES = 2  # catalogue prices are fiat amounts with cents
_CENT = Decimal("0.01")


class OrderStatus(StrEnum):
    CREATED = "created"
    AWAITING_PAYMENT = "awaiting_payment"
    PAID = "paid"
    UNDERPAID = "underpaid"
    FAILED = "failed"
    EXPIRED = "expired"
    FULFILLED = "fulfilled"
    # The payment of a paid order was refunded: the goods are withdrawn. Only OrderRefunded
    # carries this value, so no consumer of the older events ever reads it.
    REFUNDED = "refunded"


OPEN_STATUSES = frozenset({OrderStatus.CREATED, OrderStatus.AWAITING_PAYMENT})
CHECKOUT_STATUSES = OPEN_STATUSES

# Forward only: nothing returns to created/awaiting_payment, paid is entered at most once and
# refunded is the end. The edges out of expired/failed/underpaid are deliberate: payments
# reporting money received (a late payment after our clock or the provider's gave up, a second
# attempt on the hosted page after a failed one, a top-up of an underpayment) still buys the
# goods. paid/fulfilled → refunded: the money went back, so the goods are withdrawn.
_ALLOWED: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.CREATED: frozenset(
        {
            OrderStatus.AWAITING_PAYMENT,
            OrderStatus.PAID,
            OrderStatus.UNDERPAID,
            OrderStatus.FAILED,
            OrderStatus.EXPIRED,
        }
    ),
    OrderStatus.AWAITING_PAYMENT: frozenset(
        {OrderStatus.PAID, OrderStatus.UNDERPAID, OrderStatus.FAILED, OrderStatus.EXPIRED}
    ),
    OrderStatus.UNDERPAID: frozenset({OrderStatus.PAID}),
    OrderStatus.EXPIRED: frozenset({OrderStatus.PAID, OrderStatus.UNDERPAID}),
    OrderStatus.PAID: frozenset({OrderStatus.FULFILLED, OrderStatus.REFUNDED}),
    OrderStatus.FAILED: frozenset({OrderStatus.PAID, OrderStatus.UNDERPAID}),
    OrderStatus.FULFILLED: frozenset({OrderStatus.REFUNDED}),
    OrderStatus.REFUNDED: frozenset(),
}

# A refund of an order that was paid withdraws the goods; before that it is a failed payment.
REFUNDABLE_STATUSES = frozenset({OrderStatus.PAID, OrderStatus.FULFILLED})


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    return target in _ALLOWED[current]


# Provider (payments) status → where the order goes. Non-final statuses keep the order waiting.
_PAYMENT_TARGET: Mapping[str, OrderStatus] = {
    "created": OrderStatus.AWAITING_PAYMENT,
    "waiting": OrderStatus.AWAITING_PAYMENT,
    "confirming": OrderStatus.AWAITING_PAYMENT,
    "confirmed": OrderStatus.AWAITING_PAYMENT,
    "sending": OrderStatus.AWAITING_PAYMENT,
    "finished": OrderStatus.PAID,
    "partially_paid": OrderStatus.UNDERPAID,
    "failed": OrderStatus.FAILED,
    "refunded": OrderStatus.FAILED,
    "mismatch": OrderStatus.FAILED,
    "expired": OrderStatus.EXPIRED,
}

_FAILURE_REASONS: Mapping[str, str] = {
    "failed": "the payment failed at the provider",
    "refunded": "the payment was refunded",
    "mismatch": "the payment did not match the invoice",
}

# Payment statuses that mean "nothing has been sent yet": only then may our clock expire an order.
NO_PAYMENT_YET = ("created", "waiting")


def target_for_payment_status(payment_status: str) -> OrderStatus:
    try:
        return _PAYMENT_TARGET[payment_status]
    except KeyError:
        raise ValueError(f"unknown payment status {payment_status!r}") from None


def failure_reason(payment_status: str, note: str | None) -> str:
    reason = _FAILURE_REASONS.get(payment_status, f"payment status {payment_status}")
    return f"{reason}: {note}"[:500] if note else reason


@dataclass(frozen=True)
class PaymentDecision:
    """What one payment status event does to an order."""

    record: bool  # store the event's status as the order's latest payment status
    new_status: OrderStatus | None  # the transition to make, if any
    why: str  # for logs: why the event was applied or ignored


def decide_payment(
    *,
    current: OrderStatus,
    known_payment_id: str | None,
    known_version: int | None,
    event_payment_id: str,
    event_status: str,
    event_version: int,
) -> PaymentDecision:
    """Forward-only mapping of a payment event onto an order, robust to reordering and repeats.

    Versions count positions in one payment's ledger, so they are compared only for the same
    payment; an older version is stale whatever its status says.
    """
    if (
        known_version is not None
        and known_payment_id == event_payment_id
        and event_version <= known_version
    ):
        return PaymentDecision(False, None, "stale")
    target = target_for_payment_status(event_status)
    if event_status == "refunded" and current in REFUNDABLE_STATUSES:
        return PaymentDecision(True, OrderStatus.REFUNDED, "refund after payment")
    if target is OrderStatus.AWAITING_PAYMENT:
        if current is OrderStatus.CREATED:
            return PaymentDecision(True, OrderStatus.AWAITING_PAYMENT, "payment started")
        if current is OrderStatus.AWAITING_PAYMENT:
            return PaymentDecision(True, None, "progress")
        return PaymentDecision(False, None, "late non-final status after a final one")
    if current is target:
        return PaymentDecision(True, None, "already there")
    if can_transition(current, target):
        return PaymentDecision(True, target, "final status")
    # e.g. a late finished after fulfilled, or a refund of an underpayment: worth showing,
    # but the order does not go back.
    return PaymentDecision(True, None, f"{current} does not move to {target}")


# --- pricing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestedLine:
    sku: str
    quantity: int


@dataclass(frozen=True)
class CatalogueEntry:
    sku: str
    title: str
    price: Decimal
    currency: str
    active: bool


@dataclass(frozen=True)
class PricedLine:
    sku: str
    title: str
    quantity: int
    unit_price: Decimal
    line_total: Decimal


@dataclass(frozen=True)
class PricedOrder:
    lines: tuple[PricedLine, ...]
    total: Decimal
    currency: str


@dataclass(frozen=True)
class FieldProblem:
    """One reason a request was refused, located like FastAPI's own validation errors."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    @property
    def field(self) -> str:
        out = ""
        for part in self.loc[1:] if self.loc and self.loc[0] in ("body", "header") else self.loc:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out


class PricingError(ValueError):
    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.msg}" for p in problems))
        self.problems = tuple(problems)


def money(value: Decimal) -> Decimal:
    """Amounts as the catalogue keeps them: exactly two places (never via float)."""
    return value.quantize(_CENT)


def price_order(
    lines: Sequence[RequestedLine], catalogue: Mapping[str, CatalogueEntry]
) -> PricedOrder:
    """Compute the order server-side; every refused line is reported, not just the first."""
    problems: list[FieldProblem] = []
    if not lines:
        problems.append(
            FieldProblem(("body", "items"), "an order needs at least one item", "too_short")
        )
    if len(lines) > MAX_LINES:
        problems.append(
            FieldProblem(
                ("body", "items"),
                f"an order has at most {MAX_LINES} lines, got {len(lines)}",
                "too_long",
            )
        )
    seen: dict[str, int] = {}
    priced: list[PricedLine] = []
    for i, line in enumerate(lines):
        if not MIN_QUANTITY <= line.quantity <= MAX_QUANTITY:
            problems.append(
                FieldProblem(
                    ("body", "items", i, "quantity"),
                    f"quantity must be between {MIN_QUANTITY} and {MAX_QUANTITY}, "
                    f"got {line.quantity}",
                    "quantity_out_of_range",
                )
            )
        if line.sku in seen:
            problems.append(
                FieldProblem(
                    ("body", "items", i, "sku"),
                    f"sku {line.sku!r} already appears in line {seen[line.sku]}; "
                    "combine them into one line with a larger quantity",
                    "duplicate_sku",
                )
            )
            continue
        seen[line.sku] = i
        entry = catalogue.get(line.sku)
        if entry is None or not entry.active:
            problems.append(
                FieldProblem(
                    ("body", "items", i, "sku"),
                    f"unknown sku {line.sku!r}: not in the catalogue or no longer sold",
                    "unknown_sku",
                )
            )
            continue
        unit = money(entry.price)
        priced.append(
            PricedLine(entry.sku, entry.title, line.quantity, unit, money(unit * line.quantity))
        )
    currencies = sorted({catalogue[p.sku].currency for p in priced})
    if len(currencies) > 1:
        problems.append(
            FieldProblem(
                ("body", "items"),
                f"all items of one order must share a currency, got {', '.join(currencies)}; "
                "place one order per currency",
                "mixed_currency",
            )
        )
    if problems:
        raise PricingError(problems)
    total = money(sum((p.line_total for p in priced), Decimal(0)))
    return PricedOrder(tuple(priced), total, currencies[0])


# --- access tokens ---------------------------------------------------------------------------

TOKEN_BYTES = 32  # 256 random bits: a fast keyed hash is enough, no password hashing needed
_TOKEN_HASH_CONTEXT = b"bitloot/order-token/v1\x00"
_TOKEN_SEED_CONTEXT = b"bitloot/order-token-seed/v1\x00"


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_token_seed() -> bytes:
    return secrets.token_bytes(TOKEN_BYTES)


def token_from_seed(pepper: bytes, seed: bytes) -> str:
    """The token of an idempotent order, re-derivable for a retried request.

    The seed is stored with the idempotency key; without the pepper (environment only) it does
    not give the token away, and it is deleted with the key after the retention period.
    """
    digest = hmac.new(pepper, _TOKEN_SEED_CONTEXT + seed, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def hash_token(pepper: bytes, token: str) -> bytes:
    return hmac.new(pepper, _TOKEN_HASH_CONTEXT + token.encode("utf-8"), hashlib.sha256).digest()


def token_matches(pepper: bytes, token: str | None, stored_hash: bytes) -> bool:
    if not token:
        return False
    return hmac.compare_digest(hash_token(pepper, token), stored_hash)


def request_fingerprint(body: Mapping[str, Any]) -> bytes:
    """Same request ⇔ same fingerprint (key order and whitespace do not matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).digest()


# --- what the customer reads -----------------------------------------------------------------

_CONFIRMING = frozenset({"confirming", "confirmed", "sending"})


def customer_message(
    status: OrderStatus, payment_status: str | None = None, reason: str | None = None
) -> str:
    if status is OrderStatus.CREATED:
        return "Order received — continue to payment"
    if status is OrderStatus.AWAITING_PAYMENT:
        if payment_status in _CONFIRMING:
            return "Payment detected — waiting for network confirmations"
        return "Waiting for your payment"
    if status is OrderStatus.PAID:
        return "Payment received — preparing your download"
    if status is OrderStatus.FULFILLED:
        return "Fulfilled — check your email for your download link"
    if status is OrderStatus.UNDERPAID:
        # The provider counts a repeated deposit to the same address towards the payment.
        return (
            "We received less than the order total. Send the missing amount to the same "
            "payment address and the order completes, or contact support with your order id "
            "(underpayments are not refunded automatically)."
        )
    if status is OrderStatus.REFUNDED:
        return (
            "Your payment was refunded, so the order was cancelled: its download link no "
            "longer works."
        )
    if status is OrderStatus.FAILED:
        detail = f" ({reason})" if reason else ""
        return (
            f"The payment did not go through{detail}. Nothing was delivered; "
            "you can place a new order to try again."
        )
    return "The payment window expired before a payment arrived. Place a new order to try again."


def mask_email(email: str) -> str:
    """c***@example.com — enough for the customer to recognise, too little to harvest."""
    local, _, domain = email.partition("@")
    if not domain:
        return "***"
    return f"{local[:1]}***@{domain}"
