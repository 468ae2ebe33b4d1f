"""App-signed download tokens: they name a grant and prove we minted them, nothing more.

Expiry, revocation and the download cap live on the grant row, so an operator can end a link
at once; the token's own timestamp is only a ceiling that also holds if a row were tampered with.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

TOKEN_SALT = "bitloot.download.v1"
MAX_TOKEN_LENGTH = 512


class TokenProblem(StrEnum):
    INVALID = "invalid"  # tampered, truncated, or not ours
    EXPIRED = "expired"  # ours, but older than the ceiling


@dataclass(frozen=True)
class TokenCheck:
    grant_id: uuid.UUID | None
    problem: TokenProblem | None = None


class _IssuedAtSigner(TimestampSigner):
    """Signs with a given time instead of "now": one grant always yields the same token, so a
    retried email carries byte-identical content."""

    def __init__(self, *args: Any, issued_at: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._issued_at = issued_at

    def get_timestamp(self) -> int:
        return self._issued_at


class LinkSigner:
    def __init__(self, secret: str, *, max_age_seconds: int) -> None:
        self._secret = secret
        # The salt keeps these signatures useless anywhere else the secret is used.
        self._serializer = URLSafeTimedSerializer(secret, salt=TOKEN_SALT)
        self._max_age = max_age_seconds

    def token_for(self, grant_id: uuid.UUID, *, issued_at: datetime) -> str:
        serializer = URLSafeTimedSerializer(
            self._secret,
            salt=TOKEN_SALT,
            signer=_IssuedAtSigner,
            signer_kwargs={"issued_at": int(issued_at.timestamp())},
        )
        token: str = serializer.dumps({"g": str(grant_id)})
        return token

    def check(self, token: str) -> TokenCheck:
        if len(token) > MAX_TOKEN_LENGTH:
            return TokenCheck(None, TokenProblem.INVALID)
        try:
            data = self._serializer.loads(token, max_age=self._max_age)
        except SignatureExpired as exc:
            # The signature was valid, so the payload is ours: say which grant it was.
            grant = _grant_id(self._payload(exc.payload))
            return TokenCheck(grant, TokenProblem.EXPIRED)
        except BadSignature:
            return TokenCheck(None, TokenProblem.INVALID)
        grant = _grant_id(data)
        if grant is None:
            return TokenCheck(None, TokenProblem.INVALID)
        return TokenCheck(grant)

    def _payload(self, raw: object) -> object:
        if not isinstance(raw, bytes | str):
            return None
        try:
            return self._serializer.load_payload(raw.encode() if isinstance(raw, str) else raw)
        except BadSignature:
            return None


def _grant_id(data: object) -> uuid.UUID | None:
    if not isinstance(data, dict):
        return None
    try:
        return uuid.UUID(str(data.get("g")))
    except ValueError:
        return None
