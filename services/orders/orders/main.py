"""Composition root of the orders service: builds the api and worker apps."""

from __future__ import annotations

from fastapi import FastAPI

from shared.observability import install_observability
from shared.runtime import ServiceContext, api_lifespan, build_context, worker_app

from orders.models import Outbox
from orders.settings import OrdersSettings

SERVICE = "orders"


def build(settings: OrdersSettings | None = None) -> ServiceContext:
    return build_context(SERVICE, settings or OrdersSettings(), Outbox)


def create_api(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    app = FastAPI(title="BitLoot orders", lifespan=api_lifespan(ctx))
    install_observability(app, {"database": ctx.check_db, "nats": ctx.check_nats})
    app.state.ctx = ctx
    return app


def create_worker(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    return worker_app(ctx)
