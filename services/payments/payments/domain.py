"""Payment rules: status mapping, forward-only transitions, amount checks. Pure — no I/O.

Our statuses follow the provider's (DESIGN.md §4) with two additions: ``created`` (we recorded the
payment, nobody has paid yet) and ``mismatch`` (the provider reports a price or currency other
than the one we invoiced — never treated as paid).
"""

from __future__ import annotations

from collections.abc import Sequence
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
        "cancelled",  # set by the merchant in the dashboard, not by the customer
    }
)
# A provider payment in one of these holds money (arriving or arrived).
MONEY: Final[frozenset[str]] = frozenset(
    {"confirming", "confirmed", "sending", "partially_paid", "finished"}
)
# Closed without money: a deposit can still arrive afterwards (a late payment, a second try).
CLOSED_WITHOUT_MONEY: Final[frozenset[str]] = frozenset({"expired", "failed", "cancelled"})
IN_FLIGHT: Final[frozenset[str]] = frozenset({"waiting", "confirming", "confirmed", "sending"})
# Money counted towards the order: the provider says it arrived.
CREDITED: Final[frozenset[str]] = frozenset({"partially_paid", "finished"})
PROVIDER_FINAL: Final[frozenset[str]] = (PROVIDER_STATUSES & FINAL) | {"cancelled"}
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


# --- several provider payments per order ---------------------------------------------------
#
# NOWPayments is final *per provider payment*, not per order: a repeated deposit to the same
# address, or a deposit in the wrong asset, arrives as a new payment naming its parent
# (``parent_payment_id``, same invoice and purchase id), and one invoice can carry several
# payments when the customer switches coin (Postman collection, "Repeated Deposits and
# Wrong-Asset Deposits"). So each provider payment keeps its own forward-only status, and the
# order's payment status is a verdict over all of them.


def step_provider_payment(
    current: str | None,
    reported: str,
    *,
    current_at_ms: int | None = None,
    reported_at_ms: int | None = None,
) -> tuple[bool, str]:
    """Does ``reported`` move one provider payment on from ``current``? (applies, reason).

    Forward only per payment, like the provider, with one leniency: money is never turned
    away. A deposit after ``expired``/``failed``/``cancelled`` (a customer paying late) and a
    ``finished`` after ``partially_paid`` apply; ``refunded`` may follow ``finished``. The
    provider's ``updated_at`` (strictly increasing per payment) tells a late report from a
    reordered one: a report older than the state we hold is stale, whatever its status.
    """
    if reported not in PROVIDER_STATUSES:
        return False, f"unknown provider status {reported[:40]!r}"
    if current is None:
        return True, f"provider payment {reported}"
    if reported == current:
        return False, "duplicate: already " + current
    if current_at_ms is not None and reported_at_ms is not None and reported_at_ms < current_at_ms:
        return False, f"late {reported}: older than the {current} we hold"
    if current == "refunded":
        return False, f"late {reported}: provider payment already refunded"
    if current == "finished":
        if reported == "refunded":
            return True, "refunded after finished"
        return False, f"late {reported}: provider payment already finished"
    if current == "partially_paid":
        if reported in ("finished", "refunded"):
            return True, f"{reported} after partially_paid"
        return False, f"late {reported}: provider payment already partially_paid"
    if current in CLOSED_WITHOUT_MONEY:
        if reported in MONEY or reported == "refunded":
            return True, f"money after {current}: {reported}"
        return False, f"late {reported}: provider payment already {current}"
    # current is in flight (waiting … sending)
    if reported in RANK and RANK[reported] <= RANK[current]:
        return False, f"late {reported}: already {current}"
    return True, f"provider payment {reported}"


@dataclass(frozen=True, slots=True)
class ProviderPaymentState:
    """What we know of one provider payment of the order (after its latest applied report)."""

    provider_payment_id: str
    status: str
    parent_payment_id: str | None = None
    price_amount: Decimal | None = None
    price_currency: str | None = None
    pay_amount: Decimal | None = None
    actually_paid: Decimal | None = None
    pay_currency: str | None = None
    outcome_amount: Decimal | None = None
    outcome_currency: str | None = None
    attached: bool = False  # attached by an operator: vouched for, price not compared


@dataclass(frozen=True, slots=True)
class Verdict:
    """The order's payment status over all its provider payments, and why."""

    status: str
    reason: str
    deciding: ProviderPaymentState | None = None
    credited: Decimal | None = None  # money counted towards the order, in pay_currency
    due: Decimal | None = None  # what the deciding payment asked for, in pay_currency
    surplus: Decimal | None = None
    shortfall: Decimal | None = None
    discrepancy: str | None = None  # paid, but the provider's amounts disagree: flag it


