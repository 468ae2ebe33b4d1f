"""The real provider's behaviours, end to end through the emulator, signed IPNs and the worker:
late money, top-ups, a second coin, finished with nothing reported paid, refunds, unknown
statuses, a refused confirmation, and the operators' settle and attach commands."""

from __future__ import annotations

import uuid
from decimal import Decimal

from payments.models import PaymentTransition
from shared.contracts.payments import (
    AttachPaymentRequest,
    PaymentActionReply,
    SettlePaymentRequest,
)
from shared.messaging.rpc import request
from shared.testing.helpers import wait_for

from ..conftest import API_KEY, Emulator, IpnBridge, StartWorker, wait_attention, wait_events
from .test_payments_flow import create

HOUR = 3600.0


async def test_a_payment_two_hours_after_checkout_is_paid(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    # A floating-rate payment waits 7 days for a deposit; our clock must not give up first.
    run = await start_payments(poll_enabled=True, poll_after_seconds=0.2)
    reply = await create(run, "ord-late")
    payment = await run.payment("ord-late")
    assert payment is not None and payment.invoice_expires_at is not None
    assert (payment.invoice_expires_at - payment.created_at).total_seconds() >= 7 * 24 * HOUR - 60
    await emulator.post("/_emulator/clock", {"advance_seconds": 2 * HOUR})
    await emulator.pay(reply.invoice_id, scenario="full")
    paid = await run.wait_status("ord-late", "finished")
    assert paid.actually_paid == paid.pay_amount


async def test_money_after_the_provider_expired_the_payment_still_pays(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    reply = await create(run, "ord-after-expiry")
    paid = await emulator.pay(reply.invoice_id, scenario="expire")
    await run.wait_status("ord-after-expiry", "expired")
    # The customer's coins arrive after all, on the same payment.
    await emulator.post(
        f"/_emulator/payments/{paid['payment_id']}/status",
        {"payment_status": "finished", "actually_paid": paid["pay_amount"]},
    )
    await run.wait_status("ord-after-expiry", "finished")
    events = await wait_events(clean_infra.nats_url, 3)
    assert [(e.previous_status, e.status) for e in events][-1] == ("expired", "finished")
    flags = await wait_attention(clean_infra.nats_url, 1)
    assert [f.kind for f in flags] == ["late_money"]


async def test_a_top_up_to_the_same_address_completes_an_underpaid_order(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    reply = await create(run, "ord-topup")
    first = await emulator.pay(reply.invoice_id, scenario="underpay", pay_currency="ltc")
    under = await run.wait_status("ord-topup", "partially_paid")
    assert under.shortfall is not None and under.shortfall > 0
    child = await emulator.post(
        f"/_emulator/payments/{first['payment_id']}/redeposit",
        {"amount": str(under.shortfall), "status": "partially_paid"},
    )
    assert str(child["parent_payment_id"]) == str(first["payment_id"])
    paid = await run.wait_status("ord-topup", "finished")
    assert paid.actually_paid == paid.pay_amount  # half + the rest, summed in Decimal
    flags = await wait_attention(clean_infra.nats_url, 1)
    assert flags[0].kind == "child_payment"
    assert flags[0].parent_payment_id == str(first["payment_id"])


async def test_a_short_top_up_leaves_it_underpaid_and_a_wrong_asset_is_not_counted(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    reply = await create(run, "ord-short-topup")
    first = await emulator.pay(reply.invoice_id, scenario="underpay", pay_currency="ltc")
    under = await run.wait_status("ord-short-topup", "partially_paid")
    assert under.shortfall is not None
    small = under.shortfall / 4
    # The account marks repeated deposits "finished": the sum, not the child's status, decides.
    await emulator.post(
        f"/_emulator/payments/{first['payment_id']}/redeposit",
        {"amount": str(small), "status": "finished"},
    )
    await emulator.post(
        f"/_emulator/payments/{first['payment_id']}/redeposit",
        {"amount": "1", "pay_currency": "eth", "status": "finished"},
    )
    flags = await wait_attention(clean_infra.nats_url, 2)
    assert sorted(f.kind for f in flags) == ["child_payment", "wrong_asset"]
    await emulator.idle()
    payment = await run.wait_status("ord-short-topup", "partially_paid")
    assert payment.shortfall == under.shortfall - small


async def test_a_second_coin_on_the_same_invoice_is_followed(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    reply = await create(run, "ord-two-coins")
    # The customer picks BTC, goes back, pays with ETH; the abandoned BTC payment expires.
    abandoned = await emulator.pay(reply.invoice_id, scenario="abandon", pay_currency="btc")
    await run.wait_status("ord-two-coins", "waiting")
    second = await emulator.pay(reply.invoice_id, scenario="jump", pay_currency="eth")
    assert second["payment_id"] != abandoned["payment_id"]
    await run.wait_status("ord-two-coins", "finished")
    await emulator.post(
        f"/_emulator/payments/{abandoned['payment_id']}/status", {"payment_status": "expired"}
    )

    async def expiry_recorded() -> list[PaymentTransition] | None:
        ledger = await run.ledger("ord-two-coins")
        return ledger if any(t.reported_status == "expired" for t in ledger) else None

    ledger = await wait_for(expiry_recorded, timeout=10, message="expiry of the first coin")
    expiry = next(t for t in ledger if t.reported_status == "expired")
    assert (expiry.outcome, expiry.to_status) == ("recorded", "finished")
    assert await run.status("ord-two-coins") == "finished"


async def test_finished_with_nothing_reported_paid_delivers_and_is_flagged(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    reply = await create(run, "ord-zero")
    await emulator.pay(reply.invoice_id, scenario="finished_zero_paid")
    payment = await run.wait_status("ord-zero", "finished")
    assert payment.actually_paid == 0 and payment.outcome_amount and payment.outcome_amount > 0
    [flag] = await wait_attention(clean_infra.nats_url, 1)
    assert flag.kind == "amount_discrepancy"


async def test_a_refund_after_finished_is_published(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    reply = await create(run, "ord-refund")
    paid = await emulator.pay(reply.invoice_id, scenario="jump")
    await run.wait_status("ord-refund", "finished")
    await emulator.post(
        f"/_emulator/payments/{paid['payment_id']}/status", {"payment_status": "refunded"}
    )
    await run.wait_status("ord-refund", "refunded")
    events = await wait_events(clean_infra.nats_url, 2)
    assert [e.status for e in events][-2:] == ["finished", "refunded"]
    assert events[-1].previous_status == "finished"
    flags = await wait_attention(clean_infra.nats_url, 1)
    assert flags[-1].kind == "refunded"


async def test_an_unknown_status_is_recorded_and_raised_once(
    start_payments: StartWorker, emulator: Emulator, ipn_bridge: IpnBridge, clean_infra
):
    run = await start_payments()
    reply = await create(run, "ord-unknown")
    paid = await emulator.pay(reply.invoice_id, scenario="abandon")
    await run.wait_status("ord-unknown", "waiting")
    for _ in range(2):
        await emulator.post(
            f"/_emulator/payments/{paid['payment_id']}/status",
            {"payment_status": "status_from_the_future", "allow_unknown_status": True},
        )
    await emulator.idle()
    [flag] = await wait_attention(clean_infra.nats_url, 1)
    assert flag.kind == "unknown_status" and "status_from_the_future" in flag.detail
    ledger = await run.full_ledger("ord-unknown", 4)
    unknown = [t for t in ledger if t.reported_status == "status_from_the_future"]
    assert len(unknown) == 2 and all(t.outcome == "ignored" for t in unknown)
    assert await run.status("ord-unknown") == "waiting"


async def test_a_refused_confirmation_is_reported_not_dead_lettered(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    reply = await create(run, "ord-refused")
    await emulator.fault(operation="get_payment", count=1, status_code=403, code="INVALID_API_KEY")
    await emulator.pay(reply.invoice_id, scenario="jump")
    [flag] = await wait_attention(clean_infra.nats_url, 1)
    assert flag.kind == "provider_refused" and "INVALID_API_KEY" in flag.detail
    payment = await run.payment("ord-refused")
    assert payment is not None and payment.status == "waiting"
    assert payment.next_check_at is not None  # the poller asks again


async def test_an_operator_settles_an_order_exactly_once(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    await create(run, "ord-settle")
    action = SettlePaymentRequest(
        order_id="ord-settle",
        operator="op-1",
        reason="paid by bank transfer",
        action_id=uuid.uuid4(),
    )
    first = await request(run.ctx.broker, action, PaymentActionReply)
    again = await request(run.ctx.broker, action, PaymentActionReply)
    other = await request(
        run.ctx.broker, action.model_copy(update={"action_id": uuid.uuid4()}), PaymentActionReply
    )
    assert (first.ok, first.status, first.changed) == (True, "finished", True)
    assert (again.ok, again.status, again.changed) == (True, "finished", True)  # the first answer
    assert (other.ok, other.changed) == (True, False)  # already paid: nothing to do
    events = await wait_events(clean_infra.nats_url, 1)
    assert [(e.status, e.source) for e in events] == [("finished", "admin")]
    assert "op-1" in (events[0].note or "")
    missing = await request(
        run.ctx.broker,
        action.model_copy(update={"order_id": "ord-nope", "action_id": uuid.uuid4()}),
        PaymentActionReply,
    )
    assert (missing.ok, missing.error_code) == (False, "payment_not_found")


async def test_an_operator_attaches_a_payment_made_outside_the_invoice(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    await create(run, "ord-attach")
    # The customer paid through a payment that names no order of ours.
    response = await emulator.control.post(
        "/v1/payment",
        json={"price_amount": 25, "price_currency": "usd", "pay_currency": "btc"},
        headers={"x-api-key": API_KEY},
    )
    assert response.status_code == 201, response.text
    outside = response.json()["payment_id"]
    await emulator.post(f"/_emulator/payments/{outside}/play", {"scenario": "full"})
    await emulator.idle()
    action = AttachPaymentRequest(
        order_id="ord-attach",
        provider_payment_id=str(outside),
        operator="op-2",
        reason="customer sent the tx hash",
        action_id=uuid.uuid4(),
    )
    first = await request(run.ctx.broker, action, PaymentActionReply)
    assert (first.ok, first.status, first.changed) == (True, "finished", True), first
    twice = await request(
        run.ctx.broker, action.model_copy(update={"action_id": uuid.uuid4()}), PaymentActionReply
    )
    assert (twice.ok, twice.changed) == (True, False)
    await create(run, "ord-other")
    stolen = await request(
        run.ctx.broker,
        action.model_copy(update={"order_id": "ord-other", "action_id": uuid.uuid4()}),
        PaymentActionReply,
    )
    assert (stolen.ok, stolen.error_code) == (False, "belongs_to_other_order")
    unknown = await request(
        run.ctx.broker,
        action.model_copy(update={"provider_payment_id": "123", "action_id": uuid.uuid4()}),
        PaymentActionReply,
    )
    assert (unknown.ok, unknown.error_code) == (False, "provider_payment_not_found")
    events = await wait_events(clean_infra.nats_url, 1)
    assert [(e.status, e.source) for e in events] == [("finished", "admin")]
    payment = await run.payment("ord-attach")
    assert payment is not None and payment.actually_paid == payment.pay_amount
    assert Decimal(0) < payment.actually_paid  # type: ignore[operator]
