"""The seeded catalogue migration, fail-fast settings and behaviour when Postgres is gone."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from orders.main import build, create_api
from pydantic import SecretStr
from shared.db.migrations import alembic_config, upgrade
from shared.runtime import running
from shared.settings import SecretNotConfiguredError
from shared.testing import free_port

from ..conftest import make_settings


def _reseed(database_url: str) -> None:
    from alembic import command

    command.downgrade(alembic_config("orders", database_url), "orders_0002")
    upgrade("orders", database_url)


async def test_migration_seeds_a_usd_demo_catalogue(clean_infra, orders_api, probe):
    await probe.execute("DELETE FROM orders.product")
    await asyncio.to_thread(_reseed, clean_infra.database_url)
    response = await orders_api.get("/products")
    items = response.json()["items"]
    assert len(items) >= 4
    assert {p["currency"] for p in items} == {"usd"}
    assert "retro-arcade-classic" not in {p["sku"] for p in items}  # seeded inactive
    assert {"sku": "pixelforge-pro-1y", "price": "9.99"}.items() <= next(
        p for p in items if p["sku"] == "pixelforge-pro-1y"
    ).items()
    order = await orders_api.post(
        "/orders",
        json={"email": "demo@example.com", "items": [{"sku": "pixelforge-pro-1y", "quantity": 2}]},
    )
    assert order.json()["total"] == "19.98"


@pytest.mark.parametrize("value", [None, "", "changeme", "replace-me-with-a-secret"])
def test_missing_or_placeholder_pepper_fails_at_start(value):
    settings = make_settings(order_token_pepper=SecretStr(value) if value is not None else None)
    with pytest.raises(SecretNotConfiguredError, match="ORDER_TOKEN_PEPPER") as info:
        build(settings)
    if value:
        assert value not in str(info.value)


async def test_database_down_is_503_not_a_stack_trace(clean_infra):
    dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/bitloot"
    ctx = build(make_settings(database_url=dead))
    app = create_api(ctx)
    async with (
        running(ctx, subscribers=False),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        products = await client.get("/products")
        created = await client.post(
            "/orders",
            json={"email": "a@example.com", "items": [{"sku": "game-key", "quantity": 1}]},
        )
    for response in (products, created):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "database_unavailable"
        assert "Traceback" not in response.text
