"""Fixtures for the web app's tests.

Unit/API tests run the web app in-process with the two gateways faked by tiny FastAPI apps
(served through httpx's ASGI transport, so nothing listens on a port). Browser tests (marked
``browser``) drive Debian's chromium through the whole system started by the launcher.
"""

from __future__ import annotations

import mailbox
import re
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse

# pytest's importlib mode names this file ``web.tests.conftest`` and stands in an empty
# namespace module for the ``web/`` folder, which would shadow the real ``web`` package
# (``web/web``). Drop the stand-in so the imports below find the package.
if getattr(sys.modules.get("web"), "__file__", None) is None:
    sys.modules.pop("web", None)

from web.main import create_app
from web.settings import WebSettings

SECRET = "test-session-secret-0123456789abcdef"
EMULATOR = "http://emulator.test:8010"
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
IDEMPOTENCY_INPUT = re.compile(r'name="idempotency_key" value="([^"]+)"')


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives chromium through the whole running system (slow)"
    )


# -- fake orders gateway -----------------------------------------------------------------------


@dataclass
class FakeOrder:
    order_id: str
    token: str
    email: str
    sku: str
    quantity: int
    status: str = "created"
    payment_status: str | None = None
    message: str | None = None
    payment_url: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FakeOrders:
    """In-memory stand-in for the orders gateway, with the agreed shapes."""

    products: list[dict[str, str]] = field(
        default_factory=lambda: [
            {
                "sku": "game-key",
                "title": "Space Game — Steam key",
                "description": "A <b>great</b> game.",
                "price": "19.99",
                "currency": "usd",
            },
            {
                "sku": "licence-pro",
                "title": "Editor Pro licence",
                "description": "One year.",
                "price": "9.50",
                "currency": "usd",
            },
        ]
    )
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    payments_down: bool = False
    payment_url_base: str = f"{EMULATOR}/invoice/"
    rejected_emails: set[str] = field(default_factory=lambda: {"nobody@invalid.example"})

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def record(request: Request, call_next: Any) -> Any:
            self.requests.append((request.method, request.url.path, dict(request.headers)))
            return await call_next(request)

        @app.get("/products")
        async def products() -> dict[str, Any]:
            return {"items": self.products}

        @app.post("/orders", status_code=201)
        async def create(
            body: dict[str, Any], idempotency_key: str | None = Header(default=None)
        ) -> Any:
            if idempotency_key and idempotency_key in self.by_key:
                return self._created(self.orders[self.by_key[idempotency_key]])
            if body["email"] in self.rejected_emails:
                return JSONResponse(
                    {
                        "detail": [
                            {"loc": ["body", "email"], "msg": "domain does not exist", "type": "x"}
                        ],
                        "error": {
                            "field": "email",
                            "reason": "The email domain does not accept mail",
                            "code": "value_error",
                        },
                    },
                    status_code=422,
                )
            line = body["items"][0]
            order_id = f"ord-{len(self.orders) + 1:04d}"
            order = FakeOrder(
                order_id,
                token=f"secret-token-{order_id}",
                email=body["email"],
                sku=line["sku"],
                quantity=line["quantity"],
                message="Order received — continue to payment",
                history=[{"status": "created", "at": "2025-01-01T10:00:00Z"}],
            )
            self.orders[order_id] = order
            if idempotency_key:
                self.by_key[idempotency_key] = order_id
            return self._created(order)

        @app.post("/orders/{order_id}/checkout")
        async def checkout(order_id: str, x_order_token: str | None = Header(default=None)) -> Any:
            order = self.orders.get(order_id)
            if order is None or order.token != x_order_token:
                return JSONResponse({"detail": "Order not found"}, status_code=404)
            if self.payments_down:
                return JSONResponse(
                    {
                        "detail": "Payments are temporarily unavailable; nothing was charged "
                        "or changed. Please try again in a moment.",
                        "error": {
                            "field": None,
                            "reason": "Payments are temporarily unavailable; nothing was "
                            "charged or changed. Please try again in a moment.",
                            "code": "payments_unavailable",
                        },
                    },
                    status_code=503,
                )
            order.status = "awaiting_payment"
            order.payment_status = order.payment_status or None
            order.payment_url = f"{self.payment_url_base}{order_id}"
            return {
                "order_id": order_id,
                "payment_url": order.payment_url,
                "amount": "19.99",
                "currency": "usd",
                "status": order.status,
            }

        @app.get("/orders/{order_id}")
        async def get(order_id: str, x_order_token: str | None = Header(default=None)) -> Any:
            order = self.orders.get(order_id)
            if order is None or order.token != x_order_token:
                return JSONResponse({"detail": "Order not found"}, status_code=404)
            return {
                "order_id": order.order_id,
                "status": order.status,
                "message": order.message,
                "payment_status": order.payment_status,
                "items": [
                    {
                        "sku": order.sku,
                        "title": "Space Game — Steam key",
                        "quantity": order.quantity,
                        "unit_price": "19.99",
                        "line_total": "19.99",
                    }
                ],
                "total": "19.99",
                "currency": "usd",
                "email": "b***@example.com",
                "payment_url": order.payment_url,
                "created_at": "2025-01-01T10:00:00Z",
                "updated_at": "2025-01-01T10:00:00Z",
                "history": order.history,
            }

        return app

    @staticmethod
    def _created(order: FakeOrder) -> dict[str, Any]:
        return {
            "order_id": order.order_id,
            "order_token": order.token,
            "status": "created",
            "total": "19.99",
            "currency": "usd",
            "items": [],
            "created_at": "2025-01-01T10:00:00Z",
        }


