"""Composition root of the webhooks service: builds the api and worker apps."""

from __future__ import annotations

from fastapi import FastAPI

from shared.observability import install_observability
from shared.runtime import ServiceContext, api_lifespan, build_context, worker_app

from webhooks.models import Outbox
from webhooks.settings import WebhooksSettings

SERVICE = "webhooks"


def build(settings: WebhooksSettings | None = None) -> ServiceContext:
    return build_context(SERVICE, settings or WebhooksSettings(), Outbox)


def create_api(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    app = FastAPI(title="BitLoot webhooks", lifespan=api_lifespan(ctx))
    install_observability(app, {"database": ctx.check_db, "nats": ctx.check_nats})
    app.state.ctx = ctx
    return app


def create_worker(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    return worker_app(ctx)
