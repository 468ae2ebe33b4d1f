"""End to end over real HTTP, PostgreSQL and JetStream: orders' request → invoice at the
emulator → the emulator's signed IPNs → the IPN event → payment status and published events."""

from __future__ import annotations

from decimal import Decimal

from payments.domain import RANK
from payments.models import Payment
from shared.contracts.payments import CreateInvoiceReply, CreateInvoiceRequest
from shared.messaging.rpc import request

from ..conftest import (
    Emulator,
    IpnBridge,
    Running,
    StartWorker,
    payment_events,
    wait_attention,
    wait_events,
)


async def create(
    run: Running, order_id: str, amount: str = "25.00", **fields: object
) -> CreateInvoiceReply:
    body = {
        "order_id": order_id,
        "price_amount": Decimal(amount),
        "price_currency": "USD",
        "success_url": "http://shop.test/ok",
        "cancel_url": "http://shop.test/cancel",
        "correlation_id": f"corr-{order_id}",
    } | fields
    return await request(
        run.ctx.broker, CreateInvoiceRequest(**body), CreateInvoiceReply, timeout=10
    )


def applied(ledger: list) -> list[str]:
    return [t.to_status for t in ledger if t.outcome == "applied" and t.source != "invoice"]


RANKS = {**RANK, "partially_paid": 9, "failed": 9, "expired": 9, "refunded": 9, "mismatch": 9}


def assert_forward_only(ledger: list, events: list, final: str) -> None:
    """Whatever order concurrent handling took: statuses only rise, the final one is entered
    once and last, the ledger has no gaps, and the events mirror the applied entries."""
    assert [t.seq for t in ledger] == list(range(1, len(ledger) + 1))
    statuses = applied(ledger)
    assert [RANKS[s] for s in statuses] == sorted({RANKS[s] for s in statuses})
    assert statuses[-1] == final and statuses.count(final) == 1
    assert [e.status for e in events] == statuses
    assert [e.version for e in events] == [
        t.seq for t in ledger if t.outcome == "applied" and t.source != "invoice"
    ]
    assert [e.previous_status for e in events] == ["created", *statuses[:-1]]
    assert [e.is_final for e in events] == [False] * (len(events) - 1) + [True]
    final_seq = next(t.seq for t in ledger if t.outcome == "applied" and t.to_status == final)
    after = [t for t in ledger if t.seq > final_seq]
    assert all((t.outcome, t.to_status) == ("ignored", final) for t in after)


