"""``bitloot_admin_needs_attention{kind}``, computed from the database when ``/metrics`` is
scraped.

Why on scrape: the numbers change in two processes (the worker projects items, the api
acknowledges and settles) and across replicas, so a gauge moved in those code paths would only
know its own process's share. A few indexed counts per scrape are cheap and always right; every
process reports the same global value (aggregate with ``max``, not ``sum``).
"""

from __future__ import annotations

import asyncio

from prometheus_client import Gauge
from shared.observability import get_logger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from admin import service

log = get_logger(__name__)

NEEDS_ATTENTION = Gauge(
    "bitloot_admin_needs_attention",
    "Things an operator must look at: open attention items by kind, dead letters "
    "(kind=dead_letter) and stuck payments/orders (payment_partially_paid, payment_mismatch, "
    "order_underpaid)",
    ["kind"],
)
# A scrape storm must not become a query storm.
MIN_REFRESH_SECONDS = 2.0
QUERY_TIMEOUT_SECONDS = 3.0


async def refresh(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with sessions() as session:
        counts = await service.needs_attention_counts(session)
    # Replace all at once, without an await in between: no scrape sees a half-set gauge, and a
    # kind that dropped out is not left at its old value.
    NEEDS_ATTENTION.clear()
    for kind, n in counts.items():
        NEEDS_ATTENTION.labels(kind=kind).set(n)
    return counts


class NeedsAttentionMetrics:
    """ASGI middleware: refresh the gauge before ``GET /metrics`` is answered. A database
    outage leaves the last values in place (``/ready`` reports the outage)."""

    def __init__(self, app: ASGIApp, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.app = app
        self.sessions = sessions
        self._last = float("-inf")
        self._lock = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == "/metrics":
            await self._refresh()
        await self.app(scope, receive, send)

    async def _refresh(self) -> None:
        async with self._lock:
            now = asyncio.get_running_loop().time()
            if now - self._last < MIN_REFRESH_SECONDS:
                return
            try:
                await asyncio.wait_for(refresh(self.sessions), QUERY_TIMEOUT_SECONDS)
                self._last = now
            except Exception as exc:
                log.warning("needs_attention_gauge_failed", error=repr(exc)[:200])
