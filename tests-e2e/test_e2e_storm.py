"""Storms: many orders, duplicated and reordered IPNs, with and without faults.

Each test ends with the same proof (``assert_exactly_once``): every order fulfilled once, paid
once, one delivery, one completion email, one order_paid event, every payment finished, and
nothing in the dead-letter stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal

import httpx
import pytest
from shared.devstack.postgres import EmbeddedPostgres
from shared.testing import wait_for
from shared.testing.shop import Shop, storm
from shared.testing.stack import Stack
from shared.topology import SERVICES

from .conftest import E2E_EMAIL_BATCH, assert_exactly_once

pytestmark = pytest.mark.timeout(900)

STORM_SIZE = int(os.environ.get("E2E_STORM_SIZE", "500"))
FAULT_STORM_SIZE = int(os.environ.get("E2E_FAULT_STORM_SIZE", "150"))


async def test_storm_every_order_fulfilled_exactly_once(stack: Stack, shop: Shop) -> None:
    result = await storm(shop, STORM_SIZE, label="storm")
    await assert_exactly_once(stack, result)


async def test_kill_9_a_worker_of_each_service_mid_storm(stack: Stack, shop: Shop) -> None:
    killed: list[str] = []

    async def kill_workers() -> None:
        for service in SERVICES:
            for pid in stack.pids(f"{service.name}-worker"):
                os.kill(pid, signal.SIGKILL)
                killed.append(service.name)

    result = await storm(shop, FAULT_STORM_SIZE, label="kill9", fault=kill_workers)
    assert sorted(set(killed)) == sorted(s.name for s in SERVICES)
    # Every email the killed fulfillment worker had handed to SMTP but not yet marked sent may
    # arrive twice, identical; the sender sends at most email_batch_size at once.
    await assert_exactly_once(stack, result, crash_resends_allowed=E2E_EMAIL_BATCH)


async def test_restart_nats_mid_storm(stack: Stack, shop: Shop) -> None:
    async def restart_nats() -> None:
        pids = stack.pids("nats")
        assert pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)  # the launcher restarts it on the same store

        async def back() -> bool:
            return bool(stack.pids("nats")) and stack.pids("nats") != pids

        await wait_for(back, timeout=30, message="nats restarted")

    result = await storm(shop, FAULT_STORM_SIZE, label="natsrestart", fault=restart_nats)
    await assert_exactly_once(stack, result)


async def test_postgres_down_for_10_seconds_mid_storm(stack: Stack, shop: Shop) -> None:
    pg = EmbeddedPostgres(stack.home / "postgres" / "data", stack.ports["pg"])
    gateway_answers: list[int] = []
    secrets = dict(
        line.split("=", 1)
        for line in (stack.home / "secrets.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    probe = json.dumps(
        {"payment_id": 1, "payment_status": "waiting", "actually_paid": 0, "updated_at": 1},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    signature = hmac.new(
        secrets["NOWPAYMENTS_IPN_SECRET"].encode(), probe, hashlib.sha512
    ).hexdigest()

    async def outage() -> None:
        await asyncio.to_thread(pg.stop, "fast")
        async with httpx.AsyncClient(timeout=5) as client:
            # A genuine IPN while the database is down: refused with a retryable 503.
            r = await client.post(
                f"{stack.url('webhooks')}/webhooks/nowpayments",
                content=probe,
                headers={"x-nowpayments-sig": signature, "content-type": "application/json"},
            )
            gateway_answers.append(r.status_code)
        await asyncio.sleep(10)  # the outage itself is the scenario, not a wait for a condition
        await asyncio.to_thread(pg.start)

    result = await storm(shop, FAULT_STORM_SIZE, label="pgdown", fault=outage)
    assert gateway_answers == [503]  # retryable, never a 500
    log = (await shop.http.get(f"{shop.emulator}/_emulator/ipn-log")).json()["entries"]
    assert any(e["status_code"] == 503 for e in log), "the provider saw 503s and retried"
    await assert_exactly_once(stack, result)
