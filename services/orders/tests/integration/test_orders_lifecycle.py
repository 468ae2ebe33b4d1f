"""Use cases against the real schema: edge transitions, expiry with replicas, retention."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from orders import jobs, service
from orders.main import build
from orders.models import OrderHistory
from shared.contracts import subjects
from shared.contracts.payments import PaymentStatusChanged
from shared.messaging import NotYetVisibleError
from shared.runtime import running
from shared.testing import wait_for
from sqlalchemy import func, select

from ..conftest import make_settings

PAYMENT = uuid.UUID("0f0e0d0c-0b0a-4908-8706-050403020100")
LIMIT = timedelta(days=7, hours=1)  # the provider's longest lifetime + grace (defaults)


def event(
    order_id: str,
    status: str,
    version: int,
    payment_id: uuid.UUID = PAYMENT,
    note: str | None = None,
) -> PaymentStatusChanged:
    return PaymentStatusChanged(
        payment_id=payment_id,
        order_id=order_id,
        previous_status="waiting",
        status=status,
        is_final=status not in {"waiting", "confirming", "confirmed", "sending"},
        source="poll",
        version=version,
        price_amount=Decimal("19.98"),
        price_currency="usd",
        note=note,
    )


async def apply(ctx, ev: PaymentStatusChanged, now: datetime | None = None):
    async with ctx.sessions() as session, session.begin():
        return await service.apply_payment_status(session, ev, now=now or datetime.now(UTC))


async def test_payment_event_for_an_unknown_order_is_retried_not_dropped(orders_ctx):
    with pytest.raises(NotYetVisibleError):
        await apply(orders_ctx, event(str(uuid.uuid4()), "finished", 3))


async def test_late_payment_after_our_expiry_still_pays(orders_ctx, place_order, probe):
    order = await place_order()
    oid = order["order_id"]
    await apply(orders_ctx, event(oid, "waiting", 1))
    async with orders_ctx.sessions() as session, session.begin():
        expired = await service.expire_due_orders(
            session,
            now=datetime.now(UTC) + LIMIT + timedelta(seconds=1),
            wait_limit=LIMIT,
            batch_size=10,
        )
    assert expired == 1
    assert (await probe.order(oid)).status == "expired"
    await apply(orders_ctx, event(oid, "finished", 2))
    row = await probe.order(oid)
    assert (row.status, row.version) == ("paid", 4)
    assert await probe.outbox_subjects() == [
        subjects.ORDER_CREATED,
        subjects.ORDER_EXPIRED,
        subjects.ORDER_PAID,
    ]


async def test_failed_records_the_reason_and_only_money_moves_it_on(orders_ctx, place_order, probe):
    order = await place_order()
    oid = order["order_id"]
    await apply(orders_ctx, event(oid, "mismatch", 2, note="paid in the wrong coin"))
    row = await probe.order(oid)
    assert row.status == "failed"
    assert row.failure_reason == "the payment did not match the invoice: paid in the wrong coin"
    [failed] = await probe.outbox_events(subjects.ORDER_FAILED)
    assert failed["reason"] == row.failure_reason
    # late progress and stale finals do nothing
    await apply(orders_ctx, event(oid, "waiting", 1, payment_id=uuid.uuid4()))
    await apply(orders_ctx, event(oid, "expired", 2))  # stale (same version)
    row = await probe.order(oid)
    assert (row.status, row.version, row.payment_status) == ("failed", 2, "mismatch")
    # a later successful attempt reported by payments still buys the goods, once
    await apply(orders_ctx, event(oid, "finished", 5))
    await apply(orders_ctx, event(oid, "finished", 6))
    row = await probe.order(oid)
    assert (row.status, row.version) == ("paid", 3)
    assert len(await probe.outbox_events(subjects.ORDER_PAID)) == 1


async def test_refund_after_paid_refunds_the_order(orders_ctx, place_order, probe):
    order = await place_order()
    oid = order["order_id"]
    await apply(orders_ctx, event(oid, "finished", 3))
    refund = event(oid, "refunded", 4, note="merchant refund")
    await apply(orders_ctx, refund)
    await apply(orders_ctx, event(oid, "refunded", 4))  # a repeat: stale
    await apply(orders_ctx, event(oid, "finished", 3))  # a late copy of the payment: stale
    row = await probe.order(oid)
    assert (row.status, row.payment_status, row.version) == ("refunded", "refunded", 3)
    assert row.failure_reason == "the payment was refunded: merchant refund"
    assert await probe.outbox_subjects() == [
        subjects.ORDER_CREATED,
        subjects.ORDER_PAID,
        subjects.ORDER_REFUNDED,
    ]
    [refunded] = await probe.outbox_events(subjects.ORDER_REFUNDED)
    assert (refunded["status"], refunded["previous_status"], refunded["version"]) == (
        "refunded",
        "paid",
        3,
    )
    assert refunded["payment_id"] == str(PAYMENT) and refunded["causation_id"] == str(
        refund.event_id
    )
    assert refunded["reason"] == row.failure_reason


async def test_refund_of_an_order_never_paid_fails_it(orders_ctx, place_order, probe):
    order = await place_order()
    oid = order["order_id"]
    await apply(orders_ctx, event(oid, "waiting", 1))
    await apply(orders_ctx, event(oid, "refunded", 2))
    assert (await probe.order(oid)).status == "failed"
    assert await probe.outbox_subjects() == [subjects.ORDER_CREATED, subjects.ORDER_FAILED]


async def test_the_status_check_knows_refunded_and_nothing_else(orders_ctx, place_order, probe):
    oid = (await place_order())["order_id"]
    update = 'UPDATE orders."order" SET status = :s WHERE id = CAST(:id AS uuid)'
    await probe.execute(update, s="refunded", id=oid)
    with pytest.raises(Exception, match="ck_order_ck_order_status_known"):
        await probe.execute(update, s="bogus", id=oid)


async def test_paid_is_entered_at_most_once_even_by_the_database(orders_ctx, place_order):
    order = await place_order()
    oid = uuid.UUID(order["order_id"])
    await apply(orders_ctx, event(order["order_id"], "finished", 3))
    with pytest.raises(Exception, match="uq_order_history_paid_once"):
        async with orders_ctx.sessions() as session, session.begin():
            session.add(
                OrderHistory(
                    order_id=oid,
                    version=99,
                    from_status="paid",
                    status="paid",
                    at=datetime.now(UTC),
                )
            )


async def _waiting_orders(ctx, place_order, n: int, payment_status: str = "waiting") -> list[str]:
    ids = []
    for _ in range(n):
        order = await place_order()
        await apply(ctx, event(order["order_id"], payment_status, 1))
        ids.append(order["order_id"])
    return ids


async def test_expiry_spares_orders_with_a_payment_under_way(orders_ctx, place_order, probe):
    due = await _waiting_orders(orders_ctx, place_order, 2)
    confirming = await _waiting_orders(orders_ctx, place_order, 1, "confirming")
    never_checked_out = await place_order()
    now = datetime.now(UTC)
    async with orders_ctx.sessions() as session, session.begin():
        assert (
            await service.expire_due_orders(session, now=now, wait_limit=LIMIT, batch_size=10) == 0
        )  # not due yet
    later = now + LIMIT + timedelta(minutes=1)
    assert await jobs.run_expiry_once(orders_ctx, now=later) == 2
    assert {(await probe.order(i)).status for i in due} == {"expired"}
    assert (await probe.order(confirming[0])).status == "awaiting_payment"
    assert (await probe.order(never_checked_out["order_id"])).status == "created"
    expired = await probe.outbox_events(subjects.ORDER_EXPIRED)
    assert sorted(e["order_id"] for e in expired) == sorted(due)
    assert all(e["version"] == 3 for e in expired)
    assert await jobs.run_expiry_once(orders_ctx, now=later) == 0  # idempotent


async def test_two_replicas_expire_each_order_exactly_once(orders_ctx, place_order, probe):
    due = await _waiting_orders(orders_ctx, place_order, 30)
    replicas = [build(make_settings(expiry_batch_size=7)) for _ in range(2)]
    later = datetime.now(UTC) + LIMIT + timedelta(minutes=1)
    try:
        counts = await asyncio.gather(*(jobs.run_expiry_once(r, now=later) for r in replicas))
    finally:
        for r in replicas:
            await r.close()
    assert sum(counts) == 30
    assert len(await probe.outbox_events(subjects.ORDER_EXPIRED)) == 30
    async with orders_ctx.sessions() as session:
        per_order = await session.execute(
            select(OrderHistory.order_id, func.count())
            .where(OrderHistory.status == "expired")
            .group_by(OrderHistory.order_id)
        )
        assert sorted(str(o) for o, c in per_order.all() if c == 1) == sorted(due)


async def test_our_clock_waits_for_the_providers_longest_lifetime(orders_ctx, place_order):
    settings = make_settings()
    assert (settings.invoice_lifetime_seconds, settings.expiry_grace_seconds) == (
        7 * 24 * 3600,
        3600,
    )
    await _waiting_orders(orders_ctx, place_order, 1)
    # A floating-rate payment may still take a deposit days later: the old 30 min deadline,
    # and any time inside the 7 days, expire nothing; only payments' own `expired` does.
    now = datetime.now(UTC)
    for later in (timedelta(minutes=31), timedelta(days=7)):
        assert await jobs.run_expiry_once(orders_ctx, now=now + later) == 0
    assert await jobs.run_expiry_once(orders_ctx, now=now + LIMIT + timedelta(seconds=5)) == 1


async def test_the_worker_job_expires_due_orders(clean_infra, place_order, orders_ctx, probe):
    [oid] = await _waiting_orders(orders_ctx, place_order, 1)
    await probe.execute(
        "UPDATE orders.\"order\" SET awaiting_since = now() - interval '8 days' "
        "WHERE id = CAST(:id AS uuid)",
        id=oid,
    )
    worker = build(make_settings(expiry_check_seconds=0.05))
    async with running(worker, subscribers=True, jobs=[jobs.expiry_job]):
        await wait_for(lambda: probe.stream_count(subjects.ORDER_EXPIRED), timeout=30)
    assert (await probe.order(oid)).status == "expired"


async def test_idempotency_keys_are_forgotten_after_retention(orders_api, orders_ctx, probe):
    body = {"email": "p@example.com", "items": [{"sku": "game-key", "quantity": 1}]}
    await orders_api.post("/orders", json=body, headers={"Idempotency-Key": "old"})
    assert await jobs.purge_once(orders_ctx) == 0
    purged = await jobs.purge_once(orders_ctx, now=datetime.now(UTC) + timedelta(days=2))
    assert purged == 1
    assert await probe.sql("SELECT key FROM orders.idempotency_key") == []