async def test_full_payment_moves_forward_and_publishes_each_change_once(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    # One message at a time, so the exact provider sequence shows; the other tests run the
    # platform's concurrent consumer and assert order-independent outcomes.
    run = await start_payments(consumer_concurrency=1)
    reply = await create(run, "ord-full")
    assert reply.ok, reply
    assert reply.invoice_url and reply.invoice_url.startswith(emulator.url)
    assert reply.invoice_id and reply.invoice_id.isdigit() and int(reply.invoice_id) > 2**32
    assert reply.price_amount == Decimal("25.00") and reply.status == "created"

    # A retry of the same order returns the same invoice and creates none at the provider.
    again = await create(run, "ord-full")
    assert (again.invoice_id, again.payment_id) == (reply.invoice_id, reply.payment_id)
    [invoice] = await emulator.invoices("ord-full")
    assert invoice["success_url"] == "http://shop.test/ok"
    assert invoice["ipn_callback_url"].endswith("/ipn")

    paid = await emulator.pay(reply.invoice_id, scenario="full", pay_currency="btc")
    payment: Payment = await run.wait_status("ord-full", "finished")
    assert payment.provider_payment_id == str(paid["payment_id"])
    assert payment.pay_amount == Decimal(paid["pay_amount"])
    assert payment.actually_paid == payment.pay_amount and payment.surplus is None
    assert payment.next_check_at is None and payment.final_at is not None

    ledger = await run.ledger("ord-full")
    assert applied(ledger) == ["waiting", "confirming", "confirmed", "sending", "finished"]
    assert [t.seq for t in ledger] == list(range(1, len(ledger) + 1))
    assert "confirmed with the provider" in ledger[-1].reason

    events = await wait_events(clean_infra.nats_url, 5)
    assert [e.status for e in events] == [
        "waiting",
        "confirming",
        "confirmed",
        "sending",
        "finished",
    ]
    assert [e.previous_status for e in events][:2] == ["created", "waiting"]
    assert [e.version for e in events] == [2, 3, 4, 5, 6]
    assert [e.is_final for e in events] == [False] * 4 + [True]
    assert {e.correlation_id for e in events} == {"corr-ord-full"}
    final = events[-1]
    assert final.actually_paid == Decimal(paid["pay_amount"]) and final.pay_currency == "btc"
    assert final.invoice_id == reply.invoice_id and str(final.payment_id) == reply.payment_id


async def test_many_concurrent_ipns_for_one_payment_apply_forward_only(
    start_payments: StartWorker, emulator: Emulator, ipn_bridge: IpnBridge, clean_infra
):
    # The platform's concurrent consumer (8 at once) and 20 shuffled copies: the row lock
    # serialises them, so the ledger has no gaps and finished is entered exactly once.
    run = await start_payments()
    assert run.ctx.consumer_policy.concurrency > 1
    reply = await create(run, "ord-storm")
    await emulator.pay(reply.invoice_id, scenario="full", duplicates=4, order="shuffle")
    ledger = await run.full_ledger("ord-storm", 1 + 20)
    assert await run.status("ord-storm") == "finished"
    events = await wait_events(clean_infra.nats_url, len(applied(ledger)))
    assert_forward_only(ledger, events, "finished")


async def test_underpayment_becomes_partially_paid_with_the_shortfall(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    reply = await create(run, "ord-under")
    await emulator.pay(reply.invoice_id, scenario="underpay", pay_currency="ltc")
    payment = await run.wait_status("ord-under", "partially_paid")
    assert payment.actually_paid is not None and payment.pay_amount is not None
    assert payment.actually_paid < payment.pay_amount
    assert payment.shortfall == payment.pay_amount - payment.actually_paid
    ledger = await run.full_ledger("ord-under", 1 + 3)
    events = await wait_events(clean_infra.nats_url, len(applied(ledger)))
    assert_forward_only(ledger, events, "partially_paid")
    assert events[-1].shortfall == payment.shortfall


async def test_finished_with_less_than_due_is_paid_and_the_discrepancy_flagged(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    reply = await create(run, "ord-short-finish")
    # The provider says "finished" (and GET /payment confirms it) but only 0.0001 of the btc
    # due is reported as paid: the provider's word delivers, the numbers go to an operator.
    await emulator.pay(
        reply.invoice_id, scenario="full", pay_currency="btc", actually_paid="0.0001"
    )
    payment = await run.wait_status("ord-short-finish", "finished")
    assert payment.actually_paid == Decimal("0.0001")
    assert payment.shortfall is None
    [flag] = await wait_attention(clean_infra.nats_url, 1)
    assert (flag.kind, flag.order_id) == ("amount_discrepancy", "ord-short-finish")
    assert "actually_paid 0.0001 <" in flag.detail


async def test_overpayment_is_paid_with_the_surplus_recorded(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    reply = await create(run, "ord-over")
    await emulator.pay(reply.invoice_id, scenario="overpay", pay_currency="eth")
    payment = await run.wait_status("ord-over", "finished")
    assert payment.surplus is not None and payment.surplus > 0
    assert payment.actually_paid == payment.pay_amount + payment.surplus
    ledger = await run.full_ledger("ord-over", 1 + 5)
    events = await wait_events(clean_infra.nats_url, len(applied(ledger)))
    assert_forward_only(ledger, events, "finished")
    assert events[-1].surplus == payment.surplus


async def test_expired_and_failed_payments_end_there(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    expire = await create(run, "ord-expire")
    fail = await create(run, "ord-fail")
    await emulator.pay(expire.invoice_id, scenario="expire")
    await emulator.pay(fail.invoice_id, scenario="fail")
    await run.wait_status("ord-expire", "expired")
    await run.wait_status("ord-fail", "failed")
    expire_ledger = await run.full_ledger("ord-expire", 1 + 2)
    fail_ledger = await run.full_ledger("ord-fail", 1 + 3)
    events = await wait_events(
        clean_infra.nats_url, len(applied(expire_ledger)) + len(applied(fail_ledger))
    )
    assert_forward_only(expire_ledger, [e for e in events if e.order_id == "ord-expire"], "expired")
    assert_forward_only(fail_ledger, [e for e in events if e.order_id == "ord-fail"], "failed")


async def test_duplicated_and_reversed_ipns_change_the_payment_once(
    start_payments: StartWorker, emulator: Emulator, ipn_bridge: IpnBridge, clean_infra
):
    # Sequential handling so the provider's reversed order is what the service sees.
    run = await start_payments(consumer_concurrency=1)
    reply = await create(run, "ord-chaos")
    await emulator.pay(reply.invoice_id, scenario="full", duplicates=2, order="reverse")
    await emulator.idle()
    assert len(ipn_bridge.events) == 10  # five statuses, each delivered twice, finished first
    assert [e.payment_status for e in ipn_bridge.events][:2] == ["finished", "finished"]

    ledger = await run.full_ledger("ord-chaos", 1 + 10)
    assert await run.status("ord-chaos") == "finished"
    assert applied(ledger) == ["finished"]
    ignored = [t for t in ledger if t.outcome == "ignored"]
    assert len(ignored) == 9
    assert {t.reported_status for t in ignored} == {
        "finished",
        "sending",
        "confirmed",
        "confirming",
        "waiting",
    }
    late_waiting = [t for t in ignored if t.reported_status == "waiting"]
    assert len(late_waiting) == 2 and all("late waiting" in t.reason for t in late_waiting)
    assert all(t.to_status == "finished" for t in ignored)

    events = await payment_events(clean_infra.nats_url)
    assert [(e.previous_status, e.status) for e in events] == [("created", "finished")]


async def test_late_waiting_after_finished_is_ledgered_and_ignored(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    reply = await create(run, "ord-late")
    paid = await emulator.pay(reply.invoice_id, scenario="full")
    await run.wait_status("ord-late", "finished")
    ledger = await run.full_ledger("ord-late", 1 + 5)
    published = await wait_events(clean_infra.nats_url, len(applied(ledger)))
    # The provider (mis)behaves: it sends a waiting IPN for the finished payment.
    await emulator.post(
        f"/_emulator/payments/{paid['payment_id']}/status", {"payment_status": "waiting"}
    )
    ledger = await run.full_ledger("ord-late", 1 + 6)
    last = ledger[-1]
    assert (last.reported_status, last.outcome) == ("waiting", "ignored")
    assert (last.from_status, last.to_status) == ("finished", "finished")
    assert await run.status("ord-late") == "finished"
    assert len(await payment_events(clean_infra.nats_url)) == len(published)
