"""The reconciliation poller against the emulator: lost IPNs, unpaid invoices, two replicas."""

from __future__ import annotations

import asyncio

from payments.client import NowPaymentsClient, ProviderPayment
from payments.subscribers import Worker

from ..conftest import API_KEY, Emulator, IpnBridge, StartWorker, wait_events
from .test_payments_flow import applied, create

ALL_STATUSES = ["waiting", "confirming", "confirmed", "sending", "finished"]


async def test_lost_final_ipn_is_settled_by_the_poller(
    start_payments: StartWorker, emulator: Emulator, ipn_bridge: IpnBridge, clean_infra
):
    run = await start_payments(poll_enabled=True, poll_after_seconds=0.3)
    reply = await create(run, "ord-lost-final")
    await emulator.pay(reply.invoice_id, scenario="full", drop_final=True)
    payment = await run.wait_status("ord-lost-final", "finished")
    assert all(e.payment_status != "finished" for e in ipn_bridge.events)
    ledger = await run.ledger("ord-lost-final")
    # Under load the poll may overtake some IPNs; whichever came first, only a poll could
    # have seen "finished", and it entered it exactly once.
    finished = [t for t in ledger if t.outcome == "applied" and t.to_status == "finished"]
    assert [t.source for t in finished] == ["poll"]
    assert payment.actually_paid == payment.pay_amount
    events = await wait_events(clean_infra.nats_url, len(applied(ledger)))
    assert [(e.source, e.is_final) for e in events if e.status == "finished"] == [("poll", True)]


async def test_payment_without_any_ipn_is_found_through_its_invoice(
    start_payments: StartWorker, emulator: Emulator, ipn_bridge: IpnBridge, clean_infra
):
    run = await start_payments(poll_enabled=True)
    reply = await create(run, "ord-silent")
    paid = await emulator.pay(reply.invoice_id, scenario="full", drop_statuses=ALL_STATUSES)
    payment = await run.wait_status("ord-silent", "finished")
    assert ipn_bridge.events == []
    assert payment.provider_payment_id == str(paid["payment_id"])
    assert applied(await run.ledger("ord-silent")) == ["finished"]


async def test_unpaid_invoice_expires_after_its_lifetime(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments(poll_enabled=True, invoice_lifetime_seconds=0.5)
    await create(run, "ord-never-paid")
    payment = await run.wait_status("ord-never-paid", "expired")
    ledger = await run.ledger("ord-never-paid")
    assert ledger[-1].source == "poll" and "provider lists none" in ledger[-1].reason
    assert payment.next_check_at is None
    [event] = await wait_events(clean_infra.nats_url, 1)
    assert (event.previous_status, event.status, event.source) == ("created", "expired", "poll")


async def test_without_invoice_lookup_the_lifetime_decides(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    # The real list endpoint wants a JWT: the provider refuses, the poller falls back.
    await emulator.fault(
        operation="list_payments",
        count=1000,
        status_code=401,
        code="AUTH_REQUIRED",
        message="Authorization header is empty",
    )
    run = await start_payments(poll_enabled=True, invoice_lifetime_seconds=0.5)
    await create(run, "ord-no-lookup")
    await run.wait_status("ord-no-lookup", "expired")
    ledger = await run.ledger("ord-no-lookup")
    assert "lifetime passed" in ledger[-1].reason


async def test_provider_outage_during_a_poll_keeps_the_payment_open(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments(invoice_lifetime_seconds=0.01)
    await create(run, "ord-outage")
    await emulator.fault(operation="list_payments", count=2, status_code=502)
    claimed = await run.worker.reconcile_once()
    assert claimed == 1
    payment = await run.payment("ord-outage")
    # Overdue, but the provider could not say: never expire on an error.
    assert payment.status == "created" and payment.last_error_code == "INTERNAL_SERVER_ERROR"
    assert payment.next_check_at is not None and payment.checks_done == 1


class CountingClient(NowPaymentsClient):
    calls: list[str]

    async def payments_for_invoice(
        self, invoice_id: str, *, limit: int = 50
    ) -> list[ProviderPayment]:
        self.calls.append(invoice_id)
        return await super().payments_for_invoice(invoice_id, limit=limit)


async def test_two_replicas_never_check_the_same_payment_twice(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments(poll_batch_size=3, poll_interval_seconds=60)
    orders = [f"ord-replica-{i}" for i in range(6)]
    for order in orders:
        reply = await create(run, order)
        await emulator.pay(reply.invoice_id, scenario="full", drop_statuses=ALL_STATUSES)
    await emulator.idle()

    replicas: list[Worker] = []
    for _ in range(2):
        client = CountingClient(
            base_url=f"{emulator.url}/v1",
            api_key=API_KEY,
            email="emulator@bitloot.test",
            password="emulator-password",
            read_retries=0,
        )
        client.calls = []
        replicas.append(Worker(ctx=run.ctx, settings=run.settings, client=client))
    try:
        claimed = await asyncio.gather(*(r.reconcile_once() for r in replicas))
        assert sorted(claimed) == [3, 3]
        calls = [c for r in replicas for c in r.client.calls]  # type: ignore[attr-defined]
        assert len(calls) == len(set(calls)) == 6
        for order in orders:
            assert await run.status(order) == "finished"
            assert applied(await run.ledger(order)) == ["finished"]
        # Nothing is due any more: a third pass claims nothing.
        assert await replicas[0].reconcile_once() == 0
    finally:
        for r in replicas:
            await r.client.aclose()
