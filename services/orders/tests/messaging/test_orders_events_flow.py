"""Payment and delivery events through real JetStream into the orders worker, and back out."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from orders import subscribers
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
        previous_status="waiting",
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
