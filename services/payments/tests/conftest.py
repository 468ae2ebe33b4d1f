"""Fixtures for the payments tests: the NOWPayments emulator over real HTTP, an IPN bridge
that plays the webhooks gateway (verified callback → ``IpnReceived`` on JetStream), and the
payments worker running in the test's event loop against the plugin's PostgreSQL and NATS."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import nats
import pytest
import uvicorn
from nats.js.api import StreamInfo
from nowpayments_emulator.app import create_app
from nowpayments_emulator.testing import fast_config
from payments.client import NowPaymentsClient
from payments.main import build, build_worker
from payments.models import Payment, PaymentTransition
from payments.settings import PaymentsSettings
from payments.subscribers import Worker
from shared.contracts.payments import PaymentAttentionRaised, PaymentStatusChanged
from shared.contracts.webhooks import IpnReceived
from shared.money import loads_decimal
from shared.runtime import ServiceContext, running
from shared.testing import wait_for
from sqlalchemy import select

API_KEY = "payments-test-api-key"
IPN_SECRET = "payments-test-ipn-secret"
# The emulator's default dashboard login for POST /v1/auth: the payment list wants its JWT.
EMULATOR_EMAIL = "emulator@bitloot.test"
EMULATOR_PASSWORD = "emulator-password"


@asynccontextmanager
async def serve_asgi(app: Any, *, lifespan: str = "on") -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port, in this event loop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan=lifespan, log_level="warning", access_log=False)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_for(lambda: server.started or task.done(), timeout=10, message="uvicorn up")
        if task.done():
            task.result()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def bound_socket() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


@dataclass
class Emulator:
    """The emulator's base URL and a client for its control API."""

    url: str
    control: httpx.AsyncClient

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1"

    async def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.control.post(path, json=body or {})
        assert response.status_code in (200, 201), response.text
        data: dict[str, Any] = response.json()
        return data

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = await self.control.get(path, params=params)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def pay(self, invoice_id: str, **fields: Any) -> dict[str, Any]:
        return await self.post(f"/_emulator/invoices/{invoice_id}/pay", fields)

    async def idle(self) -> None:
        response = await self.control.post("/_emulator/ipn/wait-idle", params={"timeout": 10})
        assert response.status_code == 200, response.text

    async def fault(self, **fields: Any) -> None:
        await self.post("/_emulator/faults", fields)

    async def invoices(self, order_id: str) -> list[dict[str, Any]]:
        return list((await self.get("/_emulator/invoices", order_id=order_id))["invoices"])

    async def create_invoice(self, **fields: Any) -> dict[str, Any]:
        body = {"price_amount": "25", "price_currency": "usd"} | fields
        response = await self.control.post("/v1/invoice", json=body, headers={"x-api-key": API_KEY})
        assert response.status_code in (200, 201), response.text  # the provider answers 201
        data: dict[str, Any] = response.json()
        return data


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    sock, port = bound_socket()
    url = f"http://127.0.0.1:{port}"
    config = fast_config(api_key=API_KEY, ipn_secret=IPN_SECRET, public_url=url, seed=None)
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), log_level="warning", access_log=False)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_for(lambda: server.started or task.done(), timeout=10, message="emulator up")
        async with httpx.AsyncClient(base_url=url, timeout=15) as control:
            yield Emulator(url, control)
    finally:
        server.should_exit = True
        await task
        sock.close()


def _as_text(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_text(v) for v in value]
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return str(value)
    return value


