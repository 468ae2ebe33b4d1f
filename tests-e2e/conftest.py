"""Whole-system tests: real processes started by the same launcher as ``make dev``.

Everything a test does goes through HTTP (orders API, the emulator's hosted-page/control API,
fulfillment's download endpoint); only the *checks* read the databases, the streams and the
mailbox directly, to prove nothing was lost or done twice.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from shared.testing import wait_for
from shared.testing.shop import (
    Shop,
    StormResult,
    copies_by_recipient,
    db,
    stream_subjects,
)
from shared.testing.stack import Stack, running_stack

__all__ = ["E2E_ENV", "Shop", "assert_exactly_once"]

# The poller and the provider's retries are shortened so the recovery paths finish in seconds;
# the code paths are the production ones.
E2E_ENV = {
    "PAYMENTS_POLL_AFTER_SECONDS": "3",
    "PAYMENTS_POLL_INTERVAL_SECONDS": "2",
    "PAYMENTS_POLL_MAX_INTERVAL_SECONDS": "4",
    "PAYMENTS_POLL_TICK_SECONDS": "1",
    # The real provider keeps retrying for hours; a Postgres outage of 10 s must be bridged.
    "EMULATOR_IPN_RETRIES": "60",
    "EMULATOR_IPN_RETRY_INTERVAL": "1",
    "EMULATOR_STEP_DELAY": "0.02",
    # Emails the sender hands to SMTP at once: what a kill -9 of it may leave sent but unmarked.
    "FULFILLMENT_EMAIL_BATCH_SIZE": "20",
}
E2E_EMAIL_BATCH = int(E2E_ENV["FULFILLMENT_EMAIL_BATCH_SIZE"])


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with running_stack(E2E_ENV) as s:
        yield s


@pytest.fixture
async def shop(stack: Stack) -> AsyncIterator[Shop]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield Shop(stack, client)


async def assert_exactly_once(
    stack: Stack, result: StormResult, *, crash_resends_allowed: int = 0
) -> None:
    """Nothing lost, nothing doubled, for the orders of one storm.

    SMTP has no idempotency: a sender killed between the server's "250 accepted" and the commit
    that marks the email sent re-sends it when its lease ends (docs/decisions.md, "Email:
    at least once, one Message-ID"). ``crash_resends_allowed`` is how many such copies a test
    that kills senders may see in total; each must be the identical message (same Message-ID),
    never a second, different email.
    """
    purchases = result.purchases
    n = len(purchases)
    order_ids = [p.order_id for p in purchases]
    uuids = [uuid.UUID(o) for o in order_ids]
    conn = await db(stack)
    try:
        rows = await conn.fetch(
            "SELECT order_id, status, count(*) AS c FROM orders.order_history "
            "WHERE order_id = ANY($1) AND status IN ('paid', 'fulfilled') GROUP BY 1, 2",
            uuids,
        )
        counts = Counter((str(r["order_id"]), r["status"]) for r in rows for _ in range(r["c"]))
        for oid in order_ids:
            assert counts[(oid, "paid")] == 1, f"{oid} paid {counts[(oid, 'paid')]} times"
            assert counts[(oid, "fulfilled")] == 1, oid
        statuses = await conn.fetch(
            "SELECT order_id, status FROM payments.payment WHERE order_id = ANY($1)", order_ids
        )
        assert len(statuses) == n  # one payment per order, no second invoice
        wrong = [r for r in statuses if r["status"] != "finished"]
        assert wrong == [], wrong[:5]
        deliveries = await conn.fetchval(
            "SELECT count(DISTINCT order_id) FROM fulfillment.delivery WHERE order_id = ANY($1)",
            order_ids,
        )
        delivery_rows = await conn.fetchval(
            "SELECT count(*) FROM fulfillment.delivery WHERE order_id = ANY($1)", order_ids
        )
        assert deliveries == delivery_rows == n

        async def emails_sent() -> bool:
            sent = await conn.fetchval(
                "SELECT count(*) FROM fulfillment.email_log WHERE order_id = ANY($1) "
                "AND template = 'order_completed' AND status = 'sent'",
                order_ids,
            )
            return bool(sent == n)

        await wait_for(emails_sent, timeout=180, message="every completion email sent")
    finally:
        await conn.close()

    copies = copies_by_recipient(stack, "is ready")
    resent = 0
    for p in purchases:
        ids = copies.get(p.email, Counter())
        assert len(ids) == 1, (p.email, ids)  # exactly one completion email per order
        resent += sum(ids.values()) - 1
    assert resent <= crash_resends_allowed, f"{resent} crash-window re-sends"

    paid_events: Counter[str] = Counter()
    for subject, body in await stream_subjects(stack, "ORDERS"):
        if subject == "orders.order_paid.v1":
            paid_events[json.loads(body)["order_id"]] += 1
    for oid in order_ids:
        assert paid_events[oid] == 1, f"order_paid for {oid} published {paid_events[oid]} times"
    assert await stream_subjects(stack, "DEADLETTER") == []
