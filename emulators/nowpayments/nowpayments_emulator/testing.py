"""Helpers for tests that drive the emulator: an IPN receiver on a real socket and a harness.

Also meant for merchant-side tests that want to see exactly what the provider would send.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from .app import create_app
from .config import EmulatorConfig

TEST_API_KEY = "test-api-key"
TEST_IPN_SECRET = "test-ipn-secret-ключ"
TEST_PUBLIC_URL = "http://emulator.test"


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A merchant endpoint: records raw requests, answers from a script, then `default_status`."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    script: deque[tuple[int, float]] = field(default_factory=deque)
    default_status: int = 200
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def answer(self, *responses: int | tuple[int, float]) -> None:
        """Queue answers for the next requests: a status, or (status, seconds to stall first)."""
        for item in responses:
            self.script.append(item if isinstance(item, tuple) else (item, 0.0))

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
        status, stall = self.script.popleft() if self.script else (self.default_status, 0.0)
        async with self._changed:
            self.requests.append(Received(scope["path"], headers, body))
            self._changed.notify_all()
        if stall:
            await asyncio.sleep(stall)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def wait_for(self, count: int, within: float = 5.0) -> list[Received]:
        """Await until at least `count` requests arrived; returns them all."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(self.requests) >= count), within
            )
        return list(self.requests)


@asynccontextmanager
async def serve_receiver(receiver: Receiver | None = None) -> AsyncIterator[Receiver]:
    """Run a receiver with uvicorn on a free loopback port, in the current event loop."""
    recorder = receiver or Receiver()
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY when the proto says TCP, and
    # without it every small response stalls ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(recorder, lifespan="off", log_level="warning", access_log=False)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        recorder.url = f"http://127.0.0.1:{port}/ipn"
        yield recorder
    finally:
        server.should_exit = True
        await task
        sock.close()


def fast_config(**overrides: Any) -> EmulatorConfig:
    """Fast, deterministic settings: no pause between statuses, quick retries.

    The callback timeout is generous on purpose: tests count deliveries exactly, and on a loaded
    CI machine a slow-but-successful answer must not turn into a provider retry. A test about
    timeouts passes its own.
    """
    values: dict[str, Any] = {
        "api_key": TEST_API_KEY,
        "ipn_secret": TEST_IPN_SECRET,
        "public_url": TEST_PUBLIC_URL,
        "step_delay": 0.0,
        "ipn_retries": 2,
        "ipn_retry_interval": 0.02,
        "callback_timeout": 10.0,
        "seed": 20240601,
    }
    values.update(overrides)
    return EmulatorConfig(**values)


@dataclass
class Harness:
    """An in-process emulator (ASGI) and a client for it, with shortcuts for common calls."""

    app: FastAPI
    client: httpx.AsyncClient
    api_key: str = TEST_API_KEY

    @classmethod
    def create(cls, config: EmulatorConfig) -> Harness:
        app = create_app(config)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=config.public_url, timeout=15.0
        )
        return cls(app, client, config.api_key)

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.app.state.emulator.aclose()

    @property
    def key(self) -> dict[str, str]:
        return {"x-api-key": self.api_key}

    async def token(self) -> str:
        """A fresh JWT from POST /v1/auth with the configured dashboard login."""
        config: EmulatorConfig = self.app.state.emulator.config
        response = await self.client.post(
            "/v1/auth", json={"email": config.email, "password": config.password}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["token"])

    async def auth_headers(self) -> dict[str, str]:
        """The api key plus `Authorization: Bearer <fresh JWT>`, as the payment list wants."""
        return self.key | {"Authorization": f"Bearer {await self.token()}"}

    async def list_payments(self, **params: Any) -> dict[str, Any]:
        """GET /v1/payment/ with a fresh token; params as the provider names them (invoiceId…)."""
        response = await self.client.get(
            "/v1/payment/", params=params, headers=await self.auth_headers()
        )
        assert response.status_code == 200, response.text
        listing: dict[str, Any] = response.json()
        return listing

    async def create_invoice(self, **fields: Any) -> dict[str, Any]:
        body = {"price_amount": 69.25, "price_currency": "usd", "order_id": "order-1"} | fields
        response = await self.client.post("/v1/invoice", json=body, headers=self.key)
        assert response.status_code == 201, response.text
        invoice: dict[str, Any] = response.json()
        return invoice

    async def pay(self, invoice_id: str | int, **fields: Any) -> dict[str, Any]:
        response = await self.client.post(f"/_emulator/invoices/{invoice_id}/pay", json=fields)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def idle(self, within: float = 10.0) -> None:
        """Await until every IPN playback and retry has finished."""
        response = await self.client.post("/_emulator/ipn/wait-idle", params={"timeout": within})
        assert response.status_code == 200, response.text

    async def payment(self, payment_id: int) -> dict[str, Any]:
        response = await self.client.get(f"/v1/payment/{payment_id}", headers=self.key)
        assert response.status_code == 200, response.text
        payment: dict[str, Any] = response.json()
        return payment

    async def log(self, **params: Any) -> list[dict[str, Any]]:
        response = await self.client.get("/_emulator/ipn-log", params=params)
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()["entries"]
        return entries

    async def _control(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = await self.client.request(method, f"/_emulator{path}", json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def clock(self) -> dict[str, Any]:
        """`{now, now_ms, offset_seconds, expired_payment_ids}` of the emulator's clock."""
        return await self._control("GET", "/clock")

    async def advance_clock(self, seconds: float) -> dict[str, Any]:
        """Move the emulator's time on; payments past their lifetime expire (with an IPN)."""
        return await self._control("POST", "/clock", {"advance_seconds": seconds})

    async def redeposit(self, payment_id: int, amount: str, **fields: Any) -> dict[str, Any]:
        """A repeated deposit (or, with another `pay_currency`, a wrong-asset deposit)."""
        return await self._control(
            "POST", f"/payments/{payment_id}/redeposit", {"amount": amount} | fields
        )

    async def push_status(self, payment_id: int, status: str, **fields: Any) -> dict[str, Any]:
        """Set any status (`allow_unknown_status=True` for one the provider has not got yet)."""
        return await self._control(
            "POST", f"/payments/{payment_id}/status", {"payment_status": status} | fields
        )

    async def play(self, payment_id: int, **fields: Any) -> dict[str, Any]:
        return await self._control("POST", f"/payments/{payment_id}/play", fields)

    async def control_payment(self, payment_id: int) -> dict[str, Any]:
        """The emulator's own view of a payment: history, kind, amounts as strings."""
        return await self._control("GET", f"/payments/{payment_id}")

    async def set_behaviour(self, **patch: Any) -> dict[str, Any]:
        return await self._control("PUT", "/behaviour", patch)


# What the `make_harness` fixture hands out: build an emulator with config overrides.
HarnessFactory = Callable[..., Awaitable[Harness]]