def _opt_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_amount(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def ipn_event(body: bytes, webhook_log_id: int, **overrides: Any) -> IpnReceived:
    """What the webhooks gateway publishes for a verified IPN body (raw bytes as received)."""
    data = loads_decimal(body)
    dedup = ":".join(
        str(data.get(k)) for k in ("payment_id", "payment_status", "actually_paid", "updated_at")
    )
    fields: dict[str, Any] = {
        "webhook_log_id": webhook_log_id,
        "dedup_key": f"nowpayments:{dedup}",
        "payment_id": _opt_text(data.get("payment_id")),
        "invoice_id": _opt_text(data.get("invoice_id")),
        "order_id": _opt_text(data.get("order_id")),
        "payment_status": data["payment_status"],
        "price_amount": _opt_amount(data.get("price_amount")),
        "price_currency": data.get("price_currency"),
        "pay_amount": _opt_amount(data.get("pay_amount")),
        "actually_paid": _opt_amount(data.get("actually_paid")),
        "pay_currency": data.get("pay_currency"),
        "outcome_amount": _opt_amount(data.get("outcome_amount")),
        "outcome_currency": data.get("outcome_currency"),
        "provider_updated_at": data.get("updated_at"),
        "received_at": datetime.now(UTC),
        "payload": _as_text(data),
        "raw_body": body.decode(),
    }
    fields.update(overrides)
    return IpnReceived(**fields)


@dataclass
class IpnBridge:
    """Plays the webhooks gateway: verifies the emulator's signature over the raw bytes and
    publishes every delivery (duplicates included, each its own event) onto JetStream."""

    nats_url: str
    url: str = ""
    events: list[IpnReceived] = field(default_factory=list)
    rejected: int = 0
    paused: bool = False
    held: list[IpnReceived] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _nc: Any = None

    async def publish(self, event: IpnReceived) -> None:
        await self._nc.jetstream().publish(
            event.SUBJECT,
            event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": str(event.event_id)},
        )
        self.events.append(event)

    async def release(self) -> None:
        self.paused = False
        held, self.held = self.held, []
        for event in held:
            await self.publish(event)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        expected = hmac.new(IPN_SECRET.encode(), body, hashlib.sha512).hexdigest()
        if not hmac.compare_digest(expected, headers.get("x-nowpayments-sig", "")):
            self.rejected += 1
            status = 401
        else:
            event = ipn_event(body, next(self._ids))
            if self.paused:
                self.held.append(event)
            else:
                await self.publish(event)
            status = 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def ipn_bridge(clean_infra: Any) -> AsyncIterator[IpnBridge]:
    bridge = IpnBridge(clean_infra.nats_url)
    bridge._nc = await nats.connect(clean_infra.nats_url)
    try:
        async with serve_asgi(bridge, lifespan="off") as url:
            bridge.url = f"{url}/ipn"
            yield bridge
    finally:
        await bridge._nc.close()


def test_settings(emulator_url: str, callback_url: str, **overrides: Any) -> PaymentsSettings:
    values: dict[str, Any] = {
        "nowpayments_base": f"{emulator_url}/v1",
        "nowpayments_api_key": API_KEY,
        "nowpayments_email": EMULATOR_EMAIL,
        "nowpayments_password": EMULATOR_PASSWORD,
        "nowpayments_callback_url": callback_url,
        "read_retries": 1,
        "retry_backoff_seconds": 0.01,
        "retry_backoff_max_seconds": 0.05,
        "http_timeout": 5.0,
        "not_visible_retry_seconds": 0.2,
        "provider_unavailable_retry_seconds": 0.2,
        # Poller off unless a test wants it: it would race the IPN path being tested.
        "poll_enabled": False,
        "poll_after_seconds": 0.0,
        "poll_interval_seconds": 0.05,
        "poll_max_interval_seconds": 0.2,
        "poll_tick_seconds": 0.05,
        "expiry_grace_seconds": 0.0,
        "outbox_sweep_seconds": 0.2,
        "consumer_backoff_seconds": [0.1, 0.2, 0.5],
        "log_json": False,
    }
    values.update(overrides)
    return PaymentsSettings(**values)


@dataclass
class Running:
    ctx: ServiceContext
    worker: Worker
    settings: PaymentsSettings

    async def payment(self, order_id: str) -> Payment | None:
        async with self.ctx.sessions() as session:
            found = await session.execute(select(Payment).where(Payment.order_id == order_id))
            return found.scalar_one_or_none()

    async def status(self, order_id: str) -> str | None:
        payment = await self.payment(order_id)
        return payment.status if payment else None

    async def wait_status(self, order_id: str, status: str, timeout: float = 15) -> Payment:
        async def reached() -> Payment | None:
            payment = await self.payment(order_id)
            return payment if payment is not None and payment.status == status else None

        return await wait_for(reached, timeout=timeout, message=f"{order_id} {status}")

    async def full_ledger(
        self, order_id: str, entries: int, timeout: float = 15
    ) -> list[PaymentTransition]:
        """The ledger once it holds ``entries`` rows (concurrent handling finishes in any order)."""

        async def complete() -> list[PaymentTransition] | None:
            ledger = await self.ledger(order_id)
            return ledger if len(ledger) >= entries else None

        return await wait_for(complete, timeout=timeout, message=f"{entries} ledger entries")

    async def ledger(self, order_id: str) -> list[PaymentTransition]:
        payment = await self.payment(order_id)
        assert payment is not None
        async with self.ctx.sessions() as session:
            found = await session.execute(
                select(PaymentTransition)
                .where(PaymentTransition.payment_id == payment.id)
                .order_by(PaymentTransition.seq)
            )
            return list(found.scalars().all())


StartWorker = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_payments(
    clean_infra: Any, emulator: Emulator, ipn_bridge: IpnBridge
) -> AsyncIterator[StartWorker]:
    """Start the payments worker (responder, IPN consumer, relay, optional poller)."""
    stack: list[Any] = []

    async def start(**overrides: Any) -> Running:
        settings = test_settings(emulator.url, ipn_bridge.url, **overrides)
        ctx = build(settings)
        client = NowPaymentsClient(
            base_url=settings.nowpayments_base,
            api_key=API_KEY,
            email=settings.nowpayments_email,
            password=settings.nowpayments_password,
            timeout=settings.http_timeout,
            read_retries=settings.read_retries,
            backoff=settings.retry_backoff_seconds,
            backoff_max=settings.retry_backoff_max_seconds,
        )
        worker = build_worker(ctx, client)
        cm = running(ctx, subscribers=True, jobs=worker.jobs())
        await cm.__aenter__()
        stack.append((cm, client))
        return Running(ctx, worker, settings)

    yield start
    for cm, client in reversed(stack):
        await cm.__aexit__(None, None, None)
        await client.aclose()


async def _read_events(js: Any) -> list[PaymentStatusChanged]:
    info: StreamInfo = await js.stream_info("PAYMENTS")
    assert info.state is not None
    if info.state.messages == 0:
        return []
    events = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg("PAYMENTS", seq)
        assert msg.data is not None
        if msg.subject != PaymentStatusChanged.SUBJECT:
            continue  # attention events share the stream
        events.append(PaymentStatusChanged.model_validate_json(msg.data))
    return events


async def attention_events(js: Any) -> list[PaymentAttentionRaised]:
    info: StreamInfo = await js.stream_info("PAYMENTS")
    assert info.state is not None
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
        msg = await js.get_msg("PAYMENTS", seq)
        if msg.subject == PaymentAttentionRaised.SUBJECT and msg.data is not None:
            found.append(PaymentAttentionRaised.model_validate_json(msg.data))
    return found


async def wait_attention(
    nats_url: str, count: int, timeout: float = 10
) -> list[PaymentAttentionRaised]:
    """The attention events once at least ``count`` are published."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()

        async def enough() -> list[PaymentAttentionRaised] | None:
            events = await attention_events(js)
            return events if len(events) >= count else None

        return await wait_for(enough, timeout=timeout, message=f"{count} attention events")
    finally:
        await nc.close()


async def payment_events(nats_url: str) -> list[PaymentStatusChanged]:
    """Every PaymentStatusChanged the relay published, in stream order."""
    nc = await nats.connect(nats_url)
    try:
        return await _read_events(nc.jetstream())
    finally:
        await nc.close()


async def wait_events(nats_url: str, count: int, timeout: float = 10) -> list[PaymentStatusChanged]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()

        async def enough() -> list[PaymentStatusChanged] | None:
            events = await _read_events(js)
            return events if len(events) >= count else None

        return await wait_for(enough, timeout=timeout, message=f"{count} payment events")
    finally:
        await nc.close()
