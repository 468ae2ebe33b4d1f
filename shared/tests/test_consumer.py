"""Durable consumers against real NATS and Postgres: inbox guard, backoff, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from shared.contracts.streams import DEAD_LETTER_STREAM, dead_letter_subject
from shared.messaging import ConsumerPolicy, DeadLetter, durable_consumer
from shared.messaging.broker import make_broker
from shared.testing import wait_for
from shared.testing.jetstream import stored_bodies
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from .conftest import Effect, Inbox, PingHappened


async def publish_raw(
    nats_url: str, subject: str, payload: bytes, msg_id: str | None = None
) -> None:
    nc = await nats.connect(nats_url)
    try:
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        await nc.jetstream().publish(subject, payload, headers=headers)
    finally:
        await nc.close()


async def dead_letters(nats_url: str, consumer: str) -> list[DeadLetter]:
    bodies = await stored_bodies(nats_url, DEAD_LETTER_STREAM.name, dead_letter_subject(consumer))
    return [DeadLetter.model_validate_json(body) for body in bodies]


@contextlib.asynccontextmanager
async def consuming(
    nats_url: str, durable: str, handler: Any, **options: Any
) -> AsyncIterator[None]:
    """A broker with one durable consumer of PingHappened, running for the block."""
    broker = make_broker(nats_url, name=durable)
    durable_consumer(
        broker,
        subject=PingHappened.SUBJECT,
        durable=durable,
        event_type=PingHappened,
        handler=handler,
        **options,
    )
    await broker.start()
    try:
        yield
    finally:
        await broker.stop()


async def drained(nats_url: str, durable: str) -> bool:
    """Nothing left for ``durable``: every message delivered and acked."""
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().consumer_info("ORDERS", durable)
        return info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        await nc.close()


async def count_effects(sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Effect)) or 0)


async def test_same_event_twice_and_concurrently_has_one_effect(platform_db, clean_infra):
    _, sessions = platform_db
    entered = 0

    async def handler(session, event: PingHappened, delivery) -> None:
        nonlocal entered
        entered += 1
        session.add(Effect(note=event.note))
        await asyncio.sleep(0.05)  # widen the window in which a duplicate can race us

    async with consuming(
        clean_infra.nats_url, "inbox-test", handler, session_factory=sessions, inbox=Inbox
    ):
        event = PingHappened(note="x")
        body = event.model_dump_json().encode()
        # distinct msg ids so JetStream's dedup does not hide the duplicates from us
        await asyncio.gather(
            *(publish_raw(clean_infra.nats_url, event.SUBJECT, body, f"m{i}") for i in range(5))
        )
        await wait_for(lambda: entered >= 1, timeout=10)
        await wait_for(lambda: drained(clean_infra.nats_url, "inbox-test"), timeout=10)
        assert await count_effects(sessions) == 1
        async with sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Inbox)) == 1


async def test_concurrent_duplicates_through_two_replicas(platform_db, clean_infra):
    """Two replicas (two brokers, one durable) racing on copies of one event: one effect."""
    _, sessions = platform_db
    calls = 0

    async def handler(session, event: PingHappened, delivery) -> None:
        nonlocal calls
        calls += 1
        session.add(Effect(note=event.note))
        await asyncio.sleep(0.05)

    replica = functools.partial(
        consuming, clean_infra.nats_url, "replicas", handler, session_factory=sessions, inbox=Inbox
    )
    async with replica(), replica():
        event = PingHappened(note="y")
        body = event.model_dump_json().encode()
        await asyncio.gather(
            *(publish_raw(clean_infra.nats_url, event.SUBJECT, body, f"r{i}") for i in range(10))
        )
        await wait_for(lambda: calls >= 1, timeout=10)
        await wait_for(lambda: drained(clean_infra.nats_url, "replicas"), timeout=10)
        assert await count_effects(sessions) == 1


async def test_failing_handler_is_redelivered_with_backoff_then_dead_lettered(clean_infra):
    attempts: list[tuple[int, float]] = []

    async def handler(event: PingHappened, delivery) -> None:
        attempts.append((delivery.attempt, time.monotonic()))
        raise RuntimeError("boom")

    policy = ConsumerPolicy(max_deliveries=3, backoff=(0.2, 0.6), not_visible_max_deliveries=3)
    async with consuming(clean_infra.nats_url, "failing", handler, policy=policy):
        event = PingHappened(note="z")
        await publish_raw(clean_infra.nats_url, event.SUBJECT, event.model_dump_json().encode())
        letters = await wait_for(lambda: dead_letters(clean_infra.nats_url, "failing"), timeout=15)
        assert [a for a, _ in attempts] == [1, 2, 3]
        gaps = [b - a for (_, a), (_, b) in zip(attempts, attempts[1:])]
        assert gaps[0] >= 0.18 and gaps[1] >= 0.55, gaps  # the backoff was honoured
        assert letters[0].event_id == str(event.event_id)
        assert letters[0].deliveries == 3 and "boom" in letters[0].error
        assert PingHappened.model_validate_json(letters[0].body) == event


async def test_connection_faults_have_the_outage_budget_not_the_poison_one(clean_infra):
    """A database that is down is not the message's fault: it outlives ``max_deliveries``."""
    attempts: dict[str, list[int]] = {"recovers": [], "never": []}

    async def handler(event: PingHappened, delivery) -> None:
        attempts[event.note].append(delivery.attempt)
        if event.note == "never" or delivery.attempt < 4:
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("database is down"))

    policy = ConsumerPolicy(max_deliveries=2, outage_max_deliveries=5, backoff=(0.05,))
    async with consuming(clean_infra.nats_url, "outage", handler, policy=policy):
        recovers, never = PingHappened(note="recovers"), PingHappened(note="never")
        for event in (recovers, never):
            await publish_raw(clean_infra.nats_url, event.SUBJECT, event.model_dump_json().encode())
        letters = await wait_for(lambda: dead_letters(clean_infra.nats_url, "outage"), timeout=15)
        await wait_for(lambda: len(attempts["recovers"]) >= 4, timeout=15)
        # Past max_deliveries (2) on connection faults: handled on the 4th delivery ...
        assert attempts["recovers"] == [1, 2, 3, 4]
        # ... and still bounded: dead-lettered (kept) after the outage budget.
        assert attempts["never"] == [1, 2, 3, 4, 5]
        assert [(letter.event_id, letter.deliveries) for letter in letters] == [
            (str(never.event_id), 5)
        ]
        assert "database is down" in letters[0].error