# -- fake admin gateway ------------------------------------------------------------------------

ADMIN_JWT = "header.payload.signature"


@dataclass
class FakeAdmin:
    calls: list[dict[str, Any]] = field(default_factory=list)
    expire_tokens: bool = False
    forbid: bool = False
    total: int = 60
    reprocessed: list[tuple[str, str]] = field(default_factory=list)
    acknowledged: list[tuple[str, str, str]] = field(default_factory=list)
    # (kind, order_id, reason, idempotency key, provider payment id)
    payment_actions: list[tuple[str, str, str, str, str | None]] = field(default_factory=list)
    attention_open: bool = True

    def attention_item(self) -> dict[str, Any]:
        return {
            "payment_id": "6f1c0000-0000-4000-8000-000000000001",
            "key": "late:5077",
            "order_id": "ord-7",
            "kind": "late_money",
            "detail": "paid after expiry <b>twice</b>",
            "provider_payment_id": "5077",
            "parent_payment_id": None,
            "amount": "0.00001000",
            "currency": "btc",
            "raised_at": "2025-01-01T10:00:00Z",
            "age_seconds": 7300,
            "state": "open" if self.attention_open else "resolved",
            "decision": None,
            "order_status": "expired",
            "order_total": "19.99",
            "order_currency": "usd",
        }

    def app(self) -> FastAPI:
        app = FastAPI()

        def authorised(request: Request) -> JSONResponse | None:
            if request.headers.get("authorization") != f"Bearer {ADMIN_JWT}" or self.expire_tokens:
                return JSONResponse({"detail": "Not authenticated"}, status_code=401)
            if self.forbid:
                return JSONResponse({"detail": "Operator role required"}, status_code=403)
            return None

        @app.post("/admin/login")
        async def login(body: dict[str, Any]) -> Any:
            if body.get("username") == "locked":
                return JSONResponse(
                    {"detail": "Too many attempts"}, status_code=429, headers={"Retry-After": "30"}
                )
            if body == {"username": "ops", "password": "correct horse"}:
                return {
                    "access_token": ADMIN_JWT,
                    "token_type": "bearer",
                    "expires_in": 900,
                    "role": "operator",
                }
            return JSONResponse({"detail": "Invalid credentials"}, status_code=401)

        @app.get("/admin/needs-attention/counts")
        async def attention_counts(request: Request) -> Any:
            if (denied := authorised(request)) is not None:
                return denied
            attention = 1 if self.attention_open else 0
            return {
                "total": attention + 3,
                "attention": attention,
                "dead_letters": 2,
                "stuck": 1,
                "by_kind": {"late_money": attention, "dead_letter": 2, "order_underpaid": 1},
            }

        @app.get("/admin/needs-attention")
        async def attention(request: Request) -> Any:
            if (denied := authorised(request)) is not None:
                return denied
            params = dict(request.query_params)
            self.calls.append({"resource": "needs-attention", **params})
            shown = self.attention_open or params.get("state") in ("resolved", "any")
            items = [self.attention_item()] if shown else []
            counts = await attention_counts(request)
            return {
                "items": items,
                "total": len(items),
                "limit": int(params.get("limit", 20)),
                "offset": int(params.get("offset", 0)),
                "counts": counts,
                "dead_letters": {
                    "total": 2,
                    "items": [{"id": "orders-paid:7", "original_subject": "x.y", "error": "boom"}],
                    "href": "/admin/dead-letters",
                },
                "stuck": {
                    "total": 1,
                    "items": [
                        {
                            "kind": "order_underpaid",
                            "order_id": "ord-under",
                            "order_status": "underpaid",
                            "payment_status": None,
                            "price_amount": "19.99",
                            "price_currency": "usd",
                            "pay_amount": "0.0002",
                            "actually_paid": "0.0001",
                            "pay_currency": "btc",
                            "since": "2025-01-01T10:00:00Z",
                            "age_seconds": 90000,
                        }
                    ],
                    "href": "/admin/needs-attention/stuck",
                },
            }

        @app.post("/admin/attention/{payment_id}/acknowledge")
        async def acknowledge(payment_id: str, body: dict[str, Any], request: Request) -> Any:
            if (denied := authorised(request)) is not None:
                return denied
            self.acknowledged.append((payment_id, body["key"], body["reason"]))
            return {
                "ok": True,
                "message": "Acknowledged: the item is off the open list.",
                "audit_id": 11,
                "state": "acknowledged",
            }

        async def payment_action(
            kind: str, order_id: str, body: dict[str, Any], request: Request
        ) -> Any:
            if (denied := authorised(request)) is not None:
                return denied
            key = request.headers.get("idempotency-key", "")
            if order_id == "ord-down":
                return JSONResponse(
                    {"ok": False, "detail": "the payments service is not running"},
                    status_code=503,
                )
            if order_id == "ord-refunded":
                return JSONResponse(
                    {"ok": False, "error_code": "refunded", "detail": "The payment was refunded."},
                    status_code=409,
                )
            earlier = [a for a in self.payment_actions if a[3] == key]
            if not earlier:
                self.payment_actions.append(
                    (kind, order_id, body["reason"], key, body.get("provider_payment_id"))
                )
                self.attention_open = False
            return {
                "ok": True,
                "message": f"Order {order_id} settled as paid.",
                "audit_id": 12,
                "action_id": "7a000000-0000-4000-8000-000000000001",
                "changed": True,
                "replayed": bool(earlier),
            }

        @app.post("/admin/orders/{order_id}/settle")
        async def settle(order_id: str, body: dict[str, Any], request: Request) -> Any:
            return await payment_action("settle", order_id, body, request)

        @app.post("/admin/orders/{order_id}/attach-payment")
        async def attach(order_id: str, body: dict[str, Any], request: Request) -> Any:
            return await payment_action("attach", order_id, body, request)

        @app.get("/admin/{resource}")
        async def listing(resource: str, request: Request) -> Any:
            if (denied := authorised(request)) is not None:
                return denied
            params = dict(request.query_params)
            self.calls.append({"resource": resource, **params})
            limit, offset = int(params["limit"]), int(params["offset"])
            items = [
                {
                    "id": f"{resource}-{i}",
                    "payment_id": f"pay-{i}",
                    "provider_payment_id": str(5_000_000_000 + i),
                    "order_id": f"ord-{i}",
                    "status": "finished",
                    "price_amount": "19.99",
                    "accepted": True,
                    "nested": {"a": 1},
                }
                for i in range(offset, min(offset + limit, self.total))
            ]
            return {"items": items, "total": self.total, "limit": limit, "offset": offset}

        @app.get("/admin/webhook-logs/{log_id}")
        async def detail(log_id: str, request: Request) -> Any:
            if (denied := authorised(request)) is not None:
                return denied
            if log_id == "missing":
                return JSONResponse({"detail": "No such webhook log"}, status_code=404)
            return {
                "id": log_id,
                "provider": "nowpayments",
                "external_id": "5000000001",
                "accepted": True,
                "received_count": 2,
                "raw_body": '{"payment_status":"finished","note":"<script>alert(1)</script>"}',
                "headers": {"x-nowpayments-sig": "abc123", "content-type": "application/json"},
                "payload": {"payment_status": "finished"},
                "can_reprocess": log_id != "r-9",
                "caused": {
                    "publications": [{"event_id": "evt-1", "replay": False}],
                    "payments": [],
                    "transitions": [
                        {"previous_status": "sending", "status": "finished", "caused_by_this": True}
                    ],
                },
            }

        @app.get("/admin/{collection}/{record_id}")
        async def record(collection: str, record_id: str, request: Request) -> Any:
            if (denied := authorised(request)) is not None:
                return denied
            if record_id == "missing":
                return JSONResponse({"detail": f"{collection} not found"}, status_code=404)
            return {
                "order_id": record_id,
                "status": "fulfilled",
                "provider_payment_id": "5000000001",
                "email": "buyer@example.com",
                "events": [{"event_type": "order_paid", "status": "paid"}],
                "deliveries": [],
            }

        @app.post("/admin/webhook-logs/{log_id}/reprocess")
        async def reprocess(log_id: str, body: dict[str, Any], request: Request) -> Any:
            if (denied := authorised(request)) is not None:
                return denied
            if log_id == "a-busy":
                return JSONResponse(
                    {
                        "ok": False,
                        "message": "webhooks did not answer",
                        "audit_id": 8,
                        "detail": "webhooks did not answer",
                    },
                    status_code=503,
                )
            self.reprocessed.append((log_id, body["reason"]))
            return JSONResponse(
                {"ok": True, "event_id": "evt-42", "message": "Reprocess queued.", "audit_id": 7},
                status_code=202,
            )

        @app.post("/admin/orders/{order_id}/revoke-downloads")
        async def revoke(order_id: str, body: dict[str, Any], request: Request) -> Any:
            if (denied := authorised(request)) is not None:
                return denied
            return {"ok": True, "message": f"Revoked 1 link of {order_id}.", "audit_id": 9}

        return app


