"""The internal read API over ASGI against the real database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
from payments import service
from payments.domain import ProviderReport
from payments.main import build, create_api
from payments.models import Payment
from payments.settings import PaymentsSettings
from shared.runtime import ServiceContext, running
from shared.testing import free_port


@asynccontextmanager
async def api_client(
    settings: PaymentsSettings,
) -> AsyncIterator[tuple[httpx.AsyncClient, ServiceContext]]:
    ctx = build(settings)
    app = create_api(ctx)
    async with running(ctx, subscribers=False):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://payments") as client:
            yield client, ctx


@pytest.fixture
async def api(clean_infra: Any) -> AsyncIterator[tuple[httpx.AsyncClient, ServiceContext]]:
    async with api_client(PaymentsSettings(log_json=False)) as pair:
        yield pair


async def seed(ctx: ServiceContext) -> uuid.UUID:
    payment_id = uuid.uuid4()
    async with ctx.sessions() as session, session.begin():
        payment = Payment(
            id=payment_id,
            order_id="ord-api",
            provider="nowpayments",
            status="created",
            price_amount=Decimal("25.10"),
            price_currency="usd",
            description="",
            invoice_id="9007199254740993",
            invoice_url="http://p/i",
            ledger_seq=0,
        )
        session.add(payment)
        await session.flush()
        await service.apply_report(
            session,
            payment,
            ProviderReport(
                status="finished",
                payment_id="9007199254740995",
                price_amount=Decimal("25.1"),
                price_currency="usd",
                pay_amount=Decimal("0.00036101"),
                actually_paid=Decimal("0.00036102"),
                pay_currency="btc",
            ),
            source="admin",
        )
        await service.apply_report(session, payment, ProviderReport(status="waiting"), source="ipn")
    return payment_id


async def test_get_payment_shows_state_amounts_as_strings_and_the_ledger(api) -> None:
    client, ctx = api
    payment_id = await seed(ctx)
    response = await client.get(f"/payments/{payment_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["order_id"], body["version"]) == ("finished", "ord-api", 2)
    assert body["price_amount"] == "25.10"
    assert body["surplus"] == "0.00000001" and body["actually_paid"] == "0.00036102"
    assert body["invoice_id"] == "9007199254740993"
    assert body["provider_payment_id"] == "9007199254740995"
    assert [
        (t["seq"], t["outcome"], t["reported_status"], t["to_status"]) for t in body["transitions"]
    ] == [
        (1, "applied", "finished", "finished"),
        (2, "ignored", "waiting", "finished"),
    ]
    by_order = await client.get("/payments/by-order/ord-api")
    assert by_order.status_code == 200 and by_order.json()["id"] == str(payment_id)


async def test_unknown_payment_is_404_and_a_bad_id_is_422_naming_the_field(api) -> None:
    client, _ = api
    missing = await client.get(f"/payments/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.json()["detail"] == "payment not found"
    bad = await client.get("/payments/not-a-uuid")
    assert bad.status_code == 422
    [error] = bad.json()["detail"]
    assert error["loc"] == ["path", "payment_id"] and "UUID" in error["msg"]
    long_order = await client.get("/payments/by-order/" + "x" * 65)
    assert long_order.status_code == 422


async def test_health_ready_and_metrics(api) -> None:
    client, _ = api
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200 and ready.json()["checks"] == ["database", "nats"]
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200 and "consumer_messages_total" in metrics.text


async def test_database_down_is_503_without_a_stack_trace(clean_infra: Any) -> None:
    settings = PaymentsSettings(
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere",
        log_json=False,
    )
    async with api_client(settings) as (client, _):
        response = await client.get(f"/payments/{uuid.uuid4()}")
        assert response.status_code == 503
        assert response.json() == {"detail": "database unavailable, try again"}
        ready = await client.get("/ready")
        assert ready.status_code == 503 and "database" in ready.json()["failing"]


async def test_worker_factory_fails_fast_without_the_provider_key(monkeypatch) -> None:
    from payments.main import create_worker
    from shared.settings import SecretNotConfiguredError

    monkeypatch.setenv("NOWPAYMENTS_API_KEY", "changeme")
    with pytest.raises(SecretNotConfiguredError, match="NOWPAYMENTS_API_KEY"):
        create_worker()


async def test_worker_app_runs_its_lifespan_and_serves_health_only(
    clean_infra: Any, monkeypatch
) -> None:
    from payments.main import create_worker

    monkeypatch.setenv("NOWPAYMENTS_API_KEY", "a-real-looking-key")
    monkeypatch.setenv("PAYMENTS_POLL_TICK_SECONDS", "0.05")
    app = create_worker()
    worker = app.state.ctx.extras["worker"]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
            assert (await client.get("/ready")).status_code == 200
            assert (await client.get(f"/payments/{uuid.uuid4()}")).status_code == 404
        assert not worker.client._http.is_closed
    assert worker.client._http.is_closed
