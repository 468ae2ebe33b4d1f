"""Logs, correlation ids, metrics and health endpoints shared by every service.

A correlation id enters through the ``X-Correlation-ID`` HTTP header (or is minted at the edge),
lives in a structlog context variable while the request or message is handled, and leaves again
in outgoing NATS headers and event envelopes, so one id follows a purchase across services.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CORRELATION_HEADER = "X-Correlation-ID"
_correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)

# Header names whose values are never logged or stored.
SECRET_HEADERS = frozenset(
    {"authorization", "cookie", "set-cookie", "x-api-key", "proxy-authorization", "x-order-token"}
)
REDACTED = "[redacted]"  # what is stored in place of a secret header's value


def configure_logging(service: str, level: str = "INFO", json_logs: bool = True) -> None:
    """Route stdlib and structlog output through one JSON (or console) renderer."""
    shared_processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            *shared_processors,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared_processors,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in (
        "uvicorn.access",
        "aiosmtpd",
        "werkzeug",
        "httpx",
        "botocore",
        "faststream.access",
        "alembic",
        "shared.messaging.broker",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger


def current_correlation_id() -> str | None:
    return _correlation_id.get()


def bind_correlation_id(value: str | None) -> str:
    """Bind (or mint) the correlation id for the current task and return it."""
    cid = value if value and len(value) <= 100 else str(uuid.uuid4())
    _correlation_id.set(cid)
    structlog.contextvars.bind_contextvars(correlation_id=cid)
    return cid


def strip_secret_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers safe to store: secret-bearing values replaced, everything else kept."""
    return {
        name.lower(): (REDACTED if name.lower() in SECRET_HEADERS else value)
        for name, value in headers
    }


class CorrelationIdMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware overhead on the hot path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == b"x-correlation-id":
                incoming = value.decode("latin-1")
                break
        structlog.contextvars.clear_contextvars()
        cid = bind_correlation_id(incoming)

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-correlation-id", cid.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_header)


ReadinessCheck = Callable[[], Awaitable[None]]


def health_router(
    checks: dict[str, ReadinessCheck], registry: CollectorRegistry = REGISTRY
) -> APIRouter:
    """``/health`` (the process is alive), ``/ready`` (its dependencies answer), ``/metrics``."""
    router = APIRouter(include_in_schema=False)

    @router.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready")
    async def ready() -> Response:
        failures: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await check()
            except Exception as exc:  # a readiness probe reports, it does not raise
                failures[name] = type(exc).__name__
        if failures:
            return JSONResponse({"status": "unavailable", "failing": failures}, status_code=503)
        return JSONResponse({"status": "ready", "checks": sorted(checks)})

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def install_observability(app: FastAPI, checks: dict[str, ReadinessCheck]) -> None:
    app.add_middleware(CorrelationIdMiddleware)
    app.include_router(health_router(checks))
