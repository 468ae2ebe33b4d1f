"""The status mapping table, forward-only rule and Decimal amount rules (pure, no I/O)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from payments.domain import (
    FINAL,
    MAIN_LINE,
    PROVIDER_STATUSES,
    Invoiced,
    ProviderReport,
    decide,
    expired_decision,
    invoice_overdue,
    next_check_delay,
    pick_payment,
)
from shared.money import loads_decimal

INVOICED = Invoiced(Decimal("25.00"), "usd")
OUR_STATUSES = (*MAIN_LINE, "partially_paid", "failed", "expired", "refunded", "mismatch")


def report(status: str, **fields: object) -> ProviderReport:
    base: dict[str, object] = {
        "price_amount": Decimal("25"),
        "price_currency": "usd",
        "pay_amount": Decimal("0.00036101"),
        "actually_paid": Decimal("0.00036101") if status == "finished" else Decimal(0),
    }
    base.update(fields)
    return ProviderReport(status=status, **base)  # type: ignore[arg-type]


# (current, reported) -> resulting status, or None when the report is ignored.
# Every provider status against every one of our statuses: 11 x 9 = 99 cases.
def expected(current: str, reported: str) -> str | None:
    if current in FINAL:
        return None  # final is final: late and duplicate reports are ledgered, not applied
    if reported in ("partially_paid", "failed", "expired", "refunded"):
        return reported  # side exits from any live status
    if MAIN_LINE.index(reported) > MAIN_LINE.index(current):
        return reported
    return None  # late (lower) or duplicate (equal)


TABLE = [(c, r, expected(c, r)) for c in OUR_STATUSES for r in sorted(PROVIDER_STATUSES)]


@pytest.mark.parametrize(("current", "reported", "result"), TABLE)
def test_status_mapping_table(current: str, reported: str, result: str | None) -> None:
    decision = decide(current, INVOICED, report(reported))
    if result is None:
        assert not decision.applied
        assert decision.status == current
        kind = "duplicate" if reported == current else "late"
        assert decision.reason.startswith(kind), decision.reason
    else:
        assert decision.applied
        assert (decision.previous, decision.status) == (current, result)
        assert decision.is_final == (result in FINAL)


def test_table_covers_every_provider_status_and_ours() -> None:
    assert {r for _, r, _ in TABLE} == PROVIDER_STATUSES
    assert {c for c, _, _ in TABLE} == set(OUR_STATUSES)
    assert len(TABLE) == 99


def test_finished_then_waiting_stays_finished() -> None:
    finished = decide("confirming", INVOICED, report("finished"))
    assert finished.applied and finished.status == "finished"
    late = decide(finished.status, INVOICED, report("waiting"))
    assert not late.applied and late.status == "finished"
    assert late.reason == "late waiting: payment already final (finished)"


def test_unknown_provider_status_is_ignored_not_guessed() -> None:
    decision = decide("waiting", INVOICED, report("paid_maybe"))
    assert not decision.applied and "unknown provider status" in decision.reason


@pytest.mark.parametrize(
    ("paid", "status", "surplus", "shortfall"),
    [
        ("0.00036101", "finished", None, None),
        ("0.00036100", "partially_paid", None, Decimal("0.00000001")),  # one satoshi short
        ("0.00036102", "finished", Decimal("0.00000001"), None),  # one satoshi over
        ("0.000361010", "finished", None, None),  # same value, another scale
    ],
)
def test_eight_decimal_amounts_compare_exactly(
    paid: str, status: str, surplus: Decimal | None, shortfall: Decimal | None
) -> None:
    decision = decide("sending", INVOICED, report("finished", actually_paid=Decimal(paid)))
    assert (decision.status, decision.surplus, decision.shortfall) == (status, surplus, shortfall)


def test_point_one_plus_point_two_is_exactly_point_three() -> None:
    # Two partial payments of 0.1 and 0.2 pay a 0.3 bill in Decimal, not in float.
    body = b'{"pay_amount": 0.3, "parts": [0.1, 0.2]}'
    data = loads_decimal(body)
    paid = sum(data["parts"], Decimal(0))
    assert paid == data["pay_amount"] == Decimal("0.3")
    assert sum(json.loads(body)["parts"]) != json.loads(body)["pay_amount"]  # float disagrees
    decision = decide(
        "sending", INVOICED, report("finished", pay_amount=data["pay_amount"], actually_paid=paid)
    )
    assert (decision.status, decision.surplus, decision.shortfall) == ("finished", None, None)


def test_partially_paid_from_the_provider_is_underpaid_with_its_shortfall() -> None:
    decision = decide(
        "confirming",
        INVOICED,
        report("partially_paid", pay_amount=Decimal("1.5"), actually_paid=Decimal("0.75")),
    )
    assert (decision.status, decision.shortfall) == ("partially_paid", Decimal("0.75"))
    assert decision.is_final


@pytest.mark.parametrize(
    ("price_amount", "price_currency", "mismatch"),
    [
        (Decimal("25"), "usd", False),
        (Decimal("25.000"), "USD", False),  # same amount, other scale and case
        (Decimal("25.01"), "usd", True),
        (Decimal("24.99999999"), "usd", True),
        (Decimal("25"), "eur", True),
        (None, None, False),  # the report does not say: nothing to compare
    ],
)
def test_price_or_currency_other_than_invoiced_is_a_mismatch(
    price_amount: Decimal | None, price_currency: str | None, mismatch: bool
) -> None:
    decision = decide(
        "waiting",
        INVOICED,
        report("finished", price_amount=price_amount, price_currency=price_currency),
    )
    assert (decision.status == "mismatch") is mismatch
    if mismatch:
        assert decision.applied and decision.is_final


def test_mismatch_is_final_and_never_becomes_paid() -> None:
    assert not decide("mismatch", INVOICED, report("finished")).applied


def test_poller_expiry_only_for_live_payments() -> None:
    assert expired_decision("created", "lifetime").status == "expired"
    late = expired_decision("finished", "lifetime")
    assert not late.applied and late.status == "finished"


def test_pick_payment_prefers_money_that_arrived() -> None:
    expired = ProviderReport("expired", payment_id="1", updated_at_ms=30)
    finished = ProviderReport("finished", payment_id="2", updated_at_ms=10)
    waiting = ProviderReport("waiting", payment_id="3", updated_at_ms=20)
    assert pick_payment([expired, finished, waiting]) == finished
    assert pick_payment([expired, waiting]) == waiting
    assert pick_payment([]) is None


def test_backoff_doubles_up_to_the_ceiling() -> None:
    delays = [next_check_delay(n, 60, 1800).total_seconds() for n in range(7)]
    assert delays == [60, 120, 240, 480, 960, 1800, 1800]
    assert next_check_delay(10_000, 60, 1800) == timedelta(seconds=1800)


def test_invoice_overdue_needs_the_grace_too() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    grace = timedelta(minutes=10)
    assert not invoice_overdue(now - timedelta(minutes=5), grace, now)
    assert invoice_overdue(now - timedelta(minutes=10), grace, now)
    assert not invoice_overdue(None, grace, now)
