"""Periodic work of the worker: expire orders nobody paid, forget old idempotency keys.

Each run is its own transaction (the boundary commits). Replicas may run it at the same time:
the expiry scan uses SKIP LOCKED, so they split the due orders instead of doubling them.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from shared.observability import get_logger
from shared.runtime import ServiceContext

from orders import service
from orders.settings import OrdersSettings

log = get_logger(__name__)


async def run_expiry_once(ctx: ServiceContext, *, now: datetime | None = None) -> int:
    """Expire every due order (batch by batch); returns how many were expired."""
    settings = ctx.settings
    assert isinstance(settings, OrdersSettings)
    now = now or datetime.now(UTC)
    wait_limit = timedelta(
        seconds=settings.invoice_lifetime_seconds + settings.expiry_grace_seconds
    )
    total = 0
    while True:
        async with ctx.sessions() as session, session.begin():
            expired = await service.expire_due_orders(
                session, now=now, wait_limit=wait_limit, batch_size=settings.expiry_batch_size
            )
        total += expired
        if expired < settings.expiry_batch_size:
            return total


async def purge_once(ctx: ServiceContext, *, now: datetime | None = None) -> int:
    settings = ctx.settings
    assert isinstance(settings, OrdersSettings)
    now = now or datetime.now(UTC)
    async with ctx.sessions() as session, session.begin():
        return await service.purge_idempotency_keys(
            session, older_than=now - timedelta(seconds=settings.idempotency_retention_seconds)
        )


async def expiry_job(ctx: ServiceContext) -> None:
    """Runs for the worker's lifetime; a failed round (database down) is logged and retried."""
    settings = ctx.settings
    assert isinstance(settings, OrdersSettings)
    while True:
        try:
            await run_expiry_once(ctx)
            await purge_once(ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("expiry_round_failed", error=repr(exc)[:300])
        await asyncio.sleep(settings.expiry_check_seconds)
