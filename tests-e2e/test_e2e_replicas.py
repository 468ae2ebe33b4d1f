"""Two replicas of every worker at once: durable consumers split the work, the relays and
pollers claim rows with SKIP LOCKED, and still nothing is done twice."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from shared.testing.shop import Shop, storm
from shared.testing.stack import Stack, running_stack
from shared.topology import SERVICES

from .conftest import E2E_ENV, assert_exactly_once

pytestmark = pytest.mark.timeout(900)

FAULT_STORM_SIZE = int(os.environ.get("E2E_FAULT_STORM_SIZE", "150"))


@pytest.fixture(scope="module")
def replica_stack() -> Iterator[Stack]:
    with running_stack({**E2E_ENV, "BITLOOT_WORKER_REPLICAS": "2"}) as s:
        yield s


async def test_two_replicas_of_every_worker(replica_stack: Stack) -> None:
    for service in SERVICES:
        assert replica_stack.pids(f"{service.name}-worker")
        assert replica_stack.pids(f"{service.name}-worker-1")
    async with httpx.AsyncClient(timeout=60) as client:
        shop = Shop(replica_stack, client)
        result = await storm(shop, FAULT_STORM_SIZE, label="replicas")
    await assert_exactly_once(replica_stack, result)
