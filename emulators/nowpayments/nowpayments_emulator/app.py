"""App factory: `uvicorn --factory nowpayments_emulator.app:create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError

from . import api, control, hosted
from .config import EmulatorConfig
from .responses import ProviderError, error_response
from .service import Emulator


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

    @app.exception_handler(ProviderError)
    async def provider_error(_: Request, exc: ProviderError) -> Response:
        return error_response(exc.status_code, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        # Under /v1 a bad request must look like the provider's; the control API keeps 422.
        if request.url.path.startswith("/v1/"):
            first = exc.errors()[0] if exc.errors() else {}
            name = ".".join(str(part) for part in first.get("loc", ())[1:]) or "value"
            return error_response(
                400, "INVALID_REQUEST_PARAMS", f'"{name}" {first.get("msg", "is invalid")}'
            )
        return await request_validation_exception_handler(request, exc)

    app.include_router(api.router)
    app.include_router(hosted.router)
    app.include_router(control.router)
    return app
