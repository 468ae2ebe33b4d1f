"""Composition root of the orders service: builds the api and worker apps."""

from __future__ import annotations

from fastapi import FastAPI
from shared.observability import install_observability
from shared.runtime import ServiceContext, api_lifespan, build_context, worker_app

from orders import api, subscribers
from orders.jobs import expiry_job
from orders.models import Outbox
from orders.settings import OrdersSettings

SERVICE = "orders"

DESCRIPTION = """The storefront's API: catalogue, orders, checkout and order status.

Money is decimal text (`"19.98"`). Errors carry FastAPI's `detail` plus an `error` object with
`field`, `reason` and `code`. Order access needs the `order_token` returned by `POST /orders`.
"""


def build(settings: OrdersSettings | None = None) -> ServiceContext:
    settings = settings or OrdersSettings()
    settings.token_pepper()  # fail at start, naming the variable, not at the first request
    return build_context(SERVICE, settings, Outbox)


def _settings(ctx: ServiceContext) -> OrdersSettings:
    assert isinstance(ctx.settings, OrdersSettings), "orders needs OrdersSettings"
    return ctx.settings


def create_api(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    app = FastAPI(
        title="BitLoot orders", description=DESCRIPTION, version="1", lifespan=api_lifespan(ctx)
    )
    install_observability(app, {"database": ctx.check_db, "nats": ctx.check_nats})
    app.state.ctx = ctx
    api.install(app, ctx, _settings(ctx))
    return app


def create_worker(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    subscribers.register(ctx)
    return worker_app(ctx, jobs=[expiry_job])
