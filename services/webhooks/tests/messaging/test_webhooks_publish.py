"""The worker side against real NATS JetStream: the relay publishes each stored IPN exactly once,
and ``webhooks.reprocess`` re-publishes a stored one as a marked replay."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import webhooks_testkit as kit
from shared.contracts.webhooks import IpnReceived, IpnRejected, ReprocessReply, ReprocessRequest
from shared.messaging.broker import make_broker
from shared.messaging.rpc import request
from shared.runtime import running
from shared.testing import wait_for
from webhooks import subscribers
from webhooks.main import build


@pytest.fixture
async def system(clean_infra) -> AsyncIterator:
    """The api and a running worker (relay + reprocess responder) on the shared test infra."""
    settings = kit.make_settings(clean_infra)
    gw = await kit.open_gateway(settings)
    worker = build(settings)
    subscribers.register(worker)
    try:
        async with running(worker, subscribers=True):
            yield gw
    finally:
        await kit.close_gateway(gw)


async def received_events(nats_url: str) -> list[IpnReceived]:
    raw = await kit.stream_messages(nats_url, IpnReceived.SUBJECT)
    return [IpnReceived.model_validate_json(m) for m in raw]


async def test_100_concurrent_deliveries_publish_exactly_one_event(system, db, clean_infra):
    raw = kit.encode(kit.ipn(payment_id=777))
    signature = kit.sign(raw)
    responses = await asyncio.gather(*(kit.post(system.client, raw, signature) for _ in range(100)))
    assert all(r.status_code == 200 for r in responses)
    await wait_for(
        lambda: db.fetchval("SELECT count(*) = 1 FROM webhooks.outbox WHERE sent_at IS NOT NULL"),
        timeout=10,
        message="relay published the one event",
    )
    [row] = await db.fetch("SELECT id, event_id, received_count FROM webhooks.webhook_log")
    assert row["received_count"] == 100
    events = await received_events(clean_infra.nats_url)
    assert len(events) == 1
    assert (events[0].event_id, events[0].webhook_log_id) == (row["event_id"], row["id"])
    assert events[0].payment_id == "777"


async def test_distinct_statuses_are_distinct_published_events(system, db, clean_infra):
    statuses = ["waiting", "confirming", "finished"]
    for n, status in enumerate(statuses):
        body = kit.ipn(payment_id=888, payment_status=status, updated_at=n)
        assert (await kit.post_signed(system.client, body)).status_code == 200
        await kit.post_signed(system.client, body)  # a provider retry changes nothing
    await wait_for(
        lambda: db.fetchval("SELECT count(*) = 3 FROM webhooks.outbox WHERE sent_at IS NOT NULL"),
        timeout=10,
    )
    events = await received_events(clean_infra.nats_url)
    assert sorted(e.payment_status for e in events) == sorted(statuses)
    assert len({e.event_id for e in events}) == 3


async def test_rejection_is_published_as_ipn_rejected(system, db, clean_infra):
    response = await kit.post(system.client, b'{"payment_id":1}', "ab" * 64)
    assert response.status_code == 400
    await wait_for(lambda: kit.stream_messages(clean_infra.nats_url, IpnRejected.SUBJECT))
    [message] = await kit.stream_messages(clean_infra.nats_url, IpnRejected.SUBJECT)
    event = IpnRejected.model_validate_json(message)
    assert event.reason == "invalid_signature"
    assert event.body_excerpt == '{"payment_id":1}'
    assert event.failure_id == await db.fetchval("SELECT id FROM webhooks.webhook_failure")
    assert await received_events(clean_infra.nats_url) == []


async def test_reprocess_republishes_a_stored_ipn_as_a_new_marked_replay(system, db, clean_infra):
    body = kit.ipn(actually_paid=0.000002, order_description="Ключ 🎮")
    assert (await kit.post_signed(system.client, body)).status_code == 200
    log_id = await db.fetchval("SELECT id FROM webhooks.webhook_log")
    await wait_for(lambda: received_events(clean_infra.nats_url))
    [original] = await received_events(clean_infra.nats_url)

    admin = make_broker(clean_infra.nats_url, name="admin-test")
    await admin.connect()
    try:
        reply = await request(
            admin,
            ReprocessRequest(
                webhook_log_id=log_id,
                operator_id="op-42",
                reason="payments missed it",
                correlation_id="corr-replay",
            ),
            ReprocessReply,
            timeout=10,
        )
        assert reply.ok, reply
        assert reply.event_id and reply.event_id != str(original.event_id)

        missing = await request(
            admin,
            ReprocessRequest(webhook_log_id=log_id + 1000, operator_id="op-42", reason="typo"),
            ReprocessReply,
            timeout=10,
        )
        assert (missing.ok, missing.error_code) == (False, "not_found")
    finally:
        await admin.stop()

    await wait_for(
        lambda: _count(received_events(clean_infra.nats_url), 2), timeout=10, message="replay"
    )
    replay = next(e for e in await received_events(clean_infra.nats_url) if e.replay)
    assert str(replay.event_id) == reply.event_id
    assert (replay.replayed_by, replay.replay_reason) == ("op-42", "payments missed it")
    assert replay.correlation_id == "corr-replay"
    assert replay.webhook_log_id == original.webhook_log_id == log_id
    assert replay.dedup_key == original.dedup_key
    assert replay.actually_paid == original.actually_paid
    assert replay.payload == original.payload
    assert replay.raw_body == original.raw_body
    row = await db.fetchrow("SELECT replay_count, received_count FROM webhooks.webhook_log")
    assert (row["replay_count"], row["received_count"]) == (1, 1)
    headers = json.loads(
        await db.fetchval(
            "SELECT headers FROM webhooks.outbox WHERE event_id = $1::uuid", reply.event_id
        )
    )
    assert headers["Nats-Msg-Id"] == reply.event_id


async def _count(events, n: int) -> bool:
    return len(await events) >= n
