"""Provider-shaped responses: JavaScript JSON text and the provider's error envelope."""

from __future__ import annotations

from typing import cast

from fastapi import Request, Response

from .service import Emulator
from .signing import dumps_js


class ProviderError(Exception):
    """Rendered as {"status":false,"statusCode":…,"code":…,"message":…}, as NOWPayments does."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message


def js_response(payload: object, status_code: int = 200) -> Response:
    # The provider is a Node service: numbers come out in JS form, key order as built.
    return Response(
        content=dumps_js(payload, sort_keys=False).encode("utf-8"),
        status_code=status_code,
        media_type="application/json",
    )


def error_response(status_code: int, code: str, message: str) -> Response:
    return js_response(
        {"status": False, "statusCode": status_code, "code": code, "message": message},
        status_code,
    )


def emulator_of(request: Request) -> Emulator:
    return cast(Emulator, request.app.state.emulator)