# -- the web app under test --------------------------------------------------------------------


@dataclass
class WebHarness:
    client: httpx.AsyncClient
    orders: FakeOrders
    admin: FakeAdmin
    app: FastAPI

    async def form_page(self, path: str) -> tuple[str, str]:
        """GET a page with a form; return (html, csrf token)."""
        response = await self.client.get(path)
        assert response.status_code == 200, response.text
        match = CSRF_INPUT.search(response.text)
        assert match, "no CSRF field on the page"
        return response.text, match.group(1)

    async def login(self) -> None:
        _, csrf = await self.form_page("/admin/login")
        response = await self.client.post(
            "/admin/login",
            data={"csrf_token": csrf, "username": "ops", "password": "correct horse"},
        )
        assert response.status_code == 303, response.text


def make_settings(**overrides: Any) -> WebSettings:
    values: dict[str, Any] = {
        "WEB_SESSION_SECRET": SECRET,
        "ORDERS_URL": "http://orders.test",
        "ADMIN_URL": "http://admin.test",
        "STOREFRONT_URL": "http://testserver",
        "EMULATOR_PUBLIC_URL": EMULATOR,
        "DEV_MAILDIR": None,  # never the developer's real capture
        "SMTP_URL": None,
        "WEB_PAYMENT_ORIGINS": "https://nowpayments.io",
        **overrides,
    }
    return WebSettings(**values)


