"""Admin test fixtures: the API and the worker in-process against the plugin's real infra."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import nats
import pytest
from admin import service
from admin.main import build, create_api, passwords_for
from admin.models import AuditLog
from admin.security import Tokens
from admin.settings import AdminSettings
from admin.subscribers import register_subscribers
from fastapi import FastAPI
from shared.contracts.envelope import Event, Reply, Request
from shared.contracts.orders import OrderCreated, OrderLine
from shared.contracts.payments import PaymentStatusChanged
from shared.contracts.streams import stream_for_subject
from shared.contracts.webhooks import IpnReceived
from shared.messaging.broker import flush, make_broker
from shared.messaging.rpc import register_responder
from shared.runtime import ServiceContext, running
from shared.testing.plugin import Infra
from sqlalchemy import select

JWT_SECRET = "admin-test-jwt-secret-0123456789abcdefghij"
PASSWORD = "correct horse battery staple"


def admin_settings(**overrides: Any) -> AdminSettings:
    values: dict[str, Any] = {
        "jwt_secret": JWT_SECRET,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "consumer_max_deliveries": 2,
        "consumer_backoff_seconds": [0.05],
        # Generous: a busy CI machine must not turn a slow answer into a 503. "Nobody answers"
        # is NATS's immediate no-responders reply, not this timeout.
        "rpc_timeout_seconds": 10.0,
        "log_json": False,
    }
    values.update(overrides)
    return AdminSettings(**values)


@dataclass
class User:
    id: str
    username: str
    role: str
    token: str


@dataclass
class AdminApi:
    client: httpx.AsyncClient
    app: FastAPI
    ctx: ServiceContext
    settings: AdminSettings

    async def user(self, role: str, username: str | None = None) -> User:
        name = username or f"{role}-{uuid.uuid4().hex[:8]}"
        async with self.ctx.sessions() as session, session.begin():
            created = await service.create_user(
                session,
                passwords_for(self.settings),
                username=name,
                password=PASSWORD,
                role=role,
                actor=service.CLI_ACTOR,
            )
        token = Tokens(JWT_SECRET, 900).issue(str(created.id), created.role).token
        return User(str(created.id), created.username, created.role, token)

    async def audit(self, action: str | None = None) -> list[AuditLog]:
        async with self.ctx.sessions() as session:
            stmt = select(AuditLog).order_by(AuditLog.id)
            if action:
                stmt = stmt.where(AuditLog.action == action)
            return list((await session.scalars(stmt)).all())


def auth(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.token}"}


async def start_api(settings: AdminSettings) -> AsyncIterator[AdminApi]:
    ctx = build(settings)
    app = create_api(ctx)
    async with running(ctx, subscribers=False):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as client:
            yield AdminApi(client, app, ctx, settings)


@pytest.fixture
async def admin_api(clean_infra: Infra) -> AsyncIterator[AdminApi]:
    async for api in start_api(admin_settings()):
        yield api


@pytest.fixture
async def admin_worker(clean_infra: Infra) -> AsyncIterator[ServiceContext]:
    ctx = build(admin_settings())
    register_subscribers(ctx)
    async with running(ctx, subscribers=True):
        yield ctx


class Publisher:
    """Publishes events to JetStream the way an outbox relay does (Nats-Msg-Id = event id)."""

    def __init__(self, js: Any) -> None:
        self.js = js

    async def event(self, event: Event, msg_id: str | None = None) -> int:
        ack = await self.js.publish(
            event.SUBJECT,
            event.model_dump_json().encode(),
            stream=stream_for_subject(event.SUBJECT),
            headers={"Nats-Msg-Id": msg_id or str(event.event_id)},
        )
        return int(ack.seq)

    async def raw(self, subject: str, body: bytes, msg_id: str) -> None:
        await self.js.publish(subject, body, headers={"Nats-Msg-Id": msg_id})


@pytest.fixture
async def publish(clean_infra: Infra) -> AsyncIterator[Publisher]:
    nc = await nats.connect(clean_infra.nats_url)
    try:
        yield Publisher(nc.jetstream())
    finally:
        await nc.close()


T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def payment_event(
    payment_id: uuid.UUID,
    *,
    version: int,
    status: str,
    previous: str = "waiting",
    order_id: str = "ord-1",
    at: datetime = T0,
    provider_payment_id: str | None = "5077125051",
    invoice_id: str | None = "4522625843",
    **extra: Any,
) -> PaymentStatusChanged:
    return PaymentStatusChanged(
        payment_id=payment_id,
        order_id=order_id,
        provider_payment_id=provider_payment_id,
        invoice_id=invoice_id,
        previous_status=previous,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        is_final=status in {"finished", "partially_paid", "failed", "expired", "refunded"},
        source="ipn",
        version=version,
        price_amount=Decimal("19.99"),
        price_currency="usd",
        occurred_at=at,
        **extra,
    )


def order_created(
    order_id: str, *, at: datetime = T0, email: str = "buyer@example.com", total: str = "19.99"
) -> OrderCreated:
    return OrderCreated(
        order_id=order_id,
        status="awaiting_payment",
        version=1,
        email=email,
        total=Decimal(total),
        currency="usd",
        items=[OrderLine(sku="KEY-1", title="Game key", quantity=1, unit_price=Decimal(total))],
        created_at=at,
        occurred_at=at,
    )


def ipn_received(
    webhook_log_id: int,
    *,
    status: str = "finished",
    at: datetime = T0,
    payment_id: str = "5077125051",
    invoice_id: str = "4522625843",
    **extra: Any,
) -> IpnReceived:
    raw = (
        f'{{"actually_paid":"0.0005","invoice_id":{invoice_id},"order_id":"ord-1",'
        f'"payment_id":{payment_id},"payment_status":"{status}"}}'
    )
    return IpnReceived(
        webhook_log_id=webhook_log_id,
        dedup_key=f"nowpayments:{payment_id}:{status}:{webhook_log_id}",
        payment_id=payment_id,
        invoice_id=invoice_id,
        order_id="ord-1",
        payment_status=status,
        actually_paid=Decimal("0.0005"),
        pay_currency="btc",
        received_at=at,
        occurred_at=at,
        payload={"payment_id": payment_id, "payment_status": status},
        raw_body=raw,
        headers={
            "content-type": "application/json",
            "x-nowpayments-sig": "ab12",
            "authorization": "Bearer leaked",
        },
        **extra,
    )


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


async def consumers_drained(nats_url: str, subjects: list[str]) -> bool:
    """True when admin's durables for ``subjects`` have nothing pending or unacked."""
    from admin.domain import durable_name

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for subject in subjects:
            info = await js.consumer_info(stream_for_subject(subject), durable_name(subject))
            if info.num_pending or info.num_ack_pending:
                return False
        return True
    finally:
        await nc.close()


Responder = Callable[[type[Request], Callable[[Any], Awaitable[Reply]], str], Awaitable[None]]


@pytest.fixture
async def responder(clean_infra) -> AsyncIterator[Responder]:
    """Start a fake service answering one request type (the real one lives in another repo
    package this service may not import)."""
    brokers = []

    async def start(request_type, handler, queue) -> None:
        broker = make_broker(clean_infra.nats_url, name=f"fake-{queue}")
        register_responder(broker, request_type, handler, queue=queue)
        await broker.start()
        brokers.append(broker)
        await flush(broker)  # the subscription is live before the test sends its request

    yield start
    for broker in brokers:
        await broker.stop()
