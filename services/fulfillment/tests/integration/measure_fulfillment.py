"""Figures for the README, not a gate. Not collected by ``make test`` (the file name does not
match ``test_*.py``); ``make bench`` runs it explicitly:

    uv run pytest services/fulfillment/tests/integration/measure_fulfillment.py -s
"""

from __future__ import annotations

import statistics
import time

from shared.testing import wait_for

from ..conftest import PUBLIC_URL, paid_event, publish


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"p50 {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"


async def test_measure_delivery_download_and_end_to_end(make_world, mailbox_capture):
    world = await make_world(worker=False)
    n = 50
    started = time.perf_counter()
    events = [paid_event() for _ in range(n)]  # two items each
    for event in events:
        await world.deliver(event)
    elapsed = time.perf_counter() - started
    print(f"\ndeliver_paid_order (2 items, moto S3 + Postgres): {n / elapsed:.1f} orders/s")

    links = [await world.link(e.order_id) for e in events]
    timings = []
    async with world.client() as client:
        for link in links:
            t0 = time.perf_counter()
            response = await client.get(f"{link.removeprefix(PUBLIC_URL)}/1")
            timings.append(time.perf_counter() - t0)
            assert response.status_code == 302
    print(f"GET /downloads/{{token}}/1 -> 302 (HEAD + count + presign): {_ms(timings)}")

    live = await make_world()
    mailbox_capture.clear()
    latencies = []
    for _ in range(20):
        event = paid_event(items=[("GAME-1", "Space Game", 1)])
        before = len(mailbox_capture.messages())
        t0 = time.perf_counter()
        await publish(live.nats_url, event)
        await wait_for(lambda b=before: len(mailbox_capture.messages()) > b, timeout=30)
        latencies.append(time.perf_counter() - t0)
    print(f"OrderPaid published -> email in the SMTP capture: {_ms(latencies)}")
