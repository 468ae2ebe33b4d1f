"""Use cases against real Postgres, moto S3 and the SMTP capture, without NATS in the way."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from fulfillment import domain, repository, service
from fulfillment.emails import FileBackend
from fulfillment.errors import LicenceMismatchError
from fulfillment.models import Delivery, DeliveryItem, DownloadGrant, EmailLog, Outbox
from fulfillment.service import Redirect
from sqlalchemy import update

from ..conftest import email_parts, paid_event


async def test_concurrent_handlers_for_one_order_serialise_on_the_order_lock(make_world):
    world = await make_world(worker=False)
    event = paid_event()
    twin = event.model_copy(update={"event_id": uuid.uuid4()})
    entered: list[str] = []
    both_in = asyncio.Event()

    async def before_lock(order_id: str) -> None:
        entered.append(order_id)
        if len(entered) == 2:
            both_in.set()

    async def after_upload(order_id: str) -> None:
        # The first handler holds the lock here until the second one is queued behind it.
        await asyncio.wait_for(both_in.wait(), timeout=5)

    world.f.hooks.before_lock = before_lock
    world.f.hooks.after_upload = after_upload
    await asyncio.gather(world.deliver(event), world.deliver(twin))

    assert len(entered) == 2
    assert world.s3.puts == 2  # only the lock holder uploaded
    assert await world.deliveries(event.order_id) == 1
    assert await world.count(DownloadGrant) == 1
    assert await world.count(EmailLog) == 1
    assert await world.count(Outbox) == 1


async def test_delivery_records_items_with_hashes_of_the_stored_bytes(make_world):
    world = await make_world(worker=False)
    event = paid_event(items=[("GAME-1", "Space Game", 3)])
    await world.deliver(event)

    [key] = world.object_keys(event.order_id)
    stored = await world.f.store.get(key)
    async with world.ctx.sessions() as session:
        delivery = await repository.delivery_for_order(session, event.order_id)
        assert delivery is not None
        [item] = await repository.items_of(session, delivery.id)
    assert item.object_key == key
    assert item.sha256 == domain.sha256_hex(stored)
    keys = domain.licence_keys(
        world.f.licence_material, event.order_id, domain.LineToDeliver(1, "GAME-1", "Space Game", 3)
    )
    assert len(keys) == 3
    assert all(k in stored.decode() for k in keys)
    [grant] = await world.grants(event.order_id)
    assert grant.max_downloads == world.f.settings.download_cap  # one item


async def test_missing_object_is_regenerated_with_the_same_bytes(make_world):
    world = await make_world(worker=False)
    event = paid_event(items=[("GAME-1", "Space Game", 1)])
    await world.deliver(event)
    [key] = world.object_keys(event.order_id)
    original = await world.f.store.get(key)
    world.s3._client.delete_object(Bucket=world.f.store.bucket, Key=key)  # moto restarted

    async with world.ctx.sessions() as session, session.begin():
        token = (await world.link(event.order_id)).rsplit("/", 1)[1]
        outcome = await service.open_download(session, world.f, token, None)
    assert isinstance(outcome, Redirect)
    assert await world.f.store.get(key) == original
    assert world.s3.puts == 2  # the delivery's PUT and the regeneration's


async def test_regeneration_refuses_when_the_licence_secret_changed(make_world):
    world = await make_world(worker=False)
    event = paid_event(items=[("GAME-1", "Space Game", 1)])
    await world.deliver(event)
    [key] = world.object_keys(event.order_id)
    world.s3._client.delete_object(Bucket=world.f.store.bucket, Key=key)
    world.f.licence_material = domain.licence_key_material(b"another secret")

    token = (await world.link(event.order_id)).rsplit("/", 1)[1]
    async with world.ctx.sessions() as session, session.begin():
        with pytest.raises(LicenceMismatchError):
            await service.open_download(session, world.f, token, None)
    [grant] = await world.grants(event.order_id)
    assert grant.downloads == 0  # nothing served, nothing counted
    assert world.object_keys(event.order_id) == []


async def test_undeliverable_order_changes_nothing(make_world):
    world = await make_world(worker=False)
    event = paid_event(items=[("GAME-1", "Space Game", 0)])
    with pytest.raises(domain.UndeliverableOrderError):
        await world.deliver(event)
    assert await world.count(Delivery) == 0
    assert world.s3.puts == 0


async def test_rate_limit_bucket_refills_with_time(make_world):
    world = await make_world(worker=False)

    async def take() -> bool:
        async with world.ctx.sessions() as session, session.begin():
            return await repository.take_token(session, "k", capacity=2, per_second=0.01)

    assert [await take(), await take(), await take()] == [True, True, False]
    # Pretend the bucket was last touched 150 s ago: one and a half tokens have come back.
    await world.scalar(
        "UPDATE fulfillment.rate_limit SET updated_at = now() - interval '150 seconds' "
        "WHERE key = 'k' RETURNING 1"
    )
    assert [await take(), await take()] == [True, False]


async def test_file_backend_writes_one_eml_per_email_even_when_retried(make_world, tmp_path):
    world = await make_world(worker=False, email_backend="file", email_file_dir=str(tmp_path))
    assert isinstance(world.f.mailer, FileBackend)
    event = paid_event()
    await world.deliver(event)
    [claimed] = await _claim(world)
    email = service.build_email(world.f, claimed)
    await world.f.mailer.send(email)
    await world.f.mailer.send(service.build_email(world.f, claimed))  # a retry after a crash
    files = list(tmp_path.glob("*.eml"))
    assert len(files) == 1
    import email

    parts = email_parts(email.message_from_bytes(files[0].read_bytes()))
    assert (await world.link(event.order_id)) in parts["text/plain"]


async def test_lease_keeps_a_claimed_email_from_a_second_sender(make_world):
    world = await make_world(worker=False, email_claim_lease_seconds=60)
    await world.deliver(paid_event())
    assert len(await _claim(world)) == 1
    assert await _claim(world) == []  # still leased to the first sender
    async with world.ctx.sessions() as session, session.begin():
        await session.execute(update(EmailLog).values(next_attempt_at=EmailLog.created_at))
    [again] = await _claim(world)
    assert again.attempts == 2


async def _claim(world) -> list[repository.ClaimedEmail]:
    async with world.ctx.sessions() as session, session.begin():
        return await service.claim_emails(session, world.f)


async def test_items_are_unique_per_object_key(make_world):
    world = await make_world(worker=False)
    await world.deliver(paid_event(items=[("A", "a", 1), ("B", "b", 1), ("C", "c", 1)]))
    assert await world.count(DeliveryItem) == 3
    assert world.s3.puts == 3