HarnessFactory = Callable[..., WebHarness]


@pytest.fixture
async def make_web() -> AsyncIterator[HarnessFactory]:
    clients: list[httpx.AsyncClient] = []

    def build(
        settings: WebSettings | None = None,
        orders_transport: httpx.AsyncBaseTransport | None = None,
    ) -> WebHarness:
        orders, admin = FakeOrders(), FakeAdmin()
        app = create_app(
            settings or make_settings(),
            orders_transport=orders_transport or httpx.ASGITransport(app=orders.app()),
            admin_transport=httpx.ASGITransport(app=admin.app()),
        )
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )
        clients.append(client)
        return WebHarness(client, orders, admin, app)

    yield build
    for client in clients:
        await client.aclose()


@pytest.fixture
async def web(make_web: HarnessFactory) -> WebHarness:
    return make_web()


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    path = tmp_path / "mail"
    mailbox.Maildir(str(path), create=True)  # cur/ new/ tmp/, as the SMTP capture makes them
    return path


# -- the whole system, for browser tests -------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OPERATOR = ("browser-operator", "a long browser test password 42")


@dataclass
class LiveSystem:
    stack: Any  # shared.testing.stack.Stack
    operator: tuple[str, str]

    @property
    def web_url(self) -> str:
        return str(self.stack.web_url)

    @property
    def emulator_url(self) -> str:
        return str(self.stack.emulator_url)

    def url(self, component: str) -> str:
        return str(self.stack.url(component))


