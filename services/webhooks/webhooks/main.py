"""Composition root of the webhooks service: builds the api and worker apps.

The api needs only PostgreSQL: an IPN is stored with its event in the outbox and answered, and
the worker's relay publishes it. So the api neither connects to NATS nor reports NATS in
``/ready`` — a NATS outage must not turn the provider's callbacks away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from shared.observability import get_logger, install_observability
from shared.runtime import ServiceContext, build_context, worker_app
from starlette.routing import Route

from webhooks import subscribers
from webhooks.api import IPN_PATHS, IpnEndpoint
from webhooks.domain import FailureBudget
from webhooks.models import Outbox
from webhooks.repository import IpnStore
from webhooks.settings import WebhooksSettings

SERVICE = "webhooks"

log = get_logger(__name__)


def build(settings: WebhooksSettings | None = None) -> ServiceContext:
    return build_context(SERVICE, settings or WebhooksSettings(), Outbox)


def _settings(ctx: ServiceContext) -> WebhooksSettings:
    if not isinstance(ctx.settings, WebhooksSettings):
        raise TypeError("the webhooks service needs WebhooksSettings")
    return ctx.settings


def create_api(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    settings = _settings(ctx)
    keys = settings.ipn_keys()  # fail fast on a missing or placeholder secret
    store = IpnStore(
        settings.database_url,
        pool_size=settings.db_pool_size,
        timeout=settings.db_timeout_seconds,
        application_name=f"{SERVICE}-api",
    )
    endpoint = IpnEndpoint(
        store,
        keys,
        max_body_bytes=settings.max_body_bytes,
        failure_budget=FailureBudget(settings.failure_rows_per_minute),
        failure_excerpt_bytes=settings.failure_body_excerpt_bytes,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        log.info("api_started", service=SERVICE, secrets=len(keys))
        try:
            yield
        finally:
            await store.close()
            await ctx.close()

    app = FastAPI(title="BitLoot webhooks", lifespan=lifespan)
    for path in IPN_PATHS:
        # A Route around a non-function endpoint passes scope/receive/send straight through.
        app.router.routes.append(
            Route(path, endpoint, methods=["POST"], include_in_schema=False, name="ipn")
        )
    install_observability(app, {"database": store.ping})
    app.state.ctx = ctx
    app.state.store = store
    app.state.ipn = endpoint
    return app


def create_worker(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    settings = _settings(ctx)
    subscribers.register(ctx)
    return worker_app(ctx, jobs=[subscribers.prune_failures_job(settings)])
