"""Password hashing (argon2id) and session tokens (JWT, HS256). No I/O.

Tokens are pinned to HS256 on decode, so a token that names another algorithm (``none``, or
RS256 with our secret as a "public key") is refused before its signature is considered.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from admin.errors import NotAuthenticatedError

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "role", "exp", "iat", "jti")


class Passwords:
    def __init__(self, *, time_cost: int = 3, memory_kib: int = 65536) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
        # Verified against when the username is unknown, so both failures cost the same time.
        self._dummy = self._hasher.hash(uuid.uuid4().hex)

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash or self._dummy, password) and bool(stored_hash)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)


@dataclass(frozen=True)
class TokenClaims:
    sub: str
    role: str
    jti: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class IssuedToken:
    token: str
    claims: TokenClaims


class Tokens:
    def __init__(self, key: str, ttl_seconds: int) -> None:
        self._key = key
        self.ttl_seconds = ttl_seconds

    def issue(self, user_id: str, role: str, now: datetime | None = None) -> IssuedToken:
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        expires = issued + timedelta(seconds=self.ttl_seconds)
        jti = uuid.uuid4().hex
        token = jwt.encode(
            {"sub": user_id, "role": role, "iat": issued, "exp": expires, "jti": jti},
            self._key,
            algorithm=ALGORITHM,
        )
        return IssuedToken(token, TokenClaims(user_id, role, jti, issued, expires))

    def decode(self, token: str) -> TokenClaims:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise NotAuthenticatedError("session expired; log in again") from None
        except jwt.InvalidTokenError:
            raise NotAuthenticatedError("invalid token") from None
        if not all(isinstance(claims.get(k), str) for k in ("sub", "role", "jti")):
            raise NotAuthenticatedError("invalid token")
        return TokenClaims(
            sub=claims["sub"],
            role=claims["role"],
            jti=claims["jti"],
            issued_at=datetime.fromtimestamp(int(claims["iat"]), UTC),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
