"""Pure rules: pricing, the forward-only machine under any event order, tokens, messages."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from orders.domain import (
    CatalogueEntry,
    FieldProblem,
    OrderStatus,
    PricingError,
    RequestedLine,
    can_transition,
    customer_message,
    decide_payment,
    hash_token,
    mask_email,
    new_token,
    price_order,
    request_fingerprint,
    token_from_seed,
    token_matches,
)

CATALOGUE = {
    "a": CatalogueEntry("a", "A", Decimal("9.99"), "usd", True),
    "b": CatalogueEntry("b", "B", Decimal("0.10"), "usd", True),
    "old": CatalogueEntry("old", "Old", Decimal("1.00"), "usd", False),
    "eu": CatalogueEntry("eu", "EU", Decimal("5.00"), "eur", True),
}


def test_total_is_exact_decimal():
    order = price_order([RequestedLine("a", 3), RequestedLine("b", 10)], CATALOGUE)
    assert order.total == Decimal("30.97")  # 29.97 + 1.00; as floats 0.1 * 10 drifts
    assert [line.line_total for line in order.lines] == [Decimal("29.97"), Decimal("1.00")]
    assert order.currency == "usd"


@pytest.mark.parametrize(
    ("lines", "loc", "kind"),
    [
        ([], ("body", "items"), "too_short"),
        ([RequestedLine(f"s{i}", 1) for i in range(21)], ("body", "items"), "too_long"),
        ([RequestedLine("a", 0)], ("body", "items", 0, "quantity"), "quantity_out_of_range"),
        ([RequestedLine("a", 11)], ("body", "items", 0, "quantity"), "quantity_out_of_range"),
        ([RequestedLine("zzz", 1)], ("body", "items", 0, "sku"), "unknown_sku"),
        ([RequestedLine("old", 1)], ("body", "items", 0, "sku"), "unknown_sku"),
        (
            [RequestedLine("a", 1), RequestedLine("a", 1)],
            ("body", "items", 1, "sku"),
            "duplicate_sku",
        ),
        ([RequestedLine("a", 1), RequestedLine("eu", 1)], ("body", "items"), "mixed_currency"),
    ],
)
def test_pricing_refusals_name_the_field(lines, loc, kind):
    with pytest.raises(PricingError) as info:
        price_order(lines, CATALOGUE)
    assert (loc, kind) in {(p.loc, p.type) for p in info.value.problems}


def test_field_names_read_like_paths():
    assert FieldProblem(("body", "items", 3, "sku"), "m", "t").field == "items[3].sku"
    assert FieldProblem(("header", "Idempotency-Key"), "m", "t").field == "Idempotency-Key"
    assert FieldProblem(("body", "email"), "m", "t").field == "email"


def test_transitions_are_forward_only():
    assert can_transition(OrderStatus.CREATED, OrderStatus.PAID)
    assert can_transition(OrderStatus.PAID, OrderStatus.FULFILLED)
    assert not can_transition(OrderStatus.PAID, OrderStatus.PAID)
    assert not can_transition(OrderStatus.PAID, OrderStatus.AWAITING_PAYMENT)
    assert not can_transition(OrderStatus.FULFILLED, OrderStatus.FAILED)
    assert not can_transition(OrderStatus.FAILED, OrderStatus.EXPIRED)
    assert not can_transition(OrderStatus.UNDERPAID, OrderStatus.FAILED)
    # money reported after our clock or a failed attempt still buys the goods
    assert can_transition(OrderStatus.EXPIRED, OrderStatus.PAID)
    assert can_transition(OrderStatus.FAILED, OrderStatus.PAID)


# The whole machine, spelled out: every pair not listed here must be refused.
ALLOWED_EDGES = {
    ("created", "awaiting_payment"),
    ("created", "paid"),
    ("created", "underpaid"),
    ("created", "failed"),
    ("created", "expired"),
    ("awaiting_payment", "paid"),
    ("awaiting_payment", "underpaid"),
    ("awaiting_payment", "failed"),
    ("awaiting_payment", "expired"),
    ("underpaid", "paid"),  # a top-up completes the order
    ("expired", "paid"),  # money after our clock or the provider's gave up
    ("expired", "underpaid"),
    ("failed", "paid"),
    ("failed", "underpaid"),
    ("paid", "fulfilled"),
    ("paid", "refunded"),  # refunded before delivery
    ("fulfilled", "refunded"),  # refunded after delivery: the links are revoked
}


@pytest.mark.parametrize("current", list(OrderStatus))
@pytest.mark.parametrize("target", list(OrderStatus))
def test_state_machine_table(current, target):
    assert can_transition(current, target) is ((current.value, target.value) in ALLOWED_EDGES)


def test_refunded_is_the_end():
    assert not any(can_transition(OrderStatus.REFUNDED, t) for t in OrderStatus)


def _decide(current: OrderStatus, status: str, version: int = 9, known: int | None = 1):
    return decide_payment(
        current=current,
        known_payment_id="p",
        known_version=known,
        event_payment_id="p",
        event_status=status,
        event_version=version,
    )


@pytest.mark.parametrize(
    ("current", "status", "new_status"),
    [
        # a refund of a paid order withdraws the goods, delivered or not
        (OrderStatus.PAID, "refunded", OrderStatus.REFUNDED),
        (OrderStatus.FULFILLED, "refunded", OrderStatus.REFUNDED),
        # a refund of an order never paid is a failed payment, as before
        (OrderStatus.AWAITING_PAYMENT, "refunded", OrderStatus.FAILED),
        (OrderStatus.CREATED, "refunded", OrderStatus.FAILED),
        (OrderStatus.UNDERPAID, "refunded", None),
        (OrderStatus.EXPIRED, "refunded", None),
        (OrderStatus.REFUNDED, "refunded", None),
        # late money completes an order closed by either clock, or a top-up an underpayment
        (OrderStatus.EXPIRED, "finished", OrderStatus.PAID),
        (OrderStatus.UNDERPAID, "finished", OrderStatus.PAID),
        (OrderStatus.FAILED, "finished", OrderStatus.PAID),
        (OrderStatus.EXPIRED, "partially_paid", OrderStatus.UNDERPAID),
        # paid is entered once; nothing moves a refunded order
        (OrderStatus.PAID, "finished", None),
        (OrderStatus.FULFILLED, "finished", None),
        (OrderStatus.REFUNDED, "finished", None),
        (OrderStatus.REFUNDED, "waiting", None),
    ],
)
def test_payment_status_moves_the_order(current, status, new_status):
    assert _decide(current, status).new_status is new_status


def test_a_duplicate_refund_is_stale():
    assert _decide(OrderStatus.REFUNDED, "refunded", version=3, known=3).record is False


# One payment's ledger in order; each entry is (status, version).
LEDGERS = [
    [("waiting", 1), ("confirming", 2), ("confirmed", 3), ("sending", 4), ("finished", 5)],
    [("waiting", 1), ("confirming", 2), ("partially_paid", 3)],
    [("waiting", 1), ("expired", 2)],
    [("waiting", 1), ("confirming", 2), ("failed", 3)],
    # Two final statuses in one ledger: the refund seen first (nothing paid yet) fails the
    # order and makes the finished stale; seen after the finished it refunds the order.
    [("waiting", 1), ("finished", 2), ("refunded", 3)],
    # Money after the provider expired the payment, or a top-up after an underpayment.
    [("waiting", 1), ("expired", 2), ("finished", 3)],
    [("waiting", 1), ("partially_paid", 2), ("finished", 3)],
    [("waiting", 1), ("expired", 2), ("partially_paid", 3), ("finished", 4)],
    # A refund seen before the top-up leaves an underpaid order as it was (as before).
    [("waiting", 1), ("partially_paid", 2), ("finished", 3), ("refunded", 4)],
]
EXPECTED = [
    {OrderStatus.PAID},
    {OrderStatus.UNDERPAID},
    {OrderStatus.EXPIRED},
    {OrderStatus.FAILED},
    {OrderStatus.REFUNDED, OrderStatus.FAILED},
    {OrderStatus.PAID},
    {OrderStatus.PAID},
    {OrderStatus.PAID},
    {OrderStatus.REFUNDED, OrderStatus.UNDERPAID, OrderStatus.FAILED},
]


def _replay(events: list[tuple[str, int]]) -> tuple[OrderStatus, list[OrderStatus], int | None]:
    status, version = OrderStatus.CREATED, None
    entered: list[OrderStatus] = []
    for ps, v in events:
        d = decide_payment(
            current=status,
            known_payment_id="p",
            known_version=version,
            event_payment_id="p",
            event_status=ps,
            event_version=v,
        )
        if d.record:
            version = v
        if d.new_status is not None:
            status = d.new_status
            entered.append(status)
    return status, entered, version


@settings(max_examples=300, deadline=None)
@given(data=st.data(), which=st.integers(min_value=0, max_value=len(LEDGERS) - 1))
def test_any_order_and_any_repeats_reach_the_in_order_outcome(data, which):
    ledger = LEDGERS[which]
    delivered = data.draw(st.lists(st.sampled_from(ledger), min_size=0, max_size=12))
    # every event arrives at least once, in any order, some several times
    events = data.draw(st.permutations([*ledger, *delivered]))
    status, entered, version = _replay(list(events))
    assert status in EXPECTED[which]
    assert entered.count(OrderStatus.PAID) <= 1
    assert len(entered) == len(set(entered))  # no state is entered twice
    assert version == ledger[-1][1]  # the newest status is what the customer sees


def test_stale_versions_only_count_within_one_payment():
    stale = decide_payment(
        current=OrderStatus.AWAITING_PAYMENT,
        known_payment_id="p1",
        known_version=5,
        event_payment_id="p1",
        event_status="finished",
        event_version=4,
    )
    assert (stale.record, stale.new_status) == (False, None)
    other = decide_payment(
        current=OrderStatus.AWAITING_PAYMENT,
        known_payment_id="p1",
        known_version=5,
        event_payment_id="p2",
        event_status="finished",
        event_version=1,
    )
    assert other.new_status is OrderStatus.PAID


def test_unknown_payment_status_is_an_error():
    with pytest.raises(ValueError, match="unknown payment status"):
        decide_payment(
            current=OrderStatus.CREATED,
            known_payment_id=None,
            known_version=None,
            event_payment_id="p",
            event_status="bogus",
            event_version=1,
        )


def test_tokens_hash_with_the_pepper_and_compare_exactly():
    token = new_token()
    assert len(token) == 43 and token != new_token()
    stored = hash_token(b"pepper", token)
    assert len(stored) == 32 and token.encode() not in stored
    assert token_matches(b"pepper", token, stored)
    assert not token_matches(b"other-pepper", token, stored)
    assert not token_matches(b"pepper", token[:-1], stored)
    assert not token_matches(b"pepper", None, stored)
    assert not token_matches(b"pepper", "", stored)


def test_seeded_tokens_are_reproducible_only_with_the_pepper():
    seed = bytes(range(32))
    assert token_from_seed(b"p", seed) == token_from_seed(b"p", seed)
    assert token_from_seed(b"p", seed) != token_from_seed(b"q", seed)
    assert len(token_from_seed(b"p", seed)) == 43


def test_fingerprint_ignores_key_order_only():
    a = request_fingerprint({"email": "x@y.z", "items": [{"sku": "a", "quantity": 1}]})
    b = request_fingerprint({"items": [{"quantity": 1, "sku": "a"}], "email": "x@y.z"})
    c = request_fingerprint({"items": [{"quantity": 2, "sku": "a"}], "email": "x@y.z"})
    assert a == b != c


def test_customer_messages():
    assert customer_message(OrderStatus.AWAITING_PAYMENT, "waiting") == "Waiting for your payment"
    assert "confirmations" in customer_message(OrderStatus.AWAITING_PAYMENT, "confirming")
    underpaid = customer_message(OrderStatus.UNDERPAID)
    assert "missing amount to the same payment address" in underpaid
    assert "contact support" in underpaid and "not refunded automatically" in underpaid
    refunded = customer_message(OrderStatus.REFUNDED)
    assert "refunded" in refunded and "download link no longer works" in refunded
    assert customer_message(OrderStatus.REFUNDED) != customer_message(OrderStatus.EXPIRED)
    assert "try again" in customer_message(OrderStatus.EXPIRED)
    assert "(the payment was refunded)" in customer_message(
        OrderStatus.FAILED, reason="the payment was refunded"
    )


def test_mask_email():
    assert mask_email("casey@example.com") == "c***@example.com"
    assert mask_email("weird") == "***"
