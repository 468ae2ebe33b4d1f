"""POST /v1/auth and the JWT some provider endpoints want besides the api key.

The provider answers `{"token": "<HS256 JWT>"}` whose payload is `{"id", "iat", "exp"}`, five
minutes apart (Postman "NOWPayments API", Authentication). Tokens here are real HS256 JWTs signed
with a key that lives only in this process, so a merchant cannot forge one and one from another
emulator run is refused, as the provider refuses a foreign or stale token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from .responses import ProviderError, js_response
from .service import Emulator

router = APIRouter()

# The account id the provider puts in the token ("id" in the payload); one account here.
ACCOUNT_ID = "5826259115"

# Error shapes. AUTH_REQUIRED with this text is what the real list answers without a header.
AUTH_REQUIRED = "AUTH_REQUIRED"
MISSING_MESSAGE = "Authorization header is empty (Bearer JWTtoken is required)"
# Not found in public sources for an expired or forged token: only the 401 is certain. The texts
# are those of Node's jsonwebtoken, which the provider (a Node service) most likely uses.
EXPIRED_MESSAGE = "jwt expired"
INVALID_MESSAGE = "invalid token"
# Wrong login: a third-party client (rubygems "nowpayments", Authentication) handles 403
# ACCESS_DENIED; the real message text is not published.
ACCESS_DENIED = "ACCESS_DENIED"
ACCESS_DENIED_MESSAGE = "Access denied"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_HEADER = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())


@dataclass
class TokenAuthority:
    """Issues and checks the JWTs; `now` is the emulator's clock (epoch seconds)."""

    lifetime: float
    now: Callable[[], float]
    key: bytes = b""

    def __post_init__(self) -> None:
        if not self.key:
            self.key = secrets.token_bytes(32)
        # jti → exp of every token still honoured; POST /_emulator/auth/expire empties it.
        self._live: dict[str, float] = {}

    def issue(self) -> str:
        # Whole seconds as the provider's tokens carry (exp − iat = 300); a token may so end up
        # to a second early, never late.
        issued = math.floor(self.now())
        expires = issued + self.lifetime
        jti = secrets.token_hex(8)
        self._live = {k: v for k, v in self._live.items() if v > issued} | {jti: expires}
        payload = {
            "id": ACCOUNT_ID,
            "iat": issued,
            # A NumericDate may be fractional: a sub-second lifetime (tests) still works.
            "exp": _numeric(expires),
            # Unique per token, so two logins in the same second still differ.
            "jti": jti,
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{_HEADER}.{body}.{self._sign(f'{_HEADER}.{body}')}"

    def check(self, token: str) -> str | None:
        """None when the token is good, else why it is refused (the 401 message)."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _HEADER:
            return INVALID_MESSAGE
        if not hmac.compare_digest(self._sign(f"{parts[0]}.{parts[1]}"), parts[2]):
            return INVALID_MESSAGE
        try:
            payload: dict[str, Any] = json.loads(_unb64(parts[1]))
        except ValueError:
            return INVALID_MESSAGE
        expires = payload.get("exp")
        if not isinstance(expires, int | float) or isinstance(expires, bool):
            return INVALID_MESSAGE
        if self.now() >= expires or payload.get("jti") not in self._live:
            return EXPIRED_MESSAGE
        return None

    def expire_all(self) -> None:
        self._live.clear()

    def _sign(self, signing_input: str) -> str:
        return _b64(hmac.new(self.key, signing_input.encode(), hashlib.sha256).digest())


def _numeric(value: float) -> int | float:
    return int(value) if value == int(value) else round(value, 3)


def authority_of(request: Request) -> TokenAuthority:
    authority: TokenAuthority = request.app.state.auth
    return authority


def require_jwt(request: Request) -> None:
    """The provider's check for endpoints that want `Authorization: Bearer <JWT>`."""
    emulator: Emulator = request.app.state.emulator
    if not emulator.config.require_jwt:
        return
    header = request.headers.get("authorization", "").strip()
    if not header:
        raise ProviderError(401, AUTH_REQUIRED, MISSING_MESSAGE)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ProviderError(401, AUTH_REQUIRED, MISSING_MESSAGE)
    problem = authority_of(request).check(token.strip())
    if problem is not None:
        raise ProviderError(401, AUTH_REQUIRED, problem)


def login(emulator: Emulator, authority: TokenAuthority, data: dict[str, Any]) -> Response:
    for name in ("email", "password"):
        if data.get(name) is None or data.get(name) == "":
            raise ProviderError(400, "INVALID_REQUEST_PARAMS", f'"{name}" is required')
        if not isinstance(data[name], str):
            raise ProviderError(400, "INVALID_REQUEST_PARAMS", f'"{name}" must be a string')
    # Case-sensitive, as the provider's doc insists (test@gmail.com != Test@gmail.com).
    email_ok = hmac.compare_digest(data["email"].encode(), emulator.config.email.encode())
    password_ok = hmac.compare_digest(data["password"].encode(), emulator.config.password.encode())
    if not (email_ok and password_ok):
        raise ProviderError(403, ACCESS_DENIED, ACCESS_DENIED_MESSAGE)
    return js_response({"token": authority.issue()})


@router.post("/_emulator/auth/expire")
async def expire_tokens(
    authority: Annotated[TokenAuthority, Depends(authority_of)],
) -> dict[str, bool]:
    """Every token issued so far is now expired (as after 5 minutes): tests of re-login."""
    authority.expire_all()
    return {"ok": True}
