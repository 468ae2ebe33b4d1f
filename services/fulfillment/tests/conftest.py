"""Fixtures for fulfillment tests: real Postgres, NATS JetStream, moto S3 and the SMTP capture.

``make_world`` builds a complete service context pointed at the test infrastructure, with a
counting wrapper around the real boto3 client (so tests can say "nothing was uploaded twice").
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import nats
import pytest
from fulfillment import jobs, main, service
from fulfillment.models import Delivery, DownloadGrant, EmailLog, Outbox
from fulfillment.service import Fulfillment
from fulfillment.settings import FulfillmentSettings
from fulfillment.storage import ObjectStore, make_client
from shared.contracts.envelope import Event
from shared.contracts.orders import OrderLine, OrderPaid, OrderRefunded
from shared.runtime import ServiceContext, running
from shared.testing import wait_for
from shared.testing.jetstream import stored_bodies
from sqlalchemy import func, select, text

TEST_SECRET = "test-download-token-secret-0123456789abcdef"
PUBLIC_URL = "http://fulfillment.test"


class CountingS3:
    """The real boto3 client with a tally of calls by operation."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._client, name)
        if not callable(target):
            return target

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return target(*args, **kwargs)

        return counted

    @property
    def puts(self) -> int:
        return self.calls.get("put_object", 0)


@dataclass
class World:
    ctx: ServiceContext
    f: Fulfillment
    s3: CountingS3
    nats_url: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dispatcher(self) -> jobs.EmailDispatcher:
        return jobs.dispatcher_of(self.ctx)

    def client(self, ip: str = "203.0.113.7") -> httpx.AsyncClient:
        app = main.create_api(self.ctx)
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(ip, 5000)),
            base_url=PUBLIC_URL,
        )

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.ctx.sessions() as session, session.begin():
            return (await session.execute(text(sql), params)).scalar()

    async def count(self, model: Any, *where: Any) -> int:
        async with self.ctx.sessions() as session:
            stmt = select(func.count()).select_from(model)
            for clause in where:
                stmt = stmt.where(clause)
            return int((await session.execute(stmt)).scalar_one())

    async def deliveries(self, order_id: str) -> int:
        return await self.count(Delivery, Delivery.order_id == order_id)

    async def grants(self, order_id: str) -> list[DownloadGrant]:
        async with self.ctx.sessions() as session:
            rows = await session.execute(
                select(DownloadGrant)
                .where(DownloadGrant.order_id == order_id)
                .order_by(DownloadGrant.created_at)
            )
            return list(rows.scalars())

    async def emails(self, order_id: str) -> list[EmailLog]:
        async with self.ctx.sessions() as session:
            rows = await session.execute(
                select(EmailLog).where(EmailLog.order_id == order_id).order_by(EmailLog.id)
            )
            return list(rows.scalars())

    async def outbox_settled(self) -> bool:
        return await self.count(Outbox, Outbox.sent_at.is_(None)) == 0

    async def deliver(self, event: OrderPaid) -> None:
        """The paid-order use case in its own transaction, as the consumer would run it."""
        async with self.ctx.sessions() as session, session.begin():
            await service.deliver_paid_order(session, self.f, event)

    async def link(self, order_id: str, index: int = 0) -> str:
        grant = (await self.grants(order_id))[index]
        return self.f.link_for(grant.id, grant.created_at)

    def object_keys(self, order_id: str) -> list[str]:
        prefix = f"{self.f.settings.s3_key_prefix}/{order_id}/"
        listing = self.s3._client.list_objects_v2(Bucket=self.f.store.bucket, Prefix=prefix)
        return sorted(obj["Key"] for obj in listing.get("Contents", []))


