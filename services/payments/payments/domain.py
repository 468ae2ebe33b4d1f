"""Payment rules: status mapping, forward-only transitions, amount checks. Pure — no I/O.

Our statuses follow the provider's (DESIGN.md §4) with two additions: ``created`` (we recorded the
payment, nobody has paid yet) and ``mismatch`` (the provider reports a price or currency other
than the one we invoiced — never treated as paid).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from shared.money import amount_text

# The main line, in order. A report whose rank is not above the current one is late or a repeat.
MAIN_LINE: Final[tuple[str, ...]] = (
    "created",
    "waiting",
    "confirming",
    "confirmed",
    "sending",
    "finished",
)
RANK: Final[dict[str, int]] = {status: rank for rank, status in enumerate(MAIN_LINE)}
# Side exits: reachable from any status that is not final, and final themselves.
SIDE_EXITS: Final[frozenset[str]] = frozenset(
    {"partially_paid", "failed", "expired", "refunded", "mismatch"}
)
FINAL: Final[frozenset[str]] = SIDE_EXITS | {"finished"}
PROVIDER_STATUSES: Final[frozenset[str]] = frozenset(
    {
        "waiting",
        "confirming",
        "confirmed",
        "sending",
        "partially_paid",
        "finished",
        "failed",
        "refunded",
        "expired",
    }
)
PROVIDER_FINAL: Final[frozenset[str]] = PROVIDER_STATUSES & FINAL
SOURCES: Final[frozenset[str]] = frozenset({"ipn", "poll", "admin", "invoice"})


def is_final(status: str) -> bool:
    return status in FINAL


@dataclass(frozen=True, slots=True)
class Invoiced:
    """What we asked the customer to pay; the provider must report the same."""

    price_amount: Decimal
    price_currency: str


@dataclass(frozen=True, slots=True)
class ProviderReport:
    """One statement of the provider about a payment, from an IPN or from ``GET /payment``."""

    status: str
    payment_id: str | None = None
    invoice_id: str | None = None
    order_id: str | None = None
    price_amount: Decimal | None = None
    price_currency: str | None = None
    pay_amount: Decimal | None = None
    actually_paid: Decimal | None = None
    pay_currency: str | None = None
    outcome_amount: Decimal | None = None
    outcome_currency: str | None = None
    updated_at_ms: int | None = None
    # A repeated deposit or wrong-asset deposit is a new provider payment naming its parent.
    parent_payment_id: str | None = None
    purchase_id: str | None = None
    # Rate type decides the payment's lifetime: fixed-rate (and fee-paid-by-user) payments
    # freeze the rate for 20 minutes, floating-rate ones wait 7 days for a deposit.
    fixed_rate: bool | None = None
    expires_at_ms: int | None = None  # the provider's expiration_estimate_date / valid_until


@dataclass(frozen=True, slots=True)
class Decision:
    """What a report does to a payment. ``applied`` False: recorded in the ledger, nothing moves."""

    previous: str
    status: str
    applied: bool
    reason: str
    surplus: Decimal | None = None
    shortfall: Decimal | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL


def price_mismatch(invoiced: Invoiced, report: ProviderReport) -> str | None:
    """Why the report's price differs from ours, or None. Exact Decimal comparison: 69.25 equals
    69.250, and a currency differs only by more than its case."""
    if report.price_currency is not None and (
        report.price_currency.strip().lower() != invoiced.price_currency.strip().lower()
    ):
        return (
            f"price_currency {report.price_currency!r} differs from invoiced "
            f"{invoiced.price_currency!r}"
        )
    if report.price_amount is not None and report.price_amount != invoiced.price_amount:
        return (
            f"price_amount {amount_text(report.price_amount)} differs from invoiced "
            f"{amount_text(invoiced.price_amount)}"
        )
    return None


def _ignored(current: str, reason: str) -> Decision:
    return Decision(previous=current, status=current, applied=False, reason=reason)


def decide(current: str, invoiced: Invoiced, report: ProviderReport) -> Decision:
    """Map a provider report onto the payment's current status, forward only."""
    reported = report.status
    if reported not in PROVIDER_STATUSES:
        return _ignored(current, f"unknown provider status {reported[:40]!r}")
    if current in FINAL:
        if reported == current:
            return _ignored(current, "duplicate: already " + current)
        return _ignored(current, f"late {reported}: payment already final ({current})")

    mismatch = price_mismatch(invoiced, report)
    if mismatch is not None:
        return Decision(previous=current, status="mismatch", applied=True, reason=mismatch)

    paid, due = report.actually_paid, report.pay_amount
    if reported == "partially_paid":
        shortfall = due - paid if paid is not None and due is not None and paid < due else None
        return Decision(
            previous=current,
            status="partially_paid",
            applied=True,
            reason="provider reports partially_paid",
            shortfall=shortfall,
        )
    if reported == "finished" and paid is not None and due is not None:
        if paid < due:
            return Decision(
                previous=current,
                status="partially_paid",
                applied=True,
                reason=f"underpaid: actually_paid {amount_text(paid)} < pay_amount "
                f"{amount_text(due)}",
                shortfall=due - paid,
            )
        if paid > due:
            return Decision(
                previous=current,
                status="finished",
                applied=True,
                reason=f"overpaid by {amount_text(paid - due)}",
                surplus=paid - due,
            )
    if reported in SIDE_EXITS:
        return Decision(previous=current, status=reported, applied=True, reason=reported)

    target_rank, current_rank = RANK[reported], RANK.get(current, 0)
    if target_rank == current_rank:
        return _ignored(current, "duplicate: already " + current)
    if target_rank < current_rank:
        return _ignored(current, f"late {reported}: already {current}")
    return Decision(previous=current, status=reported, applied=True, reason=reported)


def expired_decision(current: str, reason: str) -> Decision:
    """The poller's verdict on an invoice nobody paid within its lifetime."""
    if current in FINAL:
        return _ignored(current, f"late expiry: payment already final ({current})")
    return Decision(previous=current, status="expired", applied=True, reason=reason)


# Among several provider payments for one invoice, the one that tells the order the most:
# money that arrived beats money in flight beats nothing.
_PICK_PRIORITY: Final[dict[str, int]] = {
    "finished": 9,
    "partially_paid": 8,
    "refunded": 7,
    "sending": 5,
    "confirmed": 4,
    "confirming": 3,
    "waiting": 2,
    "failed": 1,
    "expired": 0,
}


def pick_payment(reports: list[ProviderReport]) -> ProviderReport | None:
    """The provider payment that decides an invoice's fate (see ``_PICK_PRIORITY``)."""
    if not reports:
        return None
    return max(
        reports,
        key=lambda r: (_PICK_PRIORITY.get(r.status, -1), r.updated_at_ms or 0),
    )


def next_check_delay(checks_done: int, base: float, ceiling: float) -> timedelta:
    """Exponential backoff between reconciliation checks: base, 2·base, 4·base … ≤ ceiling."""
    exponent = min(max(checks_done, 0), 30)
    return timedelta(seconds=min(base * (2**exponent), ceiling))


def invoice_overdue(expires_at: datetime | None, grace: timedelta, now: datetime) -> bool:
    return expires_at is not None and now >= expires_at + grace
