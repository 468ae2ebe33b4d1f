"""The NOWPayments client against a provider, the same cases twice: always against the emulator
(in-process), and against the real sandbox when its credentials are in the environment.

    NOWPAYMENTS_SANDBOX_API_KEY=… NOWPAYMENTS_SANDBOX_EMAIL=… NOWPAYMENTS_SANDBOX_PASSWORD=… \\
        uv run pytest services/payments/tests/contract -q

Optional: ``NOWPAYMENTS_SANDBOX_BASE`` (default ``https://api-sandbox.nowpayments.io/v1``) and
``NOWPAYMENTS_SANDBOX_CALLBACK_URL`` (where the sandbox sends the IPNs of the invoices and
payments these tests create; default an https URL nobody answers). Without the three variables
the ``sandbox`` cases are skipped, saying which ones are missing; a skip is not a pass, so the
``emulator`` cases run on their own, every time.

The cases are the provider facts the payments service relies on (DESIGN.md §5): status without a
key, an invoice's fields and digit id, ``GET /payment/{id}`` with an ISO ``updated_at`` the client
turns into epoch ms, the payment list that needs ``Authorization: Bearer <JWT>`` from
``POST /auth``, ``INVALID_API_KEY`` as an auth error, an unknown payment as not found.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from nowpayments_emulator.testing import Harness, fast_config
from payments.client import (
    NowPaymentsClient,
    ProviderAuthError,
    ProviderNotFoundError,
    ProviderRejectedError,
    error_from,
)

SANDBOX_VARS = (
    "NOWPAYMENTS_SANDBOX_API_KEY",
    "NOWPAYMENTS_SANDBOX_EMAIL",
    "NOWPAYMENTS_SANDBOX_PASSWORD",
)
SANDBOX_BASE = "https://api-sandbox.nowpayments.io/v1"
# Where the provider would send IPNs for what these tests create: nobody needs them.
DEFAULT_CALLBACK = "https://example.com/bitloot-contract-test/ipn"

# The emulator's documented defaults for POST /v1/auth (EmulatorConfig.email / .password).
EMULATOR_URL = "http://emulator.test"
EMULATOR_KEY = "contract-api-key"
EMULATOR_EMAIL = "emulator@bitloot.test"
EMULATOR_PASSWORD = "emulator-password"


@dataclass
class Target:
    """One provider to run the cases against, and what a client for it needs."""

    name: str
    base_url: str
    api_key: str
    email: str
    password: str
    callback_url: str
    transport: httpx.AsyncBaseTransport | None = None

    def client(self, **overrides: Any) -> NowPaymentsClient:
        values: dict[str, Any] = {
            "base_url": self.base_url,
            "api_key": self.api_key,
            "email": self.email,
            "password": self.password,
            "timeout": 30.0,
            "read_retries": 1,
            "backoff": 0.2,
            "backoff_max": 1.0,
            "transport": self.transport,
        }
        values.update(overrides)
        return NowPaymentsClient(**values)

    def raw(self) -> httpx.AsyncClient:
        """Plain HTTP with the key, for set-up calls the client does not make (POST /payment)."""
        return httpx.AsyncClient(
            base_url=self.base_url.rstrip("/"),
            headers={"x-api-key": self.api_key},
            transport=self.transport,
            timeout=30.0,
        )


def sandbox_target() -> Target:
    missing = [name for name in SANDBOX_VARS if not os.environ.get(name, "").strip()]
    if missing:
        pytest.skip(
            "real NOWPayments sandbox not configured: set "
            + ", ".join(SANDBOX_VARS)
            + f" (missing: {', '.join(missing)}); the emulator cases do not need them"
        )
    return Target(
        name="sandbox",
        base_url=os.environ.get("NOWPAYMENTS_SANDBOX_BASE", "").strip() or SANDBOX_BASE,
        api_key=os.environ["NOWPAYMENTS_SANDBOX_API_KEY"].strip(),
        email=os.environ["NOWPAYMENTS_SANDBOX_EMAIL"].strip(),
        password=os.environ["NOWPAYMENTS_SANDBOX_PASSWORD"].strip(),
        callback_url=os.environ.get("NOWPAYMENTS_SANDBOX_CALLBACK_URL", "").strip()
        or DEFAULT_CALLBACK,
    )


@asynccontextmanager
async def emulator_target() -> AsyncIterator[Target]:
    """The emulator in-process (ASGI), requiring the JWT on the list as the provider does."""
    harness = Harness.create(fast_config(api_key=EMULATOR_KEY, public_url=EMULATOR_URL, seed=None))
    try:
        yield Target(
            name="emulator",
            base_url=f"{EMULATOR_URL}/v1",
            api_key=EMULATOR_KEY,
            email=EMULATOR_EMAIL,
            password=EMULATOR_PASSWORD,
            callback_url=f"{EMULATOR_URL}/nobody-listens",
            transport=httpx.ASGITransport(app=harness.app),
        )
    finally:
        await harness.aclose()


@pytest.fixture(params=["emulator", "sandbox"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    if request.param == "sandbox":
        yield sandbox_target()
        return
    async with emulator_target() as emulator:
        yield emulator


def order_id() -> str:
    return f"contract-{uuid.uuid4().hex[:12]}"


async def create_payment(target: Target, **fields: Any) -> dict[str, Any]:
    """POST /v1/payment (a payment without an invoice): the client never needs it."""
    body = {
        "price_amount": 25,
        "price_currency": "usd",
        "pay_currency": "btc",
        "order_id": order_id(),
        "order_description": "BitLoot contract test",
        "ipn_callback_url": target.callback_url,
    } | fields
    async with target.raw() as raw:
        response = await raw.post("/payment", json=body)
    assert response.status_code in (200, 201), response.text
    payment: dict[str, Any] = response.json()
    return payment


async def test_status_is_ok(target: Target) -> None:
    async with target.client(api_key="") as client:  # GET /status needs no key
        assert await client.status() is True


async def test_create_invoice_answers_its_fields_and_a_digit_id(target: Target) -> None:
    order = order_id()
    async with target.client() as client:
        invoice = await client.create_invoice(
            order_id=order,
            price_amount=Decimal("25.50"),
            price_currency="usd",
            ipn_callback_url=target.callback_url,
            order_description="BitLoot contract test",
            success_url="https://example.com/success",
            cancel_url="https://example.com/cancel",
        )
    assert invoice.id.isdigit()
    assert invoice.invoice_url.startswith(("https://", "http://")) and invoice.id in (
        invoice.invoice_url
    )
    assert invoice.order_id == order
    assert invoice.price_amount == Decimal("25.50")
    assert (invoice.price_currency or "").lower() == "usd"


async def test_get_payment_reads_the_state_with_updated_at_in_epoch_ms(target: Target) -> None:
    created = await create_payment(target)
    payment_id = str(created["payment_id"])
    async with target.client() as client:
        payment = await client.get_payment(payment_id)
    report = payment.report()
    assert report.payment_id == payment_id and payment_id.isdigit()
    assert report.status == "waiting"
    assert report.price_amount == Decimal(25)
    assert (report.pay_currency or "").lower() == "btc"
    assert report.pay_amount is not None and report.pay_amount > 0
    # GET /payment answers ISO text: kept, as epoch ms, close to now.
    assert report.updated_at_ms is not None
    assert abs(report.updated_at_ms - time.time() * 1000) < 24 * 3600 * 1000


async def test_the_payment_list_needs_the_jwt(target: Target) -> None:
    async with target.client() as client:
        invoice = await client.create_invoice(
            order_id=order_id(),
            price_amount=Decimal(25),
            price_currency="usd",
            ipn_callback_url=target.callback_url,
        )
    async with target.raw() as raw:
        opened = await raw.post("/invoice-payment", json={"iid": invoice.id, "pay_currency": "btc"})
        assert opened.status_code in (200, 201), opened.text
        payment_id = str(opened.json()["payment_id"])
        # What the provider answers to the API key alone, and how the client reads it.
        bare = await raw.get("/payment/", params={"invoiceId": invoice.id, "limit": "10"})
    assert bare.status_code == 401, bare.text
    refused = error_from(bare)
    assert isinstance(refused, ProviderAuthError)
    assert (refused.code, refused.status_code) == ("AUTH_REQUIRED", 401)

    async with target.client(email=None, password=None) as anonymous:
        with pytest.raises(ProviderAuthError) as caught:
            await anonymous.payments_for_invoice(invoice.id)
    assert caught.value.code == "AUTH_NOT_CONFIGURED"

    async with target.client() as client:
        listed = await client.payments_for_invoice(invoice.id)
        again = await client.payments_for_invoice(invoice.id)
        assert client.logins == 1  # the token is reused
    assert payment_id in [p.payment_id for p in listed]
    assert all(p.invoice_id == invoice.id for p in listed)
    assert [p.payment_id for p in again] == [p.payment_id for p in listed]


async def test_a_wrong_login_is_an_auth_error(target: Target) -> None:
    async with target.client(password="definitely-not-the-password") as client:
        with pytest.raises(ProviderAuthError) as caught:
            await client.login()
    assert caught.value.status_code in (401, 403)
    assert "definitely-not-the-password" not in str(caught.value)


async def test_a_wrong_api_key_is_invalid_api_key(target: Target) -> None:
    async with target.client(api_key="bitloot-wrong-key-0000") as client:
        with pytest.raises(ProviderAuthError) as caught:
            await client.create_invoice(
                order_id=order_id(),
                price_amount=Decimal(25),
                price_currency="usd",
                ipn_callback_url=target.callback_url,
            )
    assert caught.value.code == "INVALID_API_KEY"
    assert caught.value.status_code in (401, 403)
    assert not caught.value.retryable


async def test_an_unknown_payment_is_not_found(target: Target) -> None:
    async with target.client() as client:
        with pytest.raises(ProviderNotFoundError) as caught:
            await client.get_payment("9999999999999")
    assert isinstance(caught.value, ProviderRejectedError) and caught.value.status_code == 404


async def test_emulator_a_token_refused_early_is_replaced_once() -> None:
    """Emulator only (the sandbox cannot revoke a token on demand): the provider refuses a token
    before its ``exp`` (401), the client logs in again once and the list call still succeeds."""
    async with emulator_target() as target, target.client() as client:
        invoice = await client.create_invoice(
            order_id=order_id(),
            price_amount=Decimal(25),
            price_currency="usd",
            ipn_callback_url=target.callback_url,
        )
        assert await client.payments_for_invoice(invoice.id) == []
        async with httpx.AsyncClient(transport=target.transport, base_url=EMULATOR_URL) as c:
            expired = await c.post("/_emulator/auth/expire")
            assert expired.status_code == 200, expired.text
        assert await client.payments_for_invoice(invoice.id) == []
        assert client.logins == 2