def _stack_env(stack: Any) -> dict[str, str]:
    """The launcher's environment as its children see it (generated secrets included)."""
    env = dict(stack.env)
    for line in (stack.home / "secrets.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip()
    env["DATABASE_URL"] = f"postgresql+asyncpg://postgres@127.0.0.1:{stack.ports['pg']}/bitloot"
    env["NATS_URL"] = f"nats://127.0.0.1:{stack.ports['nats']}"
    return env


@pytest.fixture(scope="module")  # torn down before tests-e2e starts its own stacks
def live_system() -> Iterator[LiveSystem]:
    import subprocess

    from shared.testing.stack import running_stack

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with running_stack() as stack:
        username, password = OPERATOR
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "admin",
                "create-user",
                "--username",
                username,
                "--role",
                "operator",
            ],
            env={**_stack_env(stack), "ADMIN_PASSWORD": password, "LOG_JSON": "false"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        try:
            yield LiveSystem(stack, OPERATOR)
        finally:
            # The stack's home is deleted on exit; keep its logs next to the screenshots.
            logs = REPO_ROOT / "test-artifacts" / "stack-logs"
            shutil.rmtree(logs, ignore_errors=True)
            shutil.copytree(stack.home / "logs", logs, dirs_exist_ok=True)


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        await browser.close()


@dataclass
class Browsing:
    """One browser context (cookies) and page, with screenshots and CSP-violation capture."""

    page: Any
    name: str
    console_errors: list[str]
    shots: int = 0

    async def shot(self, label: str) -> Path:
        self.shots += 1
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.name}-{self.shots:02d}-{label}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    def csp_violations(self) -> list[str]:
        return [m for m in self.console_errors if "Content Security Policy" in m]


@pytest.fixture
async def browsing(chromium: Any, request: pytest.FixtureRequest) -> AsyncIterator[Browsing]:
    context = await chromium.new_context(
        accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(15_000)
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    name = request.node.name.removeprefix("test_")
    try:
        yield Browsing(page, name, errors)
    finally:
        await context.close()
