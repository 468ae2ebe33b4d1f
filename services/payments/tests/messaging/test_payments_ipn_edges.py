"""IPNs that arrive too early, lie, mismatch, get replayed, or cannot be confirmed yet."""

from __future__ import annotations

import uuid
from decimal import Decimal

from payments.models import Payment
from payments.subscribers import IPN_DURABLE
from shared.messaging.consumer import HANDLED
from shared.testing import wait_for

from ..conftest import (
    API_KEY,
    Emulator,
    IpnBridge,
    StartWorker,
    payment_events,
    wait_events,
)
from .test_payments_flow import applied, create


def not_visible_count() -> float:
    return HANDLED.labels(IPN_DURABLE, "not_yet_visible")._value.get()


async def test_ipn_before_the_payment_row_is_processed_once_the_row_appears(
    start_payments: StartWorker, emulator: Emulator, ipn_bridge: IpnBridge, clean_infra
):
    run = await start_payments()
    # The invoice exists at the provider and gets paid before our row is committed.
    invoice = await emulator.create_invoice(
        order_id="ord-early", price_amount="25", ipn_callback_url=ipn_bridge.url
    )
    before = not_visible_count()
    await emulator.pay(invoice["id"], scenario="full")
    await emulator.idle()
    await wait_for(
        lambda: not_visible_count() >= before + 5, timeout=10, message="every early IPN NAKed"
    )
    assert await run.payment("ord-early") is None

    async with run.ctx.sessions() as session, session.begin():
        session.add(
            Payment(
                id=uuid.uuid4(),
                order_id="ord-early",
                provider="nowpayments",
                status="created",
                price_amount=Decimal("25"),
                price_currency="usd",
                description="",
                invoice_id=str(invoice["id"]),
                invoice_url=invoice["invoice_url"],
            )
        )

    await run.wait_status("ord-early", "finished")

    async def all_ledgered() -> list:
        ledger = await run.ledger("ord-early")
        return ledger if len(ledger) >= 5 else []

    ledger = await wait_for(all_ledgered, timeout=10, message="every early IPN ledgered")
    # Redelivery after a NAK may reorder them; whatever the order, finished is entered once
    # and every IPN is in the ledger.
    assert len(ledger) == 5
    assert applied(ledger).count("finished") == 1
    events = await wait_events(clean_infra.nats_url, len(applied(ledger)))
    assert [e.status for e in events] == applied(ledger)


async def test_price_mismatch_is_flagged_and_never_paid(
    start_payments: StartWorker, emulator: Emulator, ipn_bridge: IpnBridge, clean_infra
):
    run = await start_payments()
    reply = await create(run, "ord-mis", amount="25")
    assert reply.ok
    # Someone pays a payment carrying our order id for 20 USD instead of 25.
    response = await emulator.control.post(
        "/v1/payment",
        json={
            "price_amount": 20,
            "price_currency": "usd",
            "pay_currency": "btc",
            "order_id": "ord-mis",
            "ipn_callback_url": ipn_bridge.url,
        },
        headers={"x-api-key": API_KEY},
    )
    assert response.status_code == 201, response.text
    await emulator.post(
        f"/_emulator/payments/{response.json()['payment_id']}/play", {"scenario": "full"}
    )
    payment = await run.wait_status("ord-mis", "mismatch")
    await emulator.idle()

    async def all_ledgered() -> bool:
        return len(await run.ledger("ord-mis")) == 1 + 5

    await wait_for(all_ledgered, timeout=10, message="every IPN ledgered")
    assert await run.status("ord-mis") == "mismatch"
    assert payment.final_at is not None
    events = await wait_events(clean_infra.nats_url, 1)
    assert [(e.status, e.is_final) for e in events] == [("mismatch", True)]
    assert "price_amount 20 differs from invoiced 25" in (events[0].note or "")
    assert all(e.status != "finished" for e in await payment_events(clean_infra.nats_url))


async def test_replayed_ipn_for_a_final_payment_changes_nothing(
    start_payments: StartWorker, emulator: Emulator, ipn_bridge: IpnBridge, clean_infra
):
    run = await start_payments()
    reply = await create(run, "ord-replay")
    await emulator.pay(reply.invoice_id, scenario="full")
    await run.wait_status("ord-replay", "finished")
    ledger = await run.full_ledger("ord-replay", 1 + 5)
    published = await wait_events(clean_infra.nats_url, len(applied(ledger)))
    original = next(e for e in ipn_bridge.events if e.payment_status == "finished")
    replay = original.model_copy(
        update={
            "event_id": uuid.uuid4(),
            "replay": True,
            "replayed_by": "op-7",
            "replay_reason": "customer says paid",
        }
    )
    await ipn_bridge.publish(replay)
    ledger = await run.full_ledger("ord-replay", 1 + 6)
    [entry] = [t for t in ledger if t.event_id == replay.event_id]
    assert entry.outcome == "ignored" and "replay by op-7" in entry.reason
    assert (entry.from_status, entry.to_status) == ("finished", "finished")
    assert len(await payment_events(clean_infra.nats_url)) == len(published)


async def test_final_ipn_is_acted_on_only_as_the_provider_confirms_it(
    start_payments: StartWorker, emulator: Emulator, ipn_bridge: IpnBridge, clean_infra
):
    run = await start_payments()
    reply = await create(run, "ord-lie")
    paid = await emulator.pay(reply.invoice_id, statuses=["waiting", "confirming"])
    await run.wait_status("ord-lie", "confirming")
    await run.full_ledger("ord-lie", 1 + 2)
    # A body claiming "finished" (a buggy or hostile sender past the signature check):
    # the provider's GET /payment still says confirming, and that is what counts.
    confirming = next(e for e in ipn_bridge.events if e.payment_status == "confirming")
    fake = confirming.model_copy(
        update={
            "event_id": uuid.uuid4(),
            "payment_status": "finished",
            "actually_paid": confirming.pay_amount,
        }
    )
    await ipn_bridge.publish(fake)
    ledger = await run.full_ledger("ord-lie", 1 + 3)
    [entry] = [t for t in ledger if t.event_id == fake.event_id]
    assert entry.outcome == "ignored" and entry.reported_status == "confirming"
    assert "confirmed with the provider (confirming)" in entry.reason
    assert await run.status("ord-lie") == "confirming"
    assert str(paid["payment_id"]) == (await run.payment("ord-lie")).provider_payment_id


async def test_provider_unavailable_for_confirmation_retries_later(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    reply = await create(run, "ord-confirm-retry")
    # The client tries twice per handling (read_retries=1): the first handling fails, the
    # redelivery after provider_unavailable_retry_seconds gets through on its second attempt.
    await emulator.fault(operation="get_payment", count=3, status_code=503)
    before = not_visible_count()
    await emulator.pay(reply.invoice_id, scenario="full")
    await run.wait_status("ord-confirm-retry", "finished")
    assert not_visible_count() >= before + 1
    assert (await emulator.get("/_emulator/faults"))["faults"] == []
