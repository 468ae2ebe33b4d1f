"""The customer-facing reading of each (order status, payment status)."""

from __future__ import annotations

import pytest
from web.order_states import FINAL_ORDER_STATUSES, UNDERPAID_POLICY, status_view


@pytest.mark.parametrize("status", sorted(FINAL_ORDER_STATUSES))
def test_final_order_statuses_stop_polling(status: str) -> None:
    assert status_view(status, None).final


@pytest.mark.parametrize("status", ["created", "awaiting_payment", "paid"])
def test_other_statuses_keep_polling(status: str) -> None:
    assert not status_view(status, "waiting").final


def test_a_late_waiting_after_confirming_does_not_matter_once_paid() -> None:
    assert status_view("paid", "waiting").state == "paid"


def test_only_expired_and_failed_offer_a_new_order() -> None:
    finals = ("fulfilled", "underpaid", "expired", "failed")
    retry = {s for s in finals if status_view(s, None).can_retry}
    assert retry == {"expired", "failed"}


def test_underpaid_falls_back_to_our_policy_text() -> None:
    assert status_view("underpaid", "partially_paid").detail == UNDERPAID_POLICY
    assert status_view("underpaid", None, "orders says so").detail == "orders says so"


def test_a_refunded_order_is_final_offers_no_payment_and_says_so() -> None:
    view = status_view("refunded", "refunded")
    assert (view.state, view.final, view.can_pay, view.tone) == ("refunded", True, False, "error")
    assert "refunded" in view.detail and "no longer works" in view.detail
    assert status_view("refunded", None, "orders says so").detail == "orders says so"


def test_the_underpaid_text_names_the_top_up() -> None:
    assert "same payment address" in UNDERPAID_POLICY
