"""Composition root of the fulfillment service: builds the api and worker apps."""

from __future__ import annotations

from fastapi import FastAPI

from shared.observability import install_observability
from shared.runtime import ServiceContext, api_lifespan, build_context, worker_app

from fulfillment.models import Outbox
from fulfillment.settings import FulfillmentSettings

SERVICE = "fulfillment"


def build(settings: FulfillmentSettings | None = None) -> ServiceContext:
    return build_context(SERVICE, settings or FulfillmentSettings(), Outbox)


def create_api(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    app = FastAPI(title="BitLoot fulfillment", lifespan=api_lifespan(ctx))
    install_observability(app, {"database": ctx.check_db, "nats": ctx.check_nats})
    app.state.ctx = ctx
    return app


def create_worker(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    return worker_app(ctx)
