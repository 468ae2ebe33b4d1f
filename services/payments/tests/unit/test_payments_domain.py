"""Status rules per provider payment, the order's verdict over all of them, and Decimal amount
rules (pure, no I/O)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from payments.domain import (
    CLOSED_WITHOUT_MONEY,
    FINAL,
    MAIN_LINE,
    MONEY,
    PROVIDER_STATUSES,
    Invoiced,
    ProviderPaymentState,
    ProviderReport,
    Verdict,
    expired_decision,
    invoice_overdue,
    next_check_delay,
    pick_payment,
    step_order_payment,
    step_provider_payment,
    verdict,
)
from shared.money import loads_decimal

INVOICED = Invoiced(Decimal("25.00"), "usd")
DUE = Decimal("0.00036101")


def pp(
    status: str,
    ppid: str = "5000000001",
    *,
    parent: str | None = None,
    paid: str | Decimal | None = None,
    due: Decimal | None = DUE,
    coin: str = "btc",
    price: Decimal | None = Decimal("25"),
    currency: str | None = "usd",
    attached: bool = False,
) -> ProviderPaymentState:
    if paid is None:
        paid = due if status == "finished" and due is not None else Decimal(0)
    return ProviderPaymentState(
        provider_payment_id=ppid,
        status=status,
        parent_payment_id=parent,
        price_amount=price if parent is None else None,
        price_currency=currency if parent is None else None,
        pay_amount=due,
        actually_paid=Decimal(paid),
        pay_currency=coin,
        attached=attached,
    )


# --- one provider payment: forward only, but money is never turned away -----------------


def expected_step(current: str | None, reported: str) -> bool:
    if current is None:
        return True
    if reported == current or current == "refunded":
        return False
    if current == "finished":
        return reported == "refunded"
    if current == "partially_paid":
        return reported in ("finished", "refunded")
    if current in CLOSED_WITHOUT_MONEY:
        return reported in MONEY or reported == "refunded"
    # in flight: main line forward, any side exit
    if reported in MAIN_LINE:
        return MAIN_LINE.index(reported) > MAIN_LINE.index(current)
    return True


CURRENTS = (None, *sorted(PROVIDER_STATUSES))
STEP_TABLE = [(c, r, expected_step(c, r)) for c in CURRENTS for r in sorted(PROVIDER_STATUSES)]


@pytest.mark.parametrize(("current", "reported", "applies"), STEP_TABLE)
def test_provider_payment_step_table(current: str | None, reported: str, applies: bool) -> None:
    result, reason = step_provider_payment(current, reported)
    assert result is applies, reason
    if not applies:
        kind = "duplicate" if reported == current else "late"
        assert reason.startswith(kind), reason


def test_step_table_covers_every_provider_status() -> None:
    assert {r for _, r, _ in STEP_TABLE} == PROVIDER_STATUSES
    assert len(STEP_TABLE) == 11 * 10


def test_late_waiting_after_finished_is_ignored_and_refund_is_not() -> None:
    assert step_provider_payment("finished", "waiting") == (
        False,
        "late waiting: provider payment already finished",
    )
    assert step_provider_payment("finished", "refunded")[0]


def test_money_after_expiry_is_taken() -> None:
    assert step_provider_payment("expired", "confirming")[0]
    assert step_provider_payment("expired", "finished")[0]
    assert not step_provider_payment("expired", "waiting")[0]


def test_a_reordered_report_is_told_from_late_money_by_the_providers_clock() -> None:
    # confirming (t=2) delivered after failed (t=3): stale, not money arriving after failure.
    applies, reason = step_provider_payment(
        "failed", "confirming", current_at_ms=3, reported_at_ms=2
    )
    assert not applies and reason.startswith("late confirming: older than")
    assert step_provider_payment("failed", "confirming", current_at_ms=3, reported_at_ms=4)[0]


def test_unknown_provider_status_is_recorded_not_guessed() -> None:
    applies, reason = step_provider_payment("waiting", "status_from_the_future")
    assert not applies and "unknown provider status" in reason


# --- the order's verdict over its provider payments --------------------------------------


@pytest.mark.parametrize(
    ("paid", "surplus", "discrepancy"),
    [
        ("0.00036101", None, False),
        ("0.00036100", None, True),  # one satoshi short, but the provider says finished
        ("0.00036102", Decimal("0.00000001"), False),  # one satoshi over
        ("0.000361010", None, False),  # same value, another scale
        ("0", None, True),  # seen for real: finished with actually_paid 0
    ],
)
def test_finished_delivers_and_flags_an_amount_discrepancy(
    paid: str, surplus: Decimal | None, discrepancy: bool
) -> None:
    result = verdict(INVOICED, [pp("finished", paid=paid)])
    assert result is not None
    assert (result.status, result.surplus) == ("finished", surplus)
    assert (result.discrepancy is not None) is discrepancy


def test_partially_paid_is_underpaid_with_its_shortfall() -> None:
    result = verdict(INVOICED, [pp("partially_paid", paid="0.0002", due=Decimal("0.0005"))])
    assert result is not None
    assert (result.status, result.shortfall) == ("partially_paid", Decimal("0.0003"))


def test_a_top_up_to_the_same_address_completes_the_order() -> None:
    parent = pp("partially_paid", paid="0.1", due=Decimal("0.3"))
    top_up = pp("partially_paid", "5000000002", parent=parent.provider_payment_id, paid="0.2")
    result = verdict(INVOICED, [parent, top_up])
    assert result is not None
    assert result.status == "finished"
    assert (result.credited, result.surplus, result.shortfall) == (Decimal("0.3"), None, None)


def test_point_one_plus_point_two_is_exactly_point_three() -> None:
    body = b'{"pay_amount": 0.3, "parts": [0.1, 0.2]}'
    data = loads_decimal(body)
    assert sum(json.loads(body)["parts"]) != json.loads(body)["pay_amount"]  # float disagrees
    parent = pp("partially_paid", paid=data["parts"][0], due=data["pay_amount"])
    child = pp("finished", "5000000002", parent=parent.provider_payment_id, paid=data["parts"][1])
    result = verdict(INVOICED, [parent, child])
    assert result is not None and result.status == "finished"


def test_a_child_marked_finished_does_not_pay_a_short_sum() -> None:
    # The provider may mark every repeated deposit "finished" (an account setting) and warns
    # against shipping on it: only the sum counts.
    parent = pp("partially_paid", paid="0.1", due=Decimal("0.5"))
    child = pp("finished", "5000000002", parent=parent.provider_payment_id, paid="0.1")
    result = verdict(INVOICED, [parent, child])
    assert result is not None
    assert (result.status, result.shortfall) == ("partially_paid", Decimal("0.3"))


def test_the_tolerance_forgives_a_small_shortfall_only() -> None:
    parent = pp("partially_paid", paid="0.995", due=Decimal("1"))
    assert verdict(INVOICED, [parent]).status == "partially_paid"  # type: ignore[union-attr]
    forgiving = verdict(INVOICED, [parent], tolerance=Decimal("0.005"))
    assert forgiving is not None and forgiving.status == "finished"
    too_short = pp("partially_paid", paid="0.99", due=Decimal("1"))
    assert verdict(INVOICED, [too_short], tolerance=Decimal("0.005")).status == "partially_paid"  # type: ignore[union-attr]


def test_a_wrong_asset_deposit_is_not_summed() -> None:
    parent = pp("partially_paid", paid="0.1", due=Decimal("0.2"))
    wrong = pp("finished", "5000000002", parent=parent.provider_payment_id, paid="5", coin="eth")
    result = verdict(INVOICED, [parent, wrong])
    assert result is not None and result.status == "partially_paid"


def test_a_second_coin_on_the_same_invoice_keeps_the_order_open() -> None:
    first = pp("expired", "5000000001")
    second = pp("waiting", "5000000002", coin="eth")
    result = verdict(INVOICED, [first, second])
    assert result is not None and result.status == "waiting"
    paid = verdict(INVOICED, [first, pp("finished", "5000000002", coin="eth")])
    assert paid is not None and paid.status == "finished"


@pytest.mark.parametrize(
    ("price", "currency", "status"),
    [
        (Decimal("25"), "usd", "finished"),
        (Decimal("25.000"), "USD", "finished"),  # same amount, other scale and case
        (Decimal("25.01"), "usd", "mismatch"),
        (Decimal("24.99999999"), "usd", "mismatch"),
        (Decimal("25"), "eur", "mismatch"),
        (None, None, "finished"),  # the report does not say: nothing to compare
    ],
)
def test_price_or_currency_other_than_invoiced_is_a_mismatch(
    price: Decimal | None, currency: str | None, status: str
) -> None:
    result = verdict(INVOICED, [pp("finished", price=price, currency=currency)])
    assert result is not None and result.status == status


def test_an_operator_attached_payment_is_not_price_checked() -> None:
    result = verdict(INVOICED, [pp("finished", price=Decimal("99"), attached=True)])
    assert result is not None and result.status == "finished"


@pytest.mark.parametrize(
    ("states", "status"),
    [
        (["cancelled"], "expired"),
        (["expired"], "expired"),
        (["failed", "expired"], "failed"),
        (["refunded"], "refunded"),
        (["waiting", "confirming"], "confirming"),
    ],
)
def test_closed_and_live_verdicts(states: list[str], status: str) -> None:
    payments = [pp(s, str(5000000001 + i)) for i, s in enumerate(states)]
    result = verdict(INVOICED, payments)
    assert result is not None and result.status == status


def test_no_payment_no_verdict() -> None:
    assert verdict(INVOICED, []) is None


# --- the order's payment moves forward, reopened only by money ---------------------------


def v(status: str) -> Verdict:
    return Verdict(status, status)


@pytest.mark.parametrize(
    ("current", "target", "applies"),
    [
        ("created", "waiting", True),
        ("waiting", "finished", True),
        ("confirming", "waiting", False),  # late
        ("finished", "waiting", False),
        ("finished", "partially_paid", False),
        ("finished", "refunded", True),  # a refund after delivery
        ("refunded", "finished", False),
        ("expired", "finished", True),  # money after we had given up
        ("expired", "waiting", True),  # a new payment on the invoice reopens it
        ("partially_paid", "finished", True),  # a top-up completed it
        ("failed", "finished", True),
        ("mismatch", "finished", True),
        ("waiting", "waiting", False),
    ],
)
def test_order_payment_steps(current: str, target: str, applies: bool) -> None:
    decision = step_order_payment(current, v(target))
    assert decision.applied is applies
    assert decision.status == (target if applies else current)
    assert decision.is_final == (decision.status in FINAL)


# --- the poller ---------------------------------------------------------------------------


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