def paid_event(
    order_id: str | None = None,
    *,
    email: str = "carol@example.com",
    items: list[tuple[str, str, int]] | None = None,
) -> OrderPaid:
    lines = [
        OrderLine(sku=sku, title=title, quantity=qty, unit_price=Decimal("9.99"))
        for sku, title, qty in (items or [("GAME-1", "Space Game", 1), ("DLC-2", "Space DLC", 2)])
    ]
    total = sum((line.unit_price * line.quantity for line in lines), Decimal(0))
    return OrderPaid(
        order_id=order_id or f"ord_{uuid.uuid4().hex[:12]}",
        status="paid",
        version=3,
        email=email,
        total=total,
        currency="EUR",
        items=lines,
        payment_id="5524759814",
    )


def refunded_event(paid: OrderPaid, previous_status: str = "fulfilled") -> OrderRefunded:
    return OrderRefunded(
        order_id=paid.order_id,
        status="refunded",
        version=paid.version + 2,
        email=paid.email,
        total=paid.total,
        currency=paid.currency,
        previous_status=previous_status,
        payment_id=paid.payment_id,
        reason="the payment was refunded",
        correlation_id=paid.correlation_id,
    )


def email_parts(message: Any) -> dict[str, str]:
    """Decoded bodies of a captured message by content type (text/plain, text/html)."""
    import email
    from email import policy

    parsed = email.message_from_bytes(message.as_bytes(), policy=policy.default)
    parts: dict[str, str] = {}
    for part in parsed.walk():
        if part.get_content_maintype() == "text":
            parts[part.get_content_type()] = part.get_content()
    return parts


async def publish(nats_url: str, event: Event, *, msg_id: str | None = None) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(
            event.SUBJECT,
            event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": msg_id or str(event.event_id)},
        )
    finally:
        await nc.close()


async def stream_events(nats_url: str, subject: str, stream: str = "FULFILLMENT") -> list[bytes]:
    """Every message stored under ``subject``."""
    return await stored_bodies(nats_url, stream, subject)


@pytest.fixture
def make_settings(
    clean_infra: Any, s3_server: Any, mailbox_capture: Any
) -> Callable[..., FulfillmentSettings]:
    def build(**overrides: Any) -> FulfillmentSettings:
        values: dict[str, Any] = {
            "database_url": clean_infra.database_url,
            "nats_url": clean_infra.nats_url,
            "download_token_secret": TEST_SECRET,
            "public_url": PUBLIC_URL,
            "s3_endpoint_url": s3_server.endpoint_url,
            "s3_bucket": s3_server.bucket,
            "email_backend": "smtp",
            "smtp_url": mailbox_capture.url,
            "email_sweep_seconds": 0.2,
            "email_backoff_base_seconds": 0.2,
            "email_backoff_max_seconds": 1.0,
            # Long enough that a slow send is never taken over by another dispatcher on a
            # loaded machine; the crash test that needs the lease to run out sets a short one.
            "email_claim_lease_seconds": 30.0,
            "consumer_backoff_seconds": [0.1],
            "db_pool_size": 4,
            "log_json": False,
        }
        values.update(overrides)
        return FulfillmentSettings(**values)

    return build


WorldFactory = Callable[..., Awaitable[World]]


@pytest.fixture
async def make_world(
    make_settings: Callable[..., FulfillmentSettings],
) -> AsyncIterator[WorldFactory]:
    """Start one worker (consumers, responder, relay, email dispatcher) per call."""
    async with AsyncExitStack() as stack:

        async def start(*, worker: bool = True, **overrides: Any) -> World:
            settings = make_settings(**overrides)
            s3 = CountingS3(make_client(settings))
            ctx = main.build(settings, store=ObjectStore(s3, settings.s3_bucket))
            world = World(ctx, main.fulfillment_of(ctx), s3, settings.nats_url)
            if worker:
                main.register_worker(ctx)
                await stack.enter_async_context(
                    running(ctx, subscribers=True, jobs=main.worker_jobs())
                )
                await wait_for(lambda: world.dispatcher.listening.is_set(), message="listener")
            else:
                stack.push_async_callback(ctx.close)
            return world

        yield start


@pytest.fixture
async def world(make_world: WorldFactory) -> World:
    return await make_world()
