"""Signed cookies, CSRF tokens and the security headers every response carries.

CSRF: a random per-browser value lives in an HttpOnly cookie; forms carry the same value signed
with ``WEB_SESSION_SECRET`` (and timestamped). A POST is accepted only when the signature holds,
the token is not too old and it signs the value of the cookie the browser sent — a cross-site
page can neither read the cookie nor forge the signature.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_COOKIE = "bl_csrf"
CSRF_FIELD = "csrf_token"
CSRF_MAX_AGE = 12 * 3600
ADMIN_COOKIE = "bl_admin"
FLASH_COOKIE = "bl_flash"
ORDER_COOKIE_PREFIX = "bl_order_"
ORDER_COOKIE_MAX_AGE = 30 * 24 * 3600


class CsrfError(Exception):
    """The form's CSRF token is missing, forged, stale or for another browser."""


@dataclass(frozen=True)
class Signer:
    """One secret, one salt per purpose: a token signed for one use is useless for another."""

    secret: str

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.secret, salt=f"bitloot-web:{purpose}")

    def sign(self, purpose: str, value: Any) -> str:
        return str(self._serializer(purpose).dumps(value))

    def unsign(self, purpose: str, token: str | None, max_age: int) -> Any | None:
        if not token or len(token) > 8192:
            return None
        try:
            return self._serializer(purpose).loads(token, max_age=max_age)
        except BadSignature:
            return None


def _signer(request: Request) -> Signer:
    signer: Signer = request.app.state.signer
    return signer


def cookie_secure(request: Request) -> bool:
    return bool(request.app.state.settings.cookie_secure)


# -- CSRF --------------------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    """The token for a form on this page; remembers to set the cookie if the browser has none."""
    seed = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf_seed", None)
    if not seed or len(seed) > 100:
        seed = secrets.token_urlsafe(32)
        request.state.new_csrf_seed = seed
    return _signer(request).sign("csrf", seed)


def attach_csrf_cookie(request: Request, response: Response) -> None:
    seed = getattr(request.state, "new_csrf_seed", None)
    if seed:
        response.set_cookie(
            CSRF_COOKIE,
            seed,
            max_age=CSRF_MAX_AGE * 2,
            httponly=True,
            samesite="lax",
            secure=cookie_secure(request),
            path="/",
        )


def check_csrf(request: Request, form: FormData) -> None:
    seed = request.cookies.get(CSRF_COOKIE)
    token = form.get(CSRF_FIELD)
    if not seed or not isinstance(token, str):
        raise CsrfError("missing")
    signed_seed = _signer(request).unsign("csrf", token, CSRF_MAX_AGE)
    if not isinstance(signed_seed, str) or not hmac.compare_digest(signed_seed, seed):
        raise CsrfError("mismatch")


# -- flash messages (one-shot, after a POST/redirect/GET) ---------------------------------------


def set_flash(request: Request, response: Response, kind: str, message: str, path: str) -> None:
    response.set_cookie(
        FLASH_COOKIE,
        _signer(request).sign("flash", {"kind": kind, "message": message[:500]}),
        max_age=120,
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request),
        path=path,
    )


def pop_flash(request: Request) -> dict[str, str] | None:
    data = _signer(request).unsign("flash", request.cookies.get(FLASH_COOKIE), 120)
    if isinstance(data, dict) and {"kind", "message"} <= data.keys():
        request.state.clear_flash = True
        return {"kind": str(data["kind"]), "message": str(data["message"])}
    return None


# -- headers -----------------------------------------------------------------------------------


def content_security_policy(form_action: str) -> str:
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"font-src 'self'; connect-src 'self'; form-action {form_action}; "
        "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    )


class SecurityHeadersMiddleware:
    """Adds CSP and friends to every response (pure ASGI: also covers errors and static files).

    Only storefront pages may send a form on to the payment provider (the checkout POST is
    answered with a redirect there); admin and dev pages keep ``form-action 'self'``.
    """

    def __init__(self, app: ASGIApp, payment_origins: tuple[str, ...]) -> None:
        self.app = app
        storefront_actions = " ".join(("'self'", *payment_origins))
        self._storefront = content_security_policy(storefront_actions).encode()
        self._strict = content_security_policy("'self'").encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        strict = path.startswith(("/admin", "/dev"))
        csp = self._strict if strict else self._storefront
        static = path.startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in {b"content-security-policy", b"x-frame-options"}
                ]
                headers += [
                    (b"content-security-policy", csp),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
                ]
                if not static and not any(k.lower() == b"cache-control" for k, _ in headers):
                    # Order pages and the console show personal data: keep them out of caches.
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
