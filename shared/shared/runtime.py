"""Composition helpers: every service's ``main.py`` builds its API and worker apps with these.

Two process roles per service, both plain ASGI apps served by uvicorn:
- api: HTTP endpoints; writes state and outbox rows; may send NATS requests.
- worker: durable consumers, request-reply responders, the outbox relay and periodic jobs;
  serves only ``/health``, ``/ready`` and ``/metrics`` on its own port.
Subscribers run in the worker's own lifespan (FastStream's FastAPI plugin is deprecated).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from faststream.nats import NatsBroker
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db import create_engine, make_session_factory, ping
from shared.messaging.broker import ensure_streams, flush, make_broker
from shared.messaging.consumer import ConsumerPolicy
from shared.messaging.outbox import WAKER_KEY, OutboxRelay, OutboxWaker, jetstream_publisher
from shared.observability import configure_logging, get_logger, install_observability
from shared.settings import ServiceSettings

log = get_logger(__name__)

BackgroundJob = Callable[["ServiceContext"], Coroutine[Any, Any, None]]


@dataclass
class ServiceContext:
    """Everything a service's use cases need, built once per process."""

    name: str
    settings: ServiceSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    broker: NatsBroker
    relay: OutboxRelay | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def consumer_policy(self) -> ConsumerPolicy:
        return ConsumerPolicy(
            max_deliveries=self.settings.consumer_max_deliveries,
            outage_max_deliveries=self.settings.consumer_outage_max_deliveries,
            backoff=tuple(self.settings.consumer_backoff_seconds),
            concurrency=self.settings.consumer_concurrency,
        )

    async def check_db(self) -> None:
        await ping(self.engine)

    async def check_nats(self) -> None:
        conn = self.broker.config.connection_state.connection
        if conn is None or not conn.is_connected:
            raise ConnectionError("NATS is not connected")

    async def close(self) -> None:
        waker = self.extras.get("outbox_waker")
        if waker is not None:
            await waker.close()
        await self.engine.dispose()


def build_context(name: str, settings: ServiceSettings, outbox: Any | None) -> ServiceContext:
    configure_logging(name, settings.log_level, settings.log_json)
    engine = create_engine(
        settings.database_url, pool_size=settings.db_pool_size, application_name=name
    )
    waker = OutboxWaker(settings.database_url)
    sessions = make_session_factory(engine, info={WAKER_KEY: waker})
    broker = make_broker(settings.nats_url, name=name)
    ctx = ServiceContext(
        name=name, settings=settings, engine=engine, sessions=sessions, broker=broker
    )
    if outbox is not None:
        ctx.relay = OutboxRelay(
            name=name,
            session_factory=sessions,
            outbox=outbox,
            publish=jetstream_publisher(broker),
            database_url=settings.database_url,
            batch_size=settings.outbox_batch_size,
            sweep_seconds=settings.outbox_sweep_seconds,
        )
        waker.register(ctx.relay)
    ctx.extras["outbox_waker"] = waker
    return ctx


async def _connect_broker(ctx: ServiceContext) -> None:
    """Connect and declare streams; retries so a service can start before NATS is up."""
    delay = 0.2
    while True:
        try:
            await ctx.broker.connect()
            js = ctx.broker.config.connection_state.stream
            await ensure_streams(js, replicas=ctx.settings.stream_replicas)
            return
        except Exception as exc:
            log.warning("nats_connect_retry", error=repr(exc)[:200], retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


@asynccontextmanager
async def running(
    ctx: ServiceContext, *, subscribers: bool, jobs: list[BackgroundJob] | None = None
) -> AsyncIterator[None]:
    """Start the broker (and, in a worker, subscribers, relay and jobs); stop them in order."""
    await _connect_broker(ctx)
    if subscribers:
        await ctx.broker.start()
        await flush(ctx.broker)
    if ctx.relay is not None and subscribers:
        await ctx.relay.start()
    tasks = [asyncio.create_task(job(ctx), name=f"{ctx.name}-job") for job in jobs or []]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if ctx.relay is not None and subscribers:
            await ctx.relay.stop()
        await ctx.broker.stop()
        await ctx.close()


def worker_app(ctx: ServiceContext, *, jobs: list[BackgroundJob] | None = None) -> FastAPI:
    """The worker process: consumers + relay + jobs, with health endpoints only."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with running(ctx, subscribers=True, jobs=jobs):
            log.info("worker_started", service=ctx.name)
            yield

    app = FastAPI(title=f"{ctx.name} worker", lifespan=lifespan, openapi_url=None)
    install_observability(app, {"database": ctx.check_db, "nats": ctx.check_nats})
    app.state.ctx = ctx
    return app


def api_lifespan(ctx: ServiceContext) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with running(ctx, subscribers=False):
            log.info("api_started", service=ctx.name)
            yield

    return lifespan
