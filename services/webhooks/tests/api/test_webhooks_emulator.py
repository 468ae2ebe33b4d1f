"""The provider emulator (an independent implementation of NOWPayments' signing and delivery)
posts real IPNs over HTTP to the webhooks api; every one verifies and is stored once."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
import webhooks_testkit as kit
from nowpayments_emulator import testing  # the emulator is a workspace member: never skipped
from shared.contracts.webhooks import IpnReceived


@asynccontextmanager
async def serve(app) -> AsyncIterator[str]:
    """The webhooks api on a real loopback socket, in this event loop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:  # uvicorn offers no event for this
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{port}{kit.IPN_PATH}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def test_emulator_deliveries_with_duplicates_and_shuffling_store_each_status_once(
    gateway, db
):
    emulator = testing.Harness.create(testing.fast_config(ipn_secret=kit.SECRET))
    try:
        async with serve(gateway.app) as url:
            invoice = await emulator.create_invoice(
                ipn_callback_url=url, order_description="Ключ — 🎮", price_amount=1.5
            )
            paid = await emulator.pay(invoice["id"], scenario="full", duplicates=3, order="shuffle")
            await emulator.idle()
        entries = await emulator.log(payment_id=paid["payment_id"])
    finally:
        await emulator.aclose()

    statuses = paid["statuses"]
    assert entries and {e["outcome"] for e in entries} == {"delivered"}
    assert len(entries) == 3 * len(statuses)
    rows = await db.fetch("SELECT payment_status, received_count FROM webhooks.webhook_log")
    assert sorted(r["payment_status"] for r in rows) == sorted(statuses)
    assert {r["received_count"] for r in rows} == {3}
    events = await db.fetch(
        "SELECT payload FROM webhooks.outbox WHERE subject = $1", IpnReceived.SUBJECT
    )
    received = [IpnReceived.model_validate(json.loads(r["payload"])) for r in events]
    assert sorted(e.payment_status for e in received) == sorted(statuses)
    assert {e.payment_id for e in received} == {str(paid["payment_id"])}
    assert all(e.payload["order_description"] == "Ключ — 🎮" for e in received)
