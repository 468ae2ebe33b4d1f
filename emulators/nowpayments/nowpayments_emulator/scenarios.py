"""The status sequences a real payment walks through, per customer behaviour."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from .state import FINAL_STATUSES, Payment

Scenario = Literal[
    "full",
    "underpay",
    "overpay",
    "expire",
    "fail",
    "jump",
    "finished_zero_paid",
    "refund",
    "cancelled",
    "abandon",
]

# Labels of the hosted page's radio buttons (ids: #scenario-<key>).
SCENARIOS: dict[str, str] = {
    "full": "Pay in full",
    "underpay": "Underpay (half the amount)",
    "overpay": "Overpay (10% more)",
    "expire": "Let it expire (never pay)",
    "fail": "Payment fails",
    "jump": "Pay in full, only waiting and finished notified",
    "finished_zero_paid": "Finished with nothing reported paid (actually_paid 0)",
    "refund": "Pay in full, then refunded",
    "cancelled": "Cancelled by the merchant",
    "abandon": "Choose the coin, then go back (payment left waiting)",
}

_FULL = ("waiting", "confirming", "confirmed", "sending", "finished")
_SEQUENCES: dict[str, tuple[str, ...]] = {
    "full": _FULL,
    "underpay": ("waiting", "confirming", "partially_paid"),
    "overpay": _FULL,
    "expire": ("waiting", "expired"),
    "fail": ("waiting", "confirming", "failed"),
    # Real logs jump waiting -> finished: the payment moves through the middle unannounced.
    "jump": _FULL,
    # Seen on the real provider: finished with actually_paid 0 and a positive outcome_amount.
    "finished_zero_paid": ("waiting", "finished"),
    "refund": (*_FULL, "refunded"),
    "cancelled": ("waiting", "cancelled"),
    "abandon": ("waiting",),
}
# Statuses a scenario passes through without an IPN.
_SILENT: dict[str, frozenset[str]] = {
    "jump": frozenset({"confirming", "confirmed", "sending"}),
}

_PAID_SHARE: dict[str, Decimal] = {
    "full": Decimal(1),
    "underpay": Decimal("0.5"),
    "overpay": Decimal("1.1"),
    "expire": Decimal(0),
    "fail": Decimal(1),
    "jump": Decimal(1),
    "finished_zero_paid": Decimal(0),
    "refund": Decimal(1),
    "cancelled": Decimal(0),
    "abandon": Decimal(0),
}


@dataclass(frozen=True, slots=True)
class Step:
    status: str
    actually_paid: Decimal
    # Applied to the payment (GET shows it) but never notified.
    silent: bool = False


def scenario_steps(
    scenario: Scenario,
    payment: Payment,
    *,
    actually_paid: Decimal | None = None,
    statuses: Sequence[str] | None = None,
) -> list[Step]:
    """Steps for a payment that is already `waiting`; the first step re-announces waiting.

    `actually_paid` overrides the scenario's amount; `statuses` overrides its sequence (then
    every status is notified).
    """
    paid = (
        actually_paid
        if actually_paid is not None
        else payment.coin.quantize(payment.pay_amount * _PAID_SHARE[scenario])
    )
    sequence = tuple(statuses) if statuses else _SEQUENCES[scenario]
    silent = frozenset() if statuses else _SILENT.get(scenario, frozenset())
    # Nothing has reached the address while the payment is still waiting.
    return [
        Step(status, Decimal(0) if status == "waiting" else paid, status in silent)
        for status in sequence
    ]


def notified_statuses(steps: Sequence[Step]) -> list[str]:
    return [step.status for step in steps if not step.silent]


def final_status(scenario: Scenario, statuses: Sequence[str] | None = None) -> str:
    sequence = tuple(statuses) if statuses else _SEQUENCES[scenario]
    return sequence[-1]


def is_final(status: str) -> bool:
    return status in FINAL_STATUSES