def _same_coin(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.strip().lower() == b.strip().lower()


def is_wrong_asset(child: ProviderPaymentState, parent: ProviderPaymentState | None) -> bool:
    return parent is not None and not _same_coin(child.pay_currency, parent.pay_currency)


def _family_verdict(
    invoiced: Invoiced,
    original: ProviderPaymentState,
    children: Sequence[ProviderPaymentState],
    tolerance: Decimal,
) -> Verdict | None:
    """Finished or partially paid by one original payment and its repeated deposits, or None."""
    due = original.pay_amount
    if original.status == "finished":
        paid = original.actually_paid
        discrepancy = None
        surplus = None
        if paid is not None and due is not None and paid < due:
            # Seen for real: finished with actually_paid 0 and a positive outcome_amount. The
            # provider's word (confirmed with GET /payment) decides; the numbers get a look.
            outcome = original.outcome_amount
            discrepancy = (
                f"provider reports finished with actually_paid {amount_text(paid)} < "
                f"pay_amount {amount_text(due)}"
            )
            if outcome is not None:
                discrepancy += f" (outcome {amount_text(outcome)} {original.outcome_currency})"
        elif paid is not None and due is not None and paid > due:
            surplus = paid - due
        reason = "provider reports finished"
        if surplus is not None:
            reason = f"overpaid by {amount_text(surplus)}"
        return Verdict(
            "finished",
            reason,
            original,
            credited=paid,
            due=due,
            surplus=surplus,
            discrepancy=discrepancy,
        )
    # Repeated deposits are converted to the same asset as the original: sum them in Decimal.
    # A child's own status says nothing about the order (the provider warns against shipping on
    # it); only the sum against what the original asked for does.
    counted = [original] if original.status in CREDITED else []
    counted += [
        c
        for c in children
        if c.status in CREDITED and _same_coin(c.pay_currency, original.pay_currency)
    ]
    credited = sum((c.actually_paid or Decimal(0) for c in counted), Decimal(0))
    if not counted or credited <= 0:
        return None
    if due is None:
        return Verdict("partially_paid", "money received, amount due unknown", original, credited)
    if credited >= due * (Decimal(1) - tolerance):
        surplus = credited - due if credited > due else None
        return Verdict(
            "finished",
            f"paid in {len(counted)} deposits: {amount_text(credited)} of "
            f"{amount_text(due)} {original.pay_currency or ''}".rstrip(),
            original,
            credited=credited,
            due=due,
            surplus=surplus,
        )
    return Verdict(
        "partially_paid",
        f"underpaid: {amount_text(credited)} of {amount_text(due)} "
        f"{original.pay_currency or ''}".rstrip(),
        original,
        credited=credited,
        due=due,
        shortfall=due - credited,
    )


def verdict(
    invoiced: Invoiced,
    payments: Sequence[ProviderPaymentState],
    *,
    tolerance: Decimal = Decimal(0),
) -> Verdict | None:
    """Where the order's payment stands given every provider payment we know; None if none.

    Priority: paid (by any original payment, or by one and its top-ups) > partially paid >
    refunded > in flight > closed (mismatch > failed > expired/cancelled).
    """
    if not payments:
        return None
    by_id = {p.provider_payment_id: p for p in payments}
    originals = [p for p in payments if p.parent_payment_id not in by_id]
    families: list[tuple[ProviderPaymentState, list[ProviderPaymentState]]] = []
    mismatched: list[tuple[ProviderPaymentState, str]] = []
    for original in originals:
        problem = None
        if not original.attached and original.parent_payment_id is None:
            problem = price_mismatch(
                invoiced,
                ProviderReport(
                    status=original.status,
                    price_amount=original.price_amount,
                    price_currency=original.price_currency,
                ),
            )
        if problem is not None:
            mismatched.append((original, problem))
            continue
        children = [p for p in payments if p.parent_payment_id == original.provider_payment_id]
        families.append((original, children))

    results = [
        v for o, c in families if (v := _family_verdict(invoiced, o, c, tolerance)) is not None
    ]
    for status in ("finished", "partially_paid"):
        candidates = [v for v in results if v.status == status]
        if candidates:
            return max(candidates, key=lambda v: v.credited or Decimal(0))
    refunded = [p for p in payments if p.status == "refunded"]
    if refunded:
        return Verdict("refunded", "provider reports refunded", refunded[-1])
    # A payment for another price is not money for this order, even while in flight.
    excluded = {o.provider_payment_id for o, _ in mismatched}
    live = [
        p
        for p in payments
        if p.status in IN_FLIGHT
        and p.provider_payment_id not in excluded
        and p.parent_payment_id not in excluded
    ]
    if live:
        top = max(live, key=lambda p: RANK[p.status])
        return Verdict(top.status, f"provider payment {top.provider_payment_id} {top.status}", top)
    if mismatched:
        original, problem = mismatched[0]
        return Verdict("mismatch", problem, original)
    failed = [p for p in payments if p.status == "failed"]
    if failed:
        return Verdict("failed", "failed", failed[-1])
    closed = [p for p in payments if p.status in ("expired", "cancelled")]
    if closed:
        last = closed[-1]
        why = "cancelled by the merchant" if last.status == "cancelled" else "expired"
        return Verdict("expired", why, last)
    return None  # only unknown statuses so far: nothing to say about the order


def step_order_payment(current: str, target: Verdict) -> Decision:
    """Move the order's payment to a new verdict? Forward only, except that money reopens an
    order we had closed: expired/failed/partially_paid/mismatch may still become paid."""
    status = target.status

    def ignored(reason: str) -> Decision:
        return Decision(previous=current, status=current, applied=False, reason=reason)

    if status == current:
        return ignored(f"still {current}: {target.reason}")
    if current == "refunded":
        return ignored(f"payment already refunded; {target.reason}")
    if current == "finished" and status != "refunded":
        return ignored(f"payment already finished; {target.reason}")
    if current in RANK and status in RANK and RANK[status] < RANK[current]:
        return ignored(f"late {status}: already {current}")
    return Decision(
        previous=current,
        status=status,
        applied=True,
        reason=target.reason,
        surplus=target.surplus,
        shortfall=target.shortfall,
    )
