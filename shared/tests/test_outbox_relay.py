"""Outbox against real Postgres and NATS: nothing from rollbacks, exactly once from commits."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from shared.messaging import OutboxRelay, add_to_outbox
from shared.messaging.broker import make_broker
from shared.messaging.outbox import jetstream_publisher
from shared.testing import wait_for
from shared.testing.jetstream import stored_bodies
from sqlalchemy import func, select

from .conftest import Outbox, PingHappened


async def stream_messages(nats_url: str, subject: str) -> list[bytes]:
    """Every message currently stored for ``subject``."""
    return await stored_bodies(nats_url, "ORDERS", subject)


@pytest.fixture
async def broker(clean_infra):
    b = make_broker(clean_infra.nats_url, name="test")
    await b.connect()
    yield b
    await b.stop()


def relay_for(sessions, broker, database_url=None, **kw) -> OutboxRelay:
    return OutboxRelay(
        name="test",
        session_factory=sessions,
        outbox=Outbox,
        publish=jetstream_publisher(broker),
        database_url=database_url,
        **kw,
    )


async def test_rolled_back_transaction_publishes_nothing(platform_db, broker, clean_infra):
    _, sessions = platform_db
    async with sessions() as session, session.begin():
        await add_to_outbox(session, Outbox, PingHappened(note="never"))
        await session.rollback()
    relay = relay_for(sessions, broker)
    assert await relay.publish_pending() == 0
    assert await stream_messages(clean_infra.nats_url, PingHappened.SUBJECT) == []


async def test_commit_publishes_once_even_if_relay_dies_before_marking(
    platform_db, broker, clean_infra
):
    _, sessions = platform_db
    event = PingHappened(note="once")
    async with sessions() as session, session.begin():
        await add_to_outbox(session, Outbox, event)

    crashing = relay_for(sessions, broker)

    async def crash(_ids: list[uuid.UUID]) -> None:
        raise RuntimeError("killed between publish and mark")

    crashing.before_mark = crash
    with pytest.raises(RuntimeError):
        await crashing.publish_pending()
    async with sessions() as session:
        pending = await session.scalar(select(func.count()).where(Outbox.sent_at.is_(None)))
    assert pending == 1  # the mark never happened: the row is still pending

    survivor = relay_for(sessions, broker)
    assert await survivor.publish_pending() == 1
    messages = await stream_messages(clean_infra.nats_url, PingHappened.SUBJECT)
    assert len(messages) == 1  # the re-publish was dropped by Nats-Msg-Id dedup
    assert PingHappened.model_validate_json(messages[0]).event_id == event.event_id


async def test_two_relays_do_not_double_publish(platform_db, broker, clean_infra):
    _, sessions = platform_db
    events = [PingHappened(note=str(i)) for i in range(300)]
    for chunk in range(0, 300, 50):
        async with sessions() as session, session.begin():
            for e in events[chunk : chunk + 50]:
                await add_to_outbox(session, Outbox, e)
    seen: list[uuid.UUID] = []
    a, b = relay_for(sessions, broker, batch_size=20), relay_for(sessions, broker, batch_size=20)

    async def drain(relay: OutboxRelay) -> int:
        total = 0
        while (n := await relay.publish_pending()) > 0:
            total += n
        return total

    counts = await asyncio.gather(drain(a), drain(b))
    assert sum(counts) == 300
    assert all(c > 0 for c in counts), counts  # both took part
    for raw in await stream_messages(clean_infra.nats_url, PingHappened.SUBJECT):
        seen.append(PingHappened.model_validate_json(raw).event_id)
    assert sorted(seen) == sorted(e.event_id for e in events)


async def test_relay_wakes_on_commit_without_waiting_for_the_sweep(
    platform_db, broker, clean_infra
):
    _, sessions = platform_db
    relay = relay_for(sessions, broker, database_url=clean_infra.database_url, sweep_seconds=30)
    await relay.start()
    try:
        # Once the listener is attached and the relay sits idle, only a NOTIFY can wake it
        # before the 30 s sweep.
        await asyncio.wait_for(relay.listening.wait(), 5)
        await wait_for(lambda: relay.idle.is_set() and not relay._wake.is_set(), timeout=5)
        async with sessions() as session, session.begin():
            await add_to_outbox(session, Outbox, PingHappened(note="fast"))

        async def published() -> bool:
            async with sessions() as session:
                return bool(
                    await session.scalar(select(func.count()).where(Outbox.sent_at.is_not(None)))
                )

        await wait_for(published, timeout=5, message="relay woke on NOTIFY")
    finally:
        await relay.stop()


async def test_waker_wakes_local_and_remote_relays_after_commit_only(
    platform_db, broker, clean_infra
):
    """With the waker no NOTIFY runs inside the business transaction, yet relays still wake:
    one in this process directly, one elsewhere through the waker's own NOTIFY."""
    from shared.db import make_session_factory
    from shared.messaging.outbox import WAKER_KEY, OutboxWaker

    engine, plain_sessions = platform_db
    waker = OutboxWaker(clean_infra.database_url)
    sessions = make_session_factory(engine, info={WAKER_KEY: waker})
    local = relay_for(plain_sessions, broker, sweep_seconds=30)  # no LISTEN: only the waker
    waker.register(local)
    remote_woken = asyncio.Event()  # stands for a relay in another process
    attached = asyncio.Event()

    async def listen() -> None:
        import asyncpg
        from shared.messaging.outbox import notify_channel

        conn = await asyncpg.connect(clean_infra.database_url.replace("+asyncpg", ""))
        await conn.add_listener(notify_channel("platform_test"), lambda *_: remote_woken.set())
        attached.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await conn.close()

    listener = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(attached.wait(), 5)
        async with sessions() as session, session.begin():
            await add_to_outbox(session, Outbox, PingHappened(note="rolled back"))
            await session.rollback()
        assert not local._wake.is_set()
        async with sessions() as session, session.begin():
            await add_to_outbox(session, Outbox, PingHappened(note="committed"))
            assert not local._wake.is_set()  # nothing before the commit
        assert local._wake.is_set()  # woken in-process at commit
        await asyncio.wait_for(remote_woken.wait(), 5)  # and other processes by NOTIFY
        assert await local.publish_pending() == 1
    finally:
        listener.cancel()
        await waker.close()


