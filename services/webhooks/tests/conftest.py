"""Fixtures for the webhooks tests: the api in-process on the real test PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

# Test modules run in importlib mode; the shared helpers live beside this file.
sys.path.insert(0, str(Path(__file__).parent))

from shared.runtime import ServiceContext
from shared.testing.plugin import Infra
from webhooks.main import build, create_api
from webhooks.settings import WebhooksSettings
from webhooks_testkit import PREVIOUS_SECRET, SECRET


def make_settings(infra: Infra, **overrides: Any) -> WebhooksSettings:
    values: dict[str, Any] = {
        "database_url": infra.database_url,
        "nats_url": infra.nats_url,
        "ipn_secret": SECRET,
        "ipn_secret_previous": PREVIOUS_SECRET,
        "log_json": False,
        "db_pool_size": 10,
        "outbox_sweep_seconds": 0.2,
    }
    values.update(overrides)
    return WebhooksSettings(**values)


@dataclass
class Gateway:
    app: Any
    ctx: ServiceContext
    client: httpx.AsyncClient


async def open_gateway(settings: WebhooksSettings) -> Gateway:
    ctx = build(settings)
    app = create_api(ctx)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    client = httpx.AsyncClient(transport=transport, base_url="http://webhooks.test")
    return Gateway(app, ctx, client)


async def close_gateway(gw: Gateway) -> None:
    await gw.client.aclose()
    await gw.app.state.store.close()
    await gw.ctx.close()


@pytest.fixture
async def webhooks_infra(infra: Infra) -> Infra:
    """Empty webhooks tables only: enough for tests that never touch NATS, and far quicker
    than ``clean_infra`` (which truncates every schema and purges every stream)."""
    conn = await asyncpg.connect(infra.database_url.replace("+asyncpg", ""))
    try:
        await conn.execute(
            "TRUNCATE webhooks.webhook_log, webhooks.webhook_failure, webhooks.outbox, "
            "webhooks.inbox RESTART IDENTITY"
        )
    finally:
        await conn.close()
    return infra


@pytest.fixture
async def gateway(webhooks_infra: Infra) -> AsyncIterator[Gateway]:
    gw = await open_gateway(make_settings(webhooks_infra))
    try:
        yield gw
    finally:
        await close_gateway(gw)


@pytest.fixture
async def db(webhooks_infra: Infra) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(webhooks_infra.database_url.replace("+asyncpg", ""))
    try:
        yield conn
    finally:
        await conn.close()
