"""Composition root of the payments service: builds the api and worker apps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from shared.observability import install_observability
from shared.runtime import ServiceContext, api_lifespan, build_context, worker_app

from payments import api
from payments.client import NowPaymentsClient
from payments.models import Outbox
from payments.settings import PaymentsSettings
from payments.subscribers import Worker

SERVICE = "payments"


def build(settings: PaymentsSettings | None = None) -> ServiceContext:
    return build_context(SERVICE, settings or PaymentsSettings(), Outbox)


def settings_of(ctx: ServiceContext) -> PaymentsSettings:
    assert isinstance(ctx.settings, PaymentsSettings)
    return ctx.settings


def build_client(settings: PaymentsSettings) -> NowPaymentsClient:
    """Fails fast, naming the variable, when NOWPAYMENTS_API_KEY is missing or a placeholder, and,
    against the real provider, naming every missing login variable and a callback URL the
    provider cannot reach (``PaymentsSettings.require_ready_for_provider``)."""
    settings.require_ready_for_provider()
    return NowPaymentsClient(
        base_url=settings.nowpayments_base,
        api_key=settings.api_key().get_secret_value(),
        email=settings.nowpayments_email,
        password=settings.nowpayments_password,
        jwt_lifetime=settings.jwt_lifetime_seconds,
        timeout=settings.http_timeout,
        connect_timeout=settings.http_connect_timeout,
        read_retries=settings.read_retries,
        backoff=settings.retry_backoff_seconds,
        backoff_max=settings.retry_backoff_max_seconds,
    )


def build_worker(ctx: ServiceContext, client: NowPaymentsClient | None = None) -> Worker:
    """The worker's boundaries, registered on the context's broker (call before starting it)."""
    settings = settings_of(ctx)
    worker = Worker(ctx=ctx, settings=settings, client=client or build_client(settings))
    worker.register()
    ctx.extras["worker"] = worker
    return worker


def create_api(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    app = FastAPI(title="BitLoot payments", lifespan=api_lifespan(ctx))
    install_observability(app, {"database": ctx.check_db, "nats": ctx.check_nats})
    api.install(app)
    app.state.ctx = ctx
    return app


def create_worker(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    worker = build_worker(ctx)
    app = worker_app(ctx, jobs=worker.jobs())
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        try:
            async with inner(application):
                yield
        finally:
            await worker.client.aclose()

    app.router.lifespan_context = lifespan
    return app
