"""Composition root of the fulfillment service: builds the api and worker apps."""

from __future__ import annotations

from fastapi import FastAPI
from shared.observability import install_observability
from shared.runtime import BackgroundJob, ServiceContext, api_lifespan, build_context, worker_app

from fulfillment import api, jobs, subscribers
from fulfillment.emails import EmailBackend
from fulfillment.models import Outbox
from fulfillment.service import Fulfillment
from fulfillment.settings import FulfillmentSettings
from fulfillment.storage import ObjectStore

SERVICE = "fulfillment"


def build(
    settings: FulfillmentSettings | None = None,
    *,
    store: ObjectStore | None = None,
    mailer: EmailBackend | None = None,
) -> ServiceContext:
    """Everything both processes need. Fails here, naming the variable, on a missing secret."""
    settings = settings or FulfillmentSettings()
    fulfillment = Fulfillment.from_settings(settings, store=store, mailer=mailer)
    ctx = build_context(SERVICE, settings, Outbox)
    ctx.extras["fulfillment"] = fulfillment
    ctx.extras["email_dispatcher"] = jobs.EmailDispatcher(
        ctx.sessions, fulfillment, database_url=settings.database_url
    )
    return ctx


def fulfillment_of(ctx: ServiceContext) -> Fulfillment:
    f: Fulfillment = ctx.extras["fulfillment"]
    return f


def create_api(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    f = fulfillment_of(ctx)
    app = FastAPI(
        title="BitLoot fulfillment", lifespan=api_lifespan(ctx), docs_url=None, redoc_url=None
    )
    app.add_middleware(api.ErrorPages)  # inside the correlation middleware: pages keep the id
    install_observability(
        app, {"database": ctx.check_db, "nats": ctx.check_nats, "storage": f.store.check}
    )
    app.include_router(api.router)
    app.state.ctx = ctx
    return app


def worker_jobs() -> list[BackgroundJob]:
    return [jobs.email_job, jobs.housekeeping_job]


def register_worker(ctx: ServiceContext) -> None:
    """Consumers and the revoke responder on ``ctx.broker`` (before the broker starts)."""
    subscribers.register(ctx, fulfillment_of(ctx))


def create_worker(ctx: ServiceContext | None = None) -> FastAPI:
    ctx = ctx or build()
    register_worker(ctx)
    return worker_app(ctx, jobs=worker_jobs())
