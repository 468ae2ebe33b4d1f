"""Composition root of the webhooks service: builds the api and worker apps.

The api needs only PostgreSQL: an IPN is stored with its event in the outbox and answered, and
the worker's relay publishes it. So the api neither connects to NATS nor reports NATS in
``/ready`` — a NATS outage must not turn the provider's callbacks away.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from shared.observability import get_logger, install_observability
from shared.runtime import ServiceContext, build_context, worker_app
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from webhooks import subscribers
from webhooks.api import IPN_PATHS, IpnEndpoint, ipn_openapi_operation
from webhooks.domain import FailureBudget, SourceAllowList
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


class WebhooksApi(FastAPI):
    """FastAPI app whose IPN routes skip the middleware stack and the router.

    The IPN endpoint is the hottest path of the system and does for itself what the stack
    would do (correlation id, never an unhandled exception). Other methods on the same paths
    and every other route (/health, /ready, /metrics) go through FastAPI as usual.
    """

    ipn: IpnEndpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.ipn is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in IPN_PATHS
        ):
            await self.ipn(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_api(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    settings = _settings(ctx)
    keys = settings.ipn_keys()  # fail fast on a missing or placeholder secret
    allowed = SourceAllowList(settings.ipn_allowed_networks())
    store = IpnStore(
        settings.database_url,
        pool_size=settings.db_pool_size,
        timeout=settings.db_timeout_seconds,
        application_name=f"{SERVICE}-api",
        ingest_concurrency=settings.ingest_concurrency,
        max_batch=settings.ingest_max_batch,
    )
    endpoint = IpnEndpoint(
        store,
        keys,
        max_body_bytes=settings.max_body_bytes,
        failure_budget=FailureBudget(settings.failure_rows_per_minute),
        failure_excerpt_bytes=settings.failure_body_excerpt_bytes,
        allowed_sources=allowed,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        log.info(
            "api_started",
            service=SERVICE,
            secrets=len(keys),
            allowed_sources=[str(n) for n in allowed.networks] or "any",
        )
        # Everything allocated so far (modules, app, settings) lives as long as the process:
        # keep it out of the collector's generations so collections stay short.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        try:
            yield
        finally:
            await store.close()
            await ctx.close()

    app = WebhooksApi(title="BitLoot webhooks", lifespan=lifespan)
    app.ipn = endpoint
    for path in IPN_PATHS:
        # Reached only for other methods (405); a Route around a non-function endpoint passes
        # scope/receive/send straight through.
        app.router.routes.append(
            Route(path, endpoint, methods=["POST"], include_in_schema=False, name="ipn")
        )
    install_observability(app, {"database": store.ping})
    _document_ipn_routes(app)
    app.state.ctx = ctx
    app.state.store = store
    app.state.ipn = endpoint
    return app


def _document_ipn_routes(app: FastAPI) -> None:
    """Add the IPN operations to the generated OpenAPI (FastAPI's "extending OpenAPI")."""
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build_schema()
            for path in IPN_PATHS:
                schema.setdefault("paths", {})[path] = ipn_openapi_operation(path)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_worker(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    settings = _settings(ctx)
    # The api always needs the secret; the worker (replays of stored bodies) only refuses to
    # start without it when the real provider is configured, so a misconfigured deployment
    # fails as a whole rather than half.
    settings.require_real_provider_secret()
    subscribers.register(ctx)
    return worker_app(ctx, jobs=[subscribers.prune_failures_job(settings)])
