"""The status sequences a real payment walks through, per customer behaviour."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from .state import FINAL_STATUSES, Payment

Scenario = Literal["full", "underpay", "overpay", "expire", "fail"]

SCENARIOS: dict[str, str] = {
    "full": "Pay in full",
    "underpay": "Underpay (half the amount)",
    "overpay": "Overpay (10% more)",
    "expire": "Let it expire (never pay)",
    "fail": "Payment fails",
}

_SEQUENCES: dict[str, tuple[str, ...]] = {
    "full": ("waiting", "confirming", "confirmed", "sending", "finished"),
    "underpay": ("waiting", "confirming", "partially_paid"),
    "overpay": ("waiting", "confirming", "confirmed", "sending", "finished"),
    "expire": ("waiting", "expired"),
    "fail": ("waiting", "confirming", "failed"),
}

_PAID_SHARE: dict[str, Decimal] = {
    "full": Decimal(1),
    "underpay": Decimal("0.5"),
    "overpay": Decimal("1.1"),
    "expire": Decimal(0),
    "fail": Decimal(1),
}


@dataclass(frozen=True, slots=True)
class Step:
    status: str
    actually_paid: Decimal


def scenario_steps(
    scenario: Scenario,
    payment: Payment,
    *,
    actually_paid: Decimal | None = None,
    statuses: Sequence[str] | None = None,
) -> list[Step]:
    """Steps for a payment that is already `waiting`; the first step re-announces waiting.

    `actually_paid` overrides the scenario's amount; `statuses` overrides its sequence.
    """
    paid = (
        actually_paid
        if actually_paid is not None
        else payment.coin.quantize(payment.pay_amount * _PAID_SHARE[scenario])
    )
    sequence = tuple(statuses) if statuses else _SEQUENCES[scenario]
    # Nothing has reached the address while the payment is still waiting.
    return [Step(status, Decimal(0) if status == "waiting" else paid) for status in sequence]


def final_status(scenario: Scenario, statuses: Sequence[str] | None = None) -> str:
    sequence = tuple(statuses) if statuses else _SEQUENCES[scenario]
    return sequence[-1]


def is_final(status: str) -> bool:
    return status in FINAL_STATUSES