async def test_unparseable_body_is_dead_lettered_at_once(clean_infra):
    called = False

    async def handler(event: PingHappened, delivery) -> None:
        nonlocal called
        called = True

    async with consuming(clean_infra.nats_url, "poison", handler):
        await publish_raw(clean_infra.nats_url, PingHappened.SUBJECT, b"{not json")
        letters = await wait_for(lambda: dead_letters(clean_infra.nats_url, "poison"), timeout=10)
        assert letters[0].deliveries == 1 and "invalid body" in letters[0].error
        assert not called


async def test_request_reply_round_trip_and_unavailable(clean_infra):
    from shared.contracts.fulfillment import RevokeGrantsReply, RevokeGrantsRequest
    from shared.messaging.rpc import ServiceUnavailableError, register_responder, request

    responder = make_broker(clean_infra.nats_url, name="responder")
    caller = make_broker(clean_infra.nats_url, name="caller")

    async def answer(req: RevokeGrantsRequest) -> RevokeGrantsReply:
        return RevokeGrantsReply(ok=True, revoked=len(req.order_id))

    register_responder(responder, RevokeGrantsRequest, answer, queue="fulfillment")
    await caller.connect()
    try:
        with pytest.raises(ServiceUnavailableError):
            await request(
                caller,
                RevokeGrantsRequest(order_id="abc", operator_id="o", reason="r"),
                RevokeGrantsReply,
                timeout=0.5,
            )
        await responder.start()
        from shared.messaging.broker import flush

        await flush(responder)
        reply = await request(
            caller,
            RevokeGrantsRequest(order_id="abcd", operator_id="o", reason="r"),
            RevokeGrantsReply,
        )
        assert reply.ok and reply.revoked == 4
    finally:
        await responder.stop()
        await caller.stop()


async def test_group_commit_shares_transactions_and_isolates_a_failing_message(
    platform_db, clean_infra
):
    """With group_commit, messages handled together share a transaction; a message whose
    handler fails rolls its batch back, the others are re-applied alone, and it is retried
    until it succeeds. Duplicates still have one effect."""
    from prometheus_client import REGISTRY

    _, sessions = platform_db
    failures_left = {"poison-once": 2}
    calls: list[str] = []

    async def handler(session, event: PingHappened, delivery) -> None:
        calls.append(event.note)
        session.add(Effect(note=event.note))
        await session.flush()
        if failures_left.get(event.note, 0) > 0:
            failures_left[event.note] -= 1
            raise RuntimeError("transient")

    events = [PingHappened(note=f"n{i}") for i in range(60)] + [PingHappened(note="poison-once")]
    nc = await nats.connect(clean_infra.nats_url)
    try:
        js = nc.jetstream()
        for e in events:  # stored before the consumer starts: fetched in full batches
            await js.publish(e.SUBJECT, e.model_dump_json().encode())
        await js.publish(  # a redelivered copy under another message id
            events[0].SUBJECT, events[0].model_dump_json().encode(), headers={"Nats-Msg-Id": "c"}
        )
    finally:
        await nc.close()
    async with consuming(
        clean_infra.nats_url,
        "group-test",
        handler,
        session_factory=sessions,
        inbox=Inbox,
        policy=ConsumerPolicy(backoff=(0.05,), group_commit=True, concurrency=16),
    ):

        async def all_applied() -> bool:
            return await count_effects(sessions) == len(events)

        await wait_for(all_applied, timeout=20, message="every event applied")
        async with sessions() as session:
            notes = sorted(await session.scalars(select(Effect.note)))
        assert notes == sorted(e.note for e in events)  # each exactly once
        assert failures_left["poison-once"] == 0  # it failed twice, then went through

        def sample(name: str, **labels: str) -> float:
            value = REGISTRY.get_sample_value(name, {"consumer": "group-test", **labels})
            return value or 0.0

        # committed in groups (a failed group is retried alone)
        assert sample("consumer_group_commit_size_sum") > 0
        assert sample("consumer_group_commit_size_count") > sample(
            "consumer_group_commit_size_bucket", le="2.0"
        ), "no transaction carried more than two messages"
