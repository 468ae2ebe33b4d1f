"""Fixtures for the webhooks tests: the api in-process on the real test PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

# Test modules run in importlib mode; the shared helpers live beside this file.
sys.path.insert(0, str(Path(__file__).parent))

from shared.testing.plugin import Infra
from webhooks_testkit import Gateway, close_gateway, make_settings, open_gateway


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
