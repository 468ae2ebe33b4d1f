"""Fixtures: an in-process emulator and a real loopback IPN receiver.

The emulator runs in-process over ASGI; its IPNs go over real HTTP to a uvicorn receiver bound
to a free loopback port, so the bytes and headers checked are the ones that crossed a socket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from nowpayments_emulator.testing import (
    Harness,
    HarnessFactory,
    Receiver,
    fast_config,
    serve_receiver,
)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serve_receiver() as recorder:
        yield recorder


@pytest_asyncio.fixture
async def make_harness() -> AsyncIterator[HarnessFactory]:
    opened: list[Harness] = []

    async def factory(**overrides: Any) -> Harness:
        harness = Harness.create(fast_config(**overrides))
        opened.append(harness)
        return harness

    yield factory
    for harness in opened:
        await harness.aclose()


@pytest_asyncio.fixture
async def emu(make_harness: HarnessFactory) -> Harness:
    return await make_harness()
