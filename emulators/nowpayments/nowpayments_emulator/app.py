"""App factory: `uvicorn --factory nowpayments_emulator.app:create_app`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import api, auth, checkout, control, hosted
from .config import EmulatorConfig
from .responses import ProviderError, error_response
from .service import Emulator

# What the control API and the hosted page keep: FastAPI's own errors / HTML pages.
_OWN_ERRORS = ("/_emulator",)
_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "INVALID_REQUEST_PARAMS"}


def _epoch_clock(emulator: Emulator) -> Callable[[], float]:
    """Epoch seconds on the emulator's clock (advanced by tests), else the wall clock."""

    def now() -> float:
        clock = getattr(emulator.store, "clock", None) or getattr(emulator, "clock", None)
        if clock is not None:
            return float(clock.now().timestamp())
        return time.time()

    return now


def _joi_message(name: str, message: str) -> str:
    # The provider validates with Joi: `"price_amount" is required`, not "Field required".
    text = {"Field required": "is required"}.get(message, message[:1].lower() + message[1:])
    return f'"{name}" {text}'


def create_app(config: EmulatorConfig | None = None) -> FastAPI:
    emulator = Emulator(config or EmulatorConfig.from_env())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await emulator.aclose()

    app = FastAPI(
        title="NOWPayments emulator",
        description="Local stand-in for the NOWPayments API, hosted page and IPNs (BitLoot).",
        lifespan=lifespan,
    )
    app.state.emulator = emulator
    app.state.auth = auth.TokenAuthority(
        lifetime=emulator.config.jwt_lifetime, now=_epoch_clock(emulator)
    )

    @app.exception_handler(ProviderError)
    async def provider_error(_: Request, exc: ProviderError) -> Response:
        return error_response(exc.status_code, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        # Under /v1 a bad request must look like the provider's; the control API keeps 422.
        if request.url.path.startswith("/v1/"):
            first = exc.errors()[0] if exc.errors() else {}
            name = ".".join(str(part) for part in first.get("loc", ())[1:]) or "value"
            message = _joi_message(name, str(first.get("msg", "is invalid")))
            return error_response(400, "INVALID_REQUEST_PARAMS", message)
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Unknown routes and methods answer in the provider's envelope, never {"detail": …}.
        if request.url.path.startswith(_OWN_ERRORS):
            return await http_exception_handler(request, exc)
        code = _HTTP_CODES.get(exc.status_code, "INTERNAL_SERVER_ERROR")
        message = (
            f"Cannot {request.method} {request.url.path}"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        response = error_response(exc.status_code, code, message)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    app.include_router(api.router)
    app.include_router(checkout.router)
    app.include_router(auth.router)
    app.include_router(hosted.router)
    app.include_router(control.router)
    return app