async def test_housekeeping_prunes_only_sent_rows_past_retention_and_reports_pending_age(
    platform_db, broker
):
    from datetime import timedelta

    from prometheus_client import REGISTRY
    from sqlalchemy import update

    _, sessions = platform_db
    old, recent, pending = (PingHappened(note=n) for n in ("old", "recent", "pending"))
    async with sessions() as session, session.begin():
        for event in (old, recent, pending):
            await add_to_outbox(session, Outbox, event)
    async with sessions() as session, session.begin():
        for event, sent_ago, created_ago in (
            (old, timedelta(days=8), timedelta(days=8)),
            (recent, timedelta(days=1), timedelta(days=1)),
        ):
            await session.execute(
                update(Outbox)
                .where(Outbox.event_id == event.event_id)
                .values(sent_at=func.now() - sent_ago, created_at=func.now() - created_ago)
            )
        await session.execute(
            update(Outbox)
            .where(Outbox.event_id == pending.event_id)
            .values(created_at=func.now() - timedelta(seconds=30))
        )
    relay = relay_for(sessions, broker, retention=timedelta(days=7))
    try:
        await relay._housekeeping()
    finally:
        await relay.stop()
    async with sessions() as session:
        left = set(await session.scalars(select(Outbox.event_id)))
    assert left == {recent.event_id, pending.event_id}
    age = REGISTRY.get_sample_value("outbox_oldest_pending_seconds", {"relay": "test"})
    assert age is not None and 30 <= age < 300
