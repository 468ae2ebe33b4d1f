"""Repository statements against the real PostgreSQL: the one-statement upsert, NOTIFY only for
new rows, failure pruning, and database faults surfacing as DatabaseUnavailableError."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest
import webhooks_testkit as kit
from shared.contracts.webhooks import IpnReceived
from shared.db import DatabaseUnavailableError
from shared.messaging.outbox import notify_channel
from shared.testing import free_port, wait_for
from webhooks import subscribers
from webhooks.domain import read_ipn
from webhooks.main import build
from webhooks.repository import IpnStore, LogRow, stage_event
from webhooks.service import received_event


def row_and_event(body: dict) -> tuple[LogRow, object]:
    raw = kit.encode(body)
    fields = read_ipn(raw)
    now = datetime.now(UTC)
    event = received_event(
        fields, log_id=0, raw_body=raw.decode(), headers={}, received_at=now, correlation_id=None
    )
    row = LogRow(
        provider="nowpayments",
        dedup_key=fields.dedup_key,
        payment_id=fields.payment_id,
        invoice_id=fields.invoice_id,
        order_id=fields.order_id,
        payment_status=fields.payment_status,
        actually_paid=fields.actually_paid,
        provider_updated_at=fields.updated_at,
        signature=kit.sign(raw),
        verified_by="raw/current",
        raw_body=raw,
        headers={},
        source_ip=None,
        received_at=now,
    )
    return row, stage_event(event, "webhook_log_id")


async def test_upsert_inserts_once_and_wakes_the_relay_only_for_new_rows(webhooks_infra, db):
    notifications: list[str] = []
    await db.add_listener(
        notify_channel("webhooks"),
        lambda _conn, _pid, _channel, payload: notifications.append(payload),
    )
    store = IpnStore(webhooks_infra.database_url, pool_size=2)
    try:
        body = kit.ipn()
        row, staged = row_and_event(body)
        first = await store.ingest(row, staged)
        await wait_for(lambda: notifications == [""], timeout=5, message="relay woken")
        row2, staged2 = row_and_event(body)  # a retry: same key, a fresh would-be event
        second = await store.ingest(row2, staged2)
        await store.relay_woken()  # had the duplicate asked for a wake-up, it is sent by now
    finally:
        await store.close()
    assert (first.inserted, first.received_count) == (True, 1)
    assert (second.inserted, second.received_count, second.log_id) == (False, 2, first.log_id)
    assert second.event_id is None
    [payload] = await db.fetch("SELECT payload FROM webhooks.outbox")
    event = IpnReceived.model_validate_json(payload["payload"])
    assert (event.event_id, event.webhook_log_id) == (staged.event_id, first.log_id)
    # Notifications arrive in commit order: once our own marker is in, anything sent for the
    # duplicate would be in too.
    await db.execute(f"SELECT pg_notify('{notify_channel('webhooks')}', 'marker')")
    await wait_for(lambda: "marker" in notifications, timeout=5)
    assert notifications == ["", "marker"]


async def test_store_on_a_closed_port_raises_database_unavailable(webhooks_infra):
    store = IpnStore(
        f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x", pool_size=1, timeout=1
    )
    try:
        with pytest.raises(DatabaseUnavailableError):
            await store.ping()
        row, staged = row_and_event(kit.ipn())
        with pytest.raises(DatabaseUnavailableError):
            await store.ingest(row, staged)
    finally:
        await store.close()


async def test_prune_job_keeps_only_the_newest_failures(webhooks_infra, db):
    await db.executemany(
        "INSERT INTO webhooks.webhook_failure (provider, reason, detail, headers, body_excerpt, "
        "body_size, event_id) VALUES ('nowpayments', 'invalid_signature', 'x', '{}', $1, 1, "
        "gen_random_uuid())",
        [(str(i).encode(),) for i in range(30)],
    )
    settings = kit.make_settings(webhooks_infra, failure_rows_max=10, failure_prune_seconds=0.05)
    ctx = build(settings)
    task = asyncio.create_task(subscribers.prune_failures_job(settings)(ctx))
    try:
        await wait_for(
            lambda: db.fetchval("SELECT count(*) = 10 FROM webhooks.webhook_failure"), timeout=5
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ctx.close()
    kept = [
        r["body_excerpt"]
        for r in await db.fetch("SELECT body_excerpt FROM webhooks.webhook_failure ORDER BY id")
    ]
    assert kept == [str(i).encode() for i in range(20, 30)]


async def test_schema_has_the_dedup_unique_key(webhooks_infra, db):
    await db.execute(
        "INSERT INTO webhooks.webhook_log (provider, dedup_key, payment_id, payment_status, "
        "signature, verified_by, raw_body, headers, event_id) "
        "VALUES ('nowpayments', 'k', '1', 'waiting', 's', 'raw/current', '', '{}', "
        "gen_random_uuid())"
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(
            "INSERT INTO webhooks.webhook_log (provider, dedup_key, payment_id, payment_status, "
            "signature, verified_by, raw_body, headers, event_id) "
            "VALUES ('nowpayments', 'k', '1', 'waiting', 's', 'raw/current', '', '{}', "
            "gen_random_uuid())"
        )


def batch_statements() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("webhooks_ingest_batch_size_count") or 0.0


async def test_deliveries_queued_together_share_one_statement(webhooks_infra, db):
    store = IpnStore(webhooks_infra.database_url, pool_size=3, ingest_concurrency=1)
    try:
        await store.ping()
        same = kit.ipn()
        items = [row_and_event(same), row_and_event(same), row_and_event(kit.ipn())]
        before = batch_statements()
        async with store._slots:  # the only slot is busy: all three queue up behind it
            tasks = [asyncio.create_task(store.ingest(row, staged)) for row, staged in items]
            await wait_for(lambda: len(store._queue) == 3, timeout=5)
        results = await asyncio.gather(*tasks)
    finally:
        await store.close()
    assert batch_statements() - before == 1  # one statement wrote all three
    first, again, other = results
    assert first.log_id == again.log_id != other.log_id
    assert (first.inserted, again.inserted, other.inserted) == (True, False, True)
    assert first.event_id == items[0][1].event_id and again.event_id is None
    rows = await db.fetch("SELECT received_count FROM webhooks.webhook_log ORDER BY id")
    assert sorted(r["received_count"] for r in rows) == [1, 2]
    events = await db.fetch("SELECT event_id FROM webhooks.outbox")
    assert {r["event_id"] for r in events} == {items[0][1].event_id, items[2][1].event_id}


async def test_a_cancelled_caller_does_not_strand_the_others_in_its_batch(webhooks_infra, db):
    store = IpnStore(webhooks_infra.database_url, pool_size=3, ingest_concurrency=1)
    watcher = await asyncpg.connect(webhooks_infra.database_url.replace("+asyncpg", ""))
    blocker = db.transaction()
    try:
        await store.ping()
        items = [row_and_event(kit.ipn()) for _ in range(3)]
        # An uncommitted row with the first key: the batch's insert will wait on it.
        await blocker.start()
        await db.execute(
            "INSERT INTO webhooks.webhook_log (provider, dedup_key, payment_id, payment_status, "
            "signature, verified_by, raw_body, headers, event_id) VALUES ('nowpayments', $1, "
            "'1', 'waiting', 's', 'raw/current', '', '{}', gen_random_uuid())",
            items[0][0].dedup_key,
        )
        tasks = [asyncio.create_task(store.ingest(row, staged)) for row, staged in items]
        await wait_for(
            lambda: watcher.fetchval(
                "SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = "
                "'webhooks-api' AND wait_event_type = 'Lock'"
            ),
            timeout=5,
            message="the batch is blocked in the database",
        )
        tasks[0].cancel()  # its caller goes away while its batch is in the database
        await blocker.rollback()
        results = await asyncio.gather(*tasks[1:])
        assert tasks[0].cancelled()
    finally:
        await watcher.close()
        await store.close()
    assert all(r.inserted for r in results)
    # The batch finished for everyone, the cancelled caller's row included (it was committed;
    # the provider will retry that delivery and get "duplicate").
    assert await db.fetchval("SELECT count(*) FROM webhooks.webhook_log") == 3
