"""Composition root of the web app (``uvicorn --factory web.main:create_app``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from shared.observability import configure_logging, get_logger, install_observability
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from web import console, devpages, storefront
from web.clients import (
    AdminClient,
    BackendError,
    BackendUnavailableError,
    ForbiddenError,
    NotFoundError,
    OrdersClient,
    UnauthorizedError,
    make_client,
)
from web.pages import PACKAGE_DIR, error_page
from web.security import CsrfError, SecurityHeadersMiddleware, Signer
from web.settings import WebSettings

log = get_logger(__name__)

HOME_LINK = ("/", "Back to the shop")


def create_app(
    settings: WebSettings | None = None,
    *,
    orders_transport: httpx.AsyncBaseTransport | None = None,
    admin_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    if settings is None:
        settings = WebSettings()
        configure_logging("web", settings.log_level, settings.log_json)
    signer = Signer(settings.secret())  # fails fast when WEB_SESSION_SECRET is missing
    orders = OrdersClient(
        make_client(settings.orders_url, settings.backend_timeout, orders_transport)
    )
    admin = AdminClient(make_client(settings.admin_url, settings.backend_timeout, admin_transport))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await orders.aclose()
            await admin.aclose()

    app = FastAPI(
        title="BitLoot web",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.signer = signer
    app.state.orders = orders
    app.state.admin = admin

    app.mount("/static", StaticFiles(directory=str(PACKAGE_DIR / "static")), name="static")
    app.include_router(storefront.router)
    app.include_router(console.router)
    if settings.dev_mailbox_enabled:
        app.include_router(devpages.router)
    install_observability(app, {})
    app.add_middleware(SecurityHeadersMiddleware, payment_origins=settings.payment_origins)
    _install_error_pages(app)
    return app


def _is_admin(request: Request) -> bool:
    return request.url.path.startswith("/admin")


def _install_error_pages(app: FastAPI) -> None:
    @app.exception_handler(console.LoginRequiredError)
    async def login_required(request: Request, exc: console.LoginRequiredError) -> Response:
        return console.login_redirect(request, exc.next_path, exc.expired)

    @app.exception_handler(CsrfError)
    async def csrf_failed(request: Request, exc: CsrfError) -> Response:
        log.info("csrf_rejected", path=request.url.path, reason=str(exc))
        return error_page(
            request,
            403,
            "Your form expired",
            "For your security the form could not be accepted. Go back, reload the page and "
            "submit it again.",
            link=("/admin/login" if _is_admin(request) else "/", "Start again"),
        )

    @app.exception_handler(BackendError)
    async def backend_failed(request: Request, exc: BackendError) -> Response:
        if isinstance(exc, UnauthorizedError) and _is_admin(request):
            return console.login_redirect(request, console._current_path(request), expired=True)
        if isinstance(exc, ForbiddenError):
            return error_page(
                request,
                403,
                "Not allowed",
                "Your account is not allowed to do that. Ask an administrator for access.",
                link=("/admin/payments", "Back to the console")
                if _is_admin(request)
                else HOME_LINK,
            )
        if isinstance(exc, NotFoundError):
            return error_page(request, 404, "Not found", exc.message, link=HOME_LINK)
        if isinstance(exc, BackendUnavailableError):
            title = (
                "The admin service is temporarily unavailable"
                if exc.service == "admin"
                else "The shop is temporarily unavailable"
            )
            message = exc.message
            if "try again" not in message.lower():
                message += " Please try again in a moment."
            return error_page(request, 503, title, message, link=None)
        return error_page(request, 400, "Request refused", exc.message, link=HOME_LINK)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error_page(
                request, 404, "Page not found", "There is nothing at this address.", link=HOME_LINK
            )
        if exc.status_code == 405:
            return error_page(request, 405, "Not allowed", "That action is not available here.")
        return error_page(request, exc.status_code, "Request refused", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        return error_page(request, 400, "Request refused", "The request was not valid.")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled_error", path=request.url.path)
        if request.url.path.endswith("/status"):
            return JSONResponse({"error": "internal"}, status_code=500)
        return error_page(
            request,
            500,
            "Something went wrong",
            "An unexpected error happened on our side. Please try again.",
            link=HOME_LINK,
        )
