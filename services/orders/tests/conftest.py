"""Orders test fixtures: a service context on the plugin's real Postgres and NATS.

``orders_api`` is the HTTP API in-process (ASGITransport; the broker connected by hand because
ASGITransport runs no lifespan). ``orders_worker`` runs consumers and the outbox relay of a
second context, as a separate worker process would.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import nats
import pytest
from orders import subscribers
from orders.main import build, create_api
from orders.models import Inbox, Order, Outbox, Product
from orders.settings import OrdersSettings
from pydantic import SecretStr
from shared.contracts.envelope import Event
from shared.runtime import ServiceContext, running
from shared.testing.plugin import Infra
from sqlalchemy import func, select, text

PEPPER = "orders-test-pepper-4f1c9a"
STOREFRONT = "http://shop.test"

TEST_CATALOGUE = (
    # sku, title, price, currency, active
    ("game-key", "Game Key", "9.99", "usd", True),
    ("office-licence", "Office Licence", "14.50", "usd", True),
    ("retired-key", "Retired Key", "1.00", "usd", False),
    ("euro-pack", "Euro Pack", "5.00", "eur", True),
)


def make_settings(**overrides: Any) -> OrdersSettings:
    values: dict[str, Any] = {
        "order_token_pepper": SecretStr(PEPPER),
        "storefront_url": STOREFRONT,
        # Generous: a busy CI machine must not turn a slow answer into a 503. "Nobody answers"
        # is NATS's immediate no-responders reply, not this timeout.
        "payments_timeout_seconds": 10.0,
        "consumer_backoff_seconds": [0.05, 0.1, 0.2],
        "outbox_sweep_seconds": 0.2,
        "log_json": False,
        "db_pool_size": 5,
    }
    values.update(overrides)
    return OrdersSettings(**values)


async def seed_catalogue(ctx: ServiceContext) -> None:
    async with ctx.sessions() as session, session.begin():
        for sku, title, price, currency, active in TEST_CATALOGUE:
            session.add(
                Product(
                    sku=sku,
                    title=title,
                    description=f"{title} for tests",
                    price=Decimal(price),
                    currency=currency,
                    active=active,
                )
            )


@pytest.fixture
async def orders_ctx(clean_infra: Infra) -> AsyncIterator[ServiceContext]:
    ctx = build(make_settings())
    await seed_catalogue(ctx)
    yield ctx
    await ctx.close()


@pytest.fixture
async def orders_api(orders_ctx: ServiceContext) -> AsyncIterator[httpx.AsyncClient]:
    app = create_api(orders_ctx)
    transport = httpx.ASGITransport(app=app)
    async with (
        running(orders_ctx, subscribers=False),
        httpx.AsyncClient(transport=transport, base_url="http://orders.test") as client,
    ):
        yield client


@pytest.fixture
async def orders_worker(orders_ctx: ServiceContext) -> AsyncIterator[ServiceContext]:
    """A second context with consumers and relay running, like the worker process."""
    ctx = build(make_settings())
    subscribers.register(ctx)
    async with running(ctx, subscribers=True):
        yield ctx


@dataclass
class OrdersProbe:
    """Read-only views of the orders schema and the ORDERS stream for assertions."""

    ctx: ServiceContext
    nats_url: str

    async def order(self, order_id: str) -> Order:
        async with self.ctx.sessions() as session:
            row = await session.get(Order, uuid.UUID(order_id), populate_existing=True)
            assert row is not None
            return row

    async def count_orders(self) -> int:
        async with self.ctx.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(Order)) or 0)

    async def outbox_subjects(self) -> list[str]:
        async with self.ctx.sessions() as session:
            rows = await session.scalars(select(Outbox.subject).order_by(Outbox.id))
            return list(rows.all())

    async def outbox_events(self, subject: str) -> list[dict[str, Any]]:
        async with self.ctx.sessions() as session:
            rows = await session.scalars(
                select(Outbox.payload).where(Outbox.subject == subject).order_by(Outbox.id)
            )
            return [json.loads(p) for p in rows.all()]

    async def inbox_count(self, consumer: str) -> int:
        async with self.ctx.sessions() as session:
            return int(
                await session.scalar(
                    select(func.count()).select_from(Inbox).where(Inbox.consumer == consumer)
                )
                or 0
            )

    async def all_sent(self) -> bool:
        async with self.ctx.sessions() as session:
            pending = await session.scalar(
                select(func.count()).select_from(Outbox).where(Outbox.sent_at.is_(None))
            )
            return pending == 0

    async def stream_count(self, subject: str) -> int:
        nc = await nats.connect(self.nats_url)
        try:
            info = await nc.jetstream().stream_info("ORDERS", subjects_filter=subject)
            return int((info.state.subjects or {}).get(subject, 0))
        finally:
            await nc.close()

    async def consumer_drained(self, stream: str, durable: str) -> bool:
        nc = await nats.connect(self.nats_url)
        try:
            info = await nc.jetstream().consumer_info(stream, durable)
            return info.num_ack_pending == 0 and info.num_pending == 0
        finally:
            await nc.close()

    async def execute(self, query: str, **params: Any) -> None:
        async with self.ctx.sessions() as session, session.begin():
            await session.execute(text(query), params)

    async def sql(self, query: str, **params: Any) -> list[Any]:
        async with self.ctx.sessions() as session:
            return list((await session.execute(text(query), params)).all())


@pytest.fixture
def probe(orders_ctx: ServiceContext, clean_infra: Infra) -> OrdersProbe:
    return OrdersProbe(orders_ctx, clean_infra.nats_url)


Publish = Callable[..., Awaitable[None]]


@pytest.fixture
def publish_event(clean_infra: Infra) -> Publish:
    """Publish an event to JetStream as its producer's relay would (Nats-Msg-Id = event id)."""

    async def publish(event: Event, *, msg_id: str | None = None) -> None:
        nc = await nats.connect(clean_infra.nats_url)
        try:
            await nc.jetstream().publish(
                event.SUBJECT,
                event.model_dump_json().encode(),
                headers={"Nats-Msg-Id": msg_id or str(event.event_id)},
            )
        finally:
            await nc.close()

    return publish


@pytest.fixture
def place_order(orders_api: httpx.AsyncClient) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def place(
        items: list[dict[str, Any]] | None = None, email: str = "player@example.com"
    ) -> dict[str, Any]:
        response = await orders_api.post(
            "/orders",
            json={"email": email, "items": items or [{"sku": "game-key", "quantity": 2}]},
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    return place
