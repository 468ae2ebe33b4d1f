"""Composition root of the admin service: builds the api and worker apps."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from shared.observability import get_logger, install_observability
from shared.runtime import ServiceContext, api_lifespan, build_context, worker_app

from admin import service
from admin.api import create_routers, install_error_handlers
from admin.metrics import NeedsAttentionMetrics
from admin.security import Passwords, Tokens
from admin.settings import AdminSettings
from admin.subscribers import register_subscribers

SERVICE = "admin"
HOUSEKEEPING_SECONDS = 3600.0
# Attempts are kept a day (far longer than the throttle window) so the audit of a brute-force
# burst can be compared with the raw attempts while investigating.
KEEP_LOGIN_ATTEMPTS = timedelta(days=1)

log = get_logger(__name__)


def build(settings: AdminSettings | None = None) -> ServiceContext:
    # Admin publishes no events: no outbox relay.
    return build_context(SERVICE, settings or AdminSettings(), None)


def _settings(ctx: ServiceContext) -> AdminSettings:
    settings = ctx.settings
    if not isinstance(settings, AdminSettings):
        raise TypeError("the admin context needs AdminSettings")
    return settings


def passwords_for(settings: AdminSettings) -> Passwords:
    return Passwords(time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib)


def create_api(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    settings = _settings(ctx)
    tokens = Tokens(settings.jwt_key(), settings.token_ttl_seconds)  # fails fast without a key
    app = FastAPI(title="BitLoot admin", lifespan=api_lifespan(ctx))
    install_observability(app, {"database": ctx.check_db, "nats": ctx.check_nats})
    install_error_handlers(app)
    for router in create_routers(ctx, settings, passwords_for(settings), tokens):
        app.include_router(router)
    if origins := settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials=True,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Correlation-ID"],
        )
    app.add_middleware(NeedsAttentionMetrics, sessions=ctx.sessions)
    app.state.ctx = ctx
    return app


async def housekeeping(ctx: ServiceContext) -> None:
    """Prune old login attempts and expired revoked tokens, hourly."""
    while True:
        try:
            async with ctx.sessions() as session, session.begin():
                pruned = await service.prune_security_tables(session, KEEP_LOGIN_ATTEMPTS)
            log.info("admin_housekeeping", pruned=pruned)
        except Exception as exc:  # the database may be down; try again next round
            log.warning("admin_housekeeping_failed", error=repr(exc)[:200])
        await asyncio.sleep(HOUSEKEEPING_SECONDS)


def create_worker(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    register_subscribers(ctx)
    app = worker_app(ctx, jobs=[housekeeping])
    app.add_middleware(NeedsAttentionMetrics, sessions=ctx.sessions)
    return app
