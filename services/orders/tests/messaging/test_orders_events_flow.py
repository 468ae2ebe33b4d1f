"""Payment and delivery events through real JetStream into the orders worker, and back out."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from orders import jobs, subscribers
from orders.main import build
from shared.contracts import subjects
from shared.contracts.fulfillment import OrderDelivered
from shared.contracts.payments import PaymentStatusChanged
from shared.runtime import ServiceContext, running
from shared.testing import wait_for

from ..conftest import make_settings

PAYMENT_ID = uuid.UUID("9d7e4c1a-2f0b-4a57-8a44-6c0f3d2b9e10")
FINAL = {"finished", "partially_paid", "failed", "refunded", "expired", "mismatch"}


def payment_event(order_id: str, status: str, version: int, **extra) -> PaymentStatusChanged:
    return PaymentStatusChanged(
        payment_id=extra.pop("payment_id", PAYMENT_ID),
        order_id=order_id,
        previous_status=extra.pop("previous_status", "waiting"),
        status=status,
        is_final=status in FINAL,
        source="ipn",
        version=version,
        price_amount=Decimal("19.98"),
        price_currency="usd",
        **extra,
    )


@pytest.fixture
async def second_worker(orders_worker) -> AsyncIterator[ServiceContext]:
    """Another replica sharing the durable consumers."""
    ctx = build(make_settings())
    subscribers.register(ctx)
    async with running(ctx, subscribers=True):
        yield ctx


async def _settled(
    probe, distinct_events: int, durable: str = subscribers.PAYMENTS_DURABLE
) -> None:
    """Every distinct event handled (inbox rows), nothing left in flight, outbox relayed.

    The inbox count is the decisive part: a message NAKed for a retry is not counted as
    pending by JetStream, so "drained" alone could pass too early.
    """

    async def handled() -> bool:
        return await probe.inbox_count(durable) >= distinct_events

    await wait_for(handled, timeout=30, message=f"{distinct_events} events handled")
    stream = "PAYMENTS" if durable == subscribers.PAYMENTS_DURABLE else "FULFILLMENT"
    await wait_for(
        lambda: probe.consumer_drained(stream, durable), timeout=30, message="consumer drained"
    )
    await wait_for(probe.all_sent, timeout=30, message="outbox relayed")


async def test_order_created_reaches_the_orders_stream(place_order, orders_worker, probe):
    order = await place_order()
    await wait_for(lambda: probe.stream_count(subjects.ORDER_CREATED), timeout=30)
    assert await probe.stream_count(subjects.ORDER_CREATED) == 1
    assert (await probe.order(order["order_id"])).status == "created"


async def test_out_of_order_and_duplicate_payment_events_pay_once(
    place_order, orders_api, orders_worker, second_worker, probe, publish_event
):
    order = await place_order()
    oid = order["order_id"]
    finished = payment_event(oid, "finished", 4)
    late = [
        payment_event(oid, "confirming", 3),
        payment_event(oid, "waiting", 1),
        payment_event(oid, "partially_paid", 2),
    ]
    # finished first, then older ones, then copies of finished: a re-publish with a fresh
    # event id, and the same event again beyond JetStream's duplicate window (new msg id).
    await publish_event(finished)
    await _settled(probe, 1)  # handled first, so its history row and version are known exactly
    for event in late:
        await publish_event(event)
    await publish_event(payment_event(oid, "finished", 4))
    await publish_event(finished, msg_id=f"redelivered-{finished.event_id}")
    await _settled(probe, 5)

    row = await probe.order(oid)
    assert row.status == "paid"
    assert (row.payment_status, row.payment_status_version) == ("finished", 4)
    assert await probe.stream_count(subjects.ORDER_PAID) == 1
    [paid] = await probe.outbox_events(subjects.ORDER_PAID)
    assert paid["version"] == 2 and paid["status"] == "paid"
    assert paid["total"] == "19.98" and paid["payment_id"] == str(PAYMENT_ID)
    assert paid["items"][0]["sku"] == "game-key" and paid["email"] == "player@example.com"
    assert paid["causation_id"] == str(finished.event_id)
    assert paid["correlation_id"] == finished.correlation_id
    assert await probe.stream_count(subjects.ORDER_UNDERPAID) == 0

    view = (
        await orders_api.get(f"/orders/{oid}", headers={"X-Order-Token": order["order_token"]})
    ).json()
    assert view["status"] == "paid"
    assert view["message"] == "Payment received — preparing your download"
    assert [(h["status"], h["cause_event_id"]) for h in view["history"]] == [
        ("created", None),
        ("paid", str(finished.event_id)),
    ]

    delivered = OrderDelivered(
        order_id=oid,
        delivery_id="d-1",
        item_count=1,
        link_expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    await publish_event(delivered)
    await publish_event(delivered, msg_id="again")
    await _settled(probe, 1, subscribers.FULFILLMENT_DURABLE)
    assert (await probe.order(oid)).status == "fulfilled"
    assert await probe.stream_count(subjects.ORDER_FULFILLED) == 1
    [fulfilled] = await probe.outbox_events(subjects.ORDER_FULFILLED)
    assert fulfilled["version"] == 3 and fulfilled["causation_id"] == str(delivered.event_id)
    view = (await orders_api.get(f"/orders/{oid}", params={"token": order["order_token"]})).json()
    assert view["message"] == "Fulfilled — check your email for your download link"
    assert view["history"][-1]["cause_event_id"] == str(delivered.event_id)


async def test_progress_is_shown_while_waiting_and_the_order_ends_paid(
    place_order, orders_api, orders_worker, probe, publish_event
):
    order = await place_order()
    oid, headers = order["order_id"], {"X-Order-Token": order["order_token"]}
    waiting, confirming = payment_event(oid, "waiting", 1), payment_event(oid, "confirming", 2)
    await publish_event(waiting)
    await _settled(probe, 1)  # one at a time: the consumer may overtake (see the test above)
    await publish_event(confirming)
    await _settled(probe, 2)
    view = (await orders_api.get(f"/orders/{oid}", headers=headers)).json()
    assert view["status"] == "awaiting_payment"  # the checkout reply was lost: still fine
    assert view["payment_status"] == "confirming"
    assert view["message"] == "Payment detected — waiting for network confirmations"
    assert [(h["status"], h["cause_event_id"]) for h in view["history"]] == [
        ("created", None),
        ("awaiting_payment", str(waiting.event_id)),
    ]

    await publish_event(payment_event(oid, "finished", 3))
    await _settled(probe, 3)
    view = (await orders_api.get(f"/orders/{oid}", headers=headers)).json()
    assert (view["status"], view["payment_status"]) == ("paid", "finished")
    assert await probe.stream_count(subjects.ORDER_PAID) == 1


@pytest.mark.parametrize(
    ("status", "order_status", "subject"),
    [
        ("partially_paid", "underpaid", subjects.ORDER_UNDERPAID),
        ("refunded", "failed", subjects.ORDER_FAILED),
        ("expired", "expired", subjects.ORDER_EXPIRED),
    ],
)
async def test_final_payment_outcomes_publish_their_order_event(
    place_order, orders_api, orders_worker, probe, publish_event, status, order_status, subject
):
    order = await place_order()
    oid = order["order_id"]
    await publish_event(payment_event(oid, "waiting", 1))
    await publish_event(
        payment_event(
            oid,
            status,
            2,
            actually_paid=Decimal("5.5"),
            pay_amount=Decimal("0.00031"),
            pay_currency="btc",
        )
    )
    await _settled(probe, 2)
    row = await probe.order(oid)
    assert (row.status, row.payment_status, row.payment_status_version) == (order_status, status, 2)
    assert await probe.stream_count(subject) == 1
    assert await probe.stream_count(subjects.ORDER_PAID) == 0
    [event] = await probe.outbox_events(subject)
    # 3 when "waiting" was handled first (created, awaiting_payment, outcome); 2 when the
    # consumer happened to finish the final status first and then ignored "waiting" as stale
    assert event["version"] == row.version in (2, 3)
    if status == "partially_paid":
        assert (event["actually_paid"], event["pay_amount"]) == ("5.5", "0.00031")
    view = (
        await orders_api.get(f"/orders/{oid}", headers={"X-Order-Token": order["order_token"]})
    ).json()
    expected = {
        "underpaid": "not refunded automatically",
        "failed": "refunded",
        "expired": "try again",
    }[order_status]
    assert expected in view["message"]


async def _publish_one_by_one(probe, publish_event, events, handled_before: int = 0) -> int:
    """Each event handled before the next is sent: the consumer may otherwise overtake."""
    for event in events:
        await publish_event(event)
        handled_before += 1
        await _settled(probe, handled_before)
    return handled_before


async def _view(orders_api, order) -> dict:
    response = await orders_api.get(
        f"/orders/{order['order_id']}", headers={"X-Order-Token": order["order_token"]}
    )
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("closed_by", ["payments", "our_clock"])
async def test_money_after_expiry_pays_the_order_once(
    place_order, orders_api, orders_worker, probe, publish_event, closed_by
):
    order = await place_order()
    oid = order["order_id"]
    handled = await _publish_one_by_one(probe, publish_event, [payment_event(oid, "waiting", 1)])
    if closed_by == "payments":
        handled = await _publish_one_by_one(
            probe, publish_event, [payment_event(oid, "expired", 2)], handled
        )
    else:  # the backstop, long after the provider's lifetime
        later = datetime.now(UTC) + timedelta(days=8)
        assert await jobs.run_expiry_once(orders_worker, now=later) == 1
    await wait_for(lambda: probe.stream_count(subjects.ORDER_EXPIRED), timeout=30)
    assert (await probe.order(oid)).status == "expired"

    # The floating-rate deposit lands days later; the provider then retries its IPN and
    # payments may publish the same finished again (new event id) or JetStream redeliver it.
    finished = payment_event(oid, "finished", 3, previous_status="expired")
    handled = await _publish_one_by_one(probe, publish_event, [finished], handled)
    await publish_event(finished, msg_id=f"again-{finished.event_id}")
    await publish_event(payment_event(oid, "finished", 3, previous_status="expired"))
    await _settled(probe, handled + 1)

    row = await probe.order(oid)
    assert (row.status, row.payment_status, row.payment_status_version) == ("paid", "finished", 3)
    assert await probe.stream_count(subjects.ORDER_PAID) == 1
    assert await probe.stream_count(subjects.ORDER_EXPIRED) == 1
    [paid] = await probe.outbox_events(subjects.ORDER_PAID)
    assert paid["causation_id"] == str(finished.event_id) and paid["status"] == "paid"
    view = await _view(orders_api, order)
    assert view["message"] == "Payment received — preparing your download"
    assert [h["status"] for h in view["history"]] == [
        "created",
        "awaiting_payment",
        "expired",
        "paid",
    ]


async def test_a_top_up_after_an_underpayment_pays_the_order_once(
    place_order, orders_api, orders_worker, probe, publish_event
):
    order = await place_order()
    oid = order["order_id"]
    underpaid = payment_event(
        oid, "partially_paid", 2, actually_paid=Decimal("0.0002"), pay_amount=Decimal("0.0003")
    )
    handled = await _publish_one_by_one(
        probe, publish_event, [payment_event(oid, "waiting", 1), underpaid]
    )
    view = await _view(orders_api, order)
    assert view["status"] == "underpaid"
    assert "same payment address" in view["message"]

    top_up = payment_event(oid, "finished", 3, previous_status="partially_paid")
    handled = await _publish_one_by_one(probe, publish_event, [top_up], handled)
    # a late copy of the underpayment and of the finished change nothing
    await publish_event(payment_event(oid, "partially_paid", 2))
    await publish_event(payment_event(oid, "finished", 3, previous_status="partially_paid"))
    await _settled(probe, handled + 2)

    assert (await probe.order(oid)).status == "paid"
    assert await probe.stream_count(subjects.ORDER_UNDERPAID) == 1
    assert await probe.stream_count(subjects.ORDER_PAID) == 1


async def test_a_refund_after_delivery_refunds_the_order_once(
    place_order, orders_api, orders_worker, second_worker, probe, publish_event
):
    order = await place_order()
    oid = order["order_id"]
    await _publish_one_by_one(probe, publish_event, [payment_event(oid, "finished", 2)])
    delivered = OrderDelivered(
        order_id=oid,
        delivery_id="d-1",
        item_count=1,
        link_expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    await publish_event(delivered)
    await _settled(probe, 1, subscribers.FULFILLMENT_DURABLE)
    assert (await probe.order(oid)).status == "fulfilled"

    refund = payment_event(oid, "refunded", 3, previous_status="finished", note="chargeback")
    await publish_event(refund)
    await publish_event(refund, msg_id=f"again-{refund.event_id}")  # beyond the dedup window
    await publish_event(payment_event(oid, "refunded", 3, previous_status="finished"))
    await publish_event(payment_event(oid, "finished", 2))  # late copy of the payment
    await _settled(probe, 4)
    # a delivery reported again after the refund does not bring the order back
    await publish_event(delivered, msg_id="late-delivery")
    again = OrderDelivered(
        order_id=oid, delivery_id="d-1", item_count=1, link_expires_at=delivered.link_expires_at
    )
    await publish_event(again)
    await _settled(probe, 2, subscribers.FULFILLMENT_DURABLE)

    row = await probe.order(oid)
    assert (row.status, row.payment_status, row.version) == ("refunded", "refunded", 4)
    assert await probe.stream_count(subjects.ORDER_REFUNDED) == 1
    assert await probe.stream_count(subjects.ORDER_PAID) == 1
    assert await probe.stream_count(subjects.ORDER_FULFILLED) == 1
    assert await probe.stream_count(subjects.ORDER_FAILED) == 0
    [refunded] = await probe.outbox_events(subjects.ORDER_REFUNDED)
    assert refunded["status"] == "refunded" and refunded["previous_status"] == "fulfilled"
    assert refunded["version"] == 4 and refunded["causation_id"] == str(refund.event_id)
    view = await _view(orders_api, order)
    assert view["status"] == "refunded"
    assert "download link no longer works" in view["message"]
    assert [h["status"] for h in view["history"]][-2:] == ["fulfilled", "refunded"]
