"""Typed async client for the NOWPayments API (and the emulator that stands in for it).

- Every JSON number is parsed as Decimal (``parse_float=Decimal``) and ids are kept as text:
  a float would lose an amount's digits, and ids exceed JavaScript's 2^53.
- Reads (GET) are retried with exponential backoff and jitter on connection errors, timeouts,
  429 and 5xx. ``POST /invoice`` is retried only when the connection was never established (the
  provider cannot have seen the request); after that a retry could create a second invoice,
  since the provider has no idempotency key.
- Provider errors ``{"status":false,"statusCode":…,"code":"…","message":"…"}`` become
  :class:`ProviderError` subclasses carrying ``code``, ``message`` and ``status_code``. Every 4xx
  but 429 is final (never retried): 404 :class:`ProviderNotFoundError`, 401/403
  :class:`ProviderAuthError` (our key, login or token is refused), the rest
  :class:`ProviderRejectedError`. The API key is sent in ``x-api-key``; neither it, the account
  password nor a JWT is ever logged or put into an error.
- Some endpoints also want ``Authorization: Bearer <JWT>``; see :class:`_JwtCache` and
  ``_JWT_ENDPOINTS`` below for which ones and where that is documented.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from shared.money import loads_decimal
from shared.observability import get_logger
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from payments.domain import ProviderReport

log = get_logger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

_MAX_MESSAGE = 500


class ProviderError(Exception):
    """The provider refused or could not answer. ``code`` is the provider's (or ours)."""

    retryable: bool = False

    def __init__(self, code: str, message: str, *, status_code: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message[:_MAX_MESSAGE]
        self.status_code = status_code


class ProviderUnavailableError(ProviderError):
    """Connection failure, timeout, 429 or 5xx: trying again later may work."""

    retryable = True


class ProviderRejectedError(ProviderError):
    """A 4xx answer: the same request will be refused again."""


class ProviderNotFoundError(ProviderRejectedError):
    """404: the provider does not know the payment or invoice."""


class ProviderAuthError(ProviderRejectedError):
    """401/403, or no credentials for an endpoint that needs a JWT: *our* credentials (API key,
    account email/password, token) are wrong or missing, not the payment. An operator has to fix
    the configuration; retrying the same call will not help."""


class ProviderAmbiguousError(ProviderUnavailableError):
    """The request may have reached the provider but no answer came back (POST only)."""


class ProviderProtocolError(ProviderError):
    """A 2xx answer we cannot read; retrying the same call would read the same thing."""


def epoch_ms(value: Any) -> int | None:
    """A provider timestamp as epoch milliseconds, or None when it is absent or unreadable.

    ``GET /payment/{id}`` answers ISO 8601 text (``"2020-12-22T15:05:58.290Z"``, with or without
    milliseconds, ``Z`` or an offset; no zone means UTC), IPNs carry epoch ms as a number, and
    either may come as a numeric string. Numbers below 10^11 are taken as epoch *seconds*
    (10^11 ms is 1973). A timestamp we cannot read is dropped, never a reason to refuse a report.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal | float):
        try:
            number = Decimal(value)
        except InvalidOperation:
            return None
        if not number.is_finite() or number < 0:
            return None
        return int(number * 1000) if number < 10**11 else int(number)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    if text.replace(".", "", 1).isdigit():
        return epoch_ms(Decimal(text))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def provider_flag(value: Any) -> bool | None:
    """``is_fixed_rate``-style flags: a JSON bool, or ``"true"``/``"false"`` (also 1/0) text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
    return None


def _rate_is_fixed(is_fixed_rate: bool | None, is_fee_paid_by_user: bool | None) -> bool | None:
    """Fixed-rate and fee-paid-by-user payments both freeze the rate (20 minutes, then expire):
    True when either says so, False when one says no and none says yes, None when neither came."""
    if is_fixed_rate or is_fee_paid_by_user:
        return True
    if is_fixed_rate is None and is_fee_paid_by_user is None:
        return None
    return False


class _Model(BaseModel):
    # Ids arrive as integers in some answers and strings in others: text either way.
    model_config = ConfigDict(
        extra="ignore", coerce_numbers_to_str=True, frozen=True, populate_by_name=True
    )


class Invoice(_Model):
    id: str
    invoice_url: str
    order_id: str | None = None
    price_amount: Decimal | None = None
    price_currency: str | None = None
    created_at: str | None = None
    is_fixed_rate: bool | None = None
    is_fee_paid_by_user: bool | None = None

    @field_validator("is_fixed_rate", "is_fee_paid_by_user", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> bool | None:
        return provider_flag(value)

    @property
    def fixed_rate(self) -> bool | None:
        return _rate_is_fixed(self.is_fixed_rate, self.is_fee_paid_by_user)


class ProviderPayment(_Model):
    payment_id: str
    payment_status: str
    invoice_id: str | None = None
    order_id: str | None = None
    price_amount: Decimal | None = None
    price_currency: str | None = None
    pay_amount: Decimal | None = None
    actually_paid: Decimal | None = None
    pay_currency: str | None = None
    outcome_amount: Decimal | None = None
    outcome_currency: str | None = None
    parent_payment_id: str | None = None
    purchase_id: str | None = None
    is_fixed_rate: bool | None = None
    is_fee_paid_by_user: bool | None = None
    # Epoch ms whatever form the provider used (ISO text from GET /payment, ms from IPNs).
    updated_at_ms: int | None = Field(default=None, validation_alias="updated_at")
    expiration_estimate_ms: int | None = Field(
        default=None, validation_alias="expiration_estimate_date"
    )
    valid_until_ms: int | None = Field(default=None, validation_alias="valid_until")

    @field_validator("updated_at_ms", "expiration_estimate_ms", "valid_until_ms", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> int | None:
        return epoch_ms(value)

    @field_validator("is_fixed_rate", "is_fee_paid_by_user", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> bool | None:
        return provider_flag(value)

    @property
    def fixed_rate(self) -> bool | None:
        return _rate_is_fixed(self.is_fixed_rate, self.is_fee_paid_by_user)

    @property
    def expires_at_ms(self) -> int | None:
        # valid_until is the payment's own deadline; expiration_estimate_date is when the
        # frozen estimate lapses (the same moment for a fixed-rate payment): either tells.
        return self.valid_until_ms or self.expiration_estimate_ms

    def report(self) -> ProviderReport:
        return ProviderReport(
            status=self.payment_status,
            payment_id=self.payment_id,
            invoice_id=self.invoice_id,
            order_id=self.order_id,
            price_amount=self.price_amount,
            price_currency=self.price_currency,
            pay_amount=self.pay_amount,
            actually_paid=self.actually_paid,
            pay_currency=self.pay_currency,
            outcome_amount=self.outcome_amount,
            outcome_currency=self.outcome_currency,
            updated_at_ms=self.updated_at_ms,
            parent_payment_id=self.parent_payment_id,
            purchase_id=self.purchase_id,
            fixed_rate=self.fixed_rate,
            expires_at_ms=self.expires_at_ms,
        )


class PaymentPage(_Model):
    data: list[ProviderPayment]
    total: int | None = None


def error_from(response: httpx.Response) -> ProviderError:
    code, message = f"HTTP_{response.status_code}", response.reason_phrase or "error"
    try:
        body = loads_decimal(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("code") or code)[:64]
        message = str(body.get("message") or message)
    status = response.status_code
    if status == 429 or status >= 500:
        return ProviderUnavailableError(code, message, status_code=status)
    if status == 404:
        return ProviderNotFoundError(code, message, status_code=status)
    if status in (401, 403):
        return ProviderAuthError(code, message, status_code=status)
    return ProviderRejectedError(code, message, status_code=status)


# --- the JWT --------------------------------------------------------------------------------
#
# ``POST /v1/auth {"email","password"}`` (the merchant's dashboard login, case-sensitive) answers
# ``{"token": "<JWT>"}``; the token lives 5 minutes, bad credentials get 403 ``ACCESS_DENIED``.
# Sources: the Ruby SDK's NOWPayments::API::Authentication ("JWT tokens expire in 5 minutes",
# https://rubydoc.info/gems/nowpayments/NOWPayments/API/Authentication), go-nowpayments
# (matm/go-nowpayments pkg/core/auth.go: ``{"token": …}``; pkg/payments/list.go logs in before
# every ``GET /payment/`` list call), DESIGN.md §5.
# Which endpoints want it: the payment list ``GET /v1/payment/`` answers 401 ``AUTH_REQUIRED``
# ("Bearer JWTtoken is required") without it (DESIGN.md §5, go-nowpayments above); the payouts,
# conversions and custody endpoints do too (Ruby SDK docs/API.md), which we do not call. The
# official JS/PHP SDKs (NowPaymentsIO/nowpayments-api-js src/actions/get-list-payments,
# NowPaymentsIO/nowpayments-api-php) predate this and send only x-api-key for the list: do not
# copy them. ``GET /payment/{id}``, ``POST /invoice`` and ``GET /status`` need only the key.
_JWT_ENDPOINTS = frozenset({"GET /payment/"})


@dataclass(frozen=True, slots=True)
class _Jwt:
    token: str
    refresh_at: float  # clock() value after which we log in again


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (epoch seconds) of a JWT, read without verifying the signature: we only
    need to know when the provider will stop accepting it, the provider checks the rest."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


class NowPaymentsClient:
    """One instance per process (it holds the connection pool and the cached JWT).

    ``email``/``password`` are the provider account's login, needed only for the JWT endpoints
    (``payments_for_invoice``): without them those raise :class:`ProviderAuthError`
    ``AUTH_NOT_CONFIGURED`` without calling the provider. The token is fetched on first use,
    shared by concurrent calls (one login for all of them), refreshed ``jwt_refresh_margin``
    seconds before its ``exp`` (or ``jwt_lifetime`` seconds after the login when the token says
    nothing usable), and fetched again once when the provider answers 401 anyway.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        email: str | None = None,
        password: str | SecretStr | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        read_retries: int = 3,
        backoff: float = 0.2,
        backoff_max: float = 3.0,
        jwt_lifetime: float = 240.0,
        jwt_refresh_margin: float = 30.0,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"x-api-key": api_key.strip(), "accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
        )
        self._read_retries = read_retries
        self._backoff = backoff
        self._backoff_max = backoff_max
        secret = password.get_secret_value() if isinstance(password, SecretStr) else password
        self._email = (email or "").strip() or None
        self._password = SecretStr(secret.strip()) if secret and secret.strip() else None
        self._jwt_lifetime = jwt_lifetime
        self._jwt_margin = jwt_refresh_margin
        self._clock = clock
        self._jwt: _Jwt | None = None
        self._login_lock = asyncio.Lock()
        self.logins = 0  # how many times we asked POST /auth (tests and metrics)

    @property
    def has_credentials(self) -> bool:
        return self._email is not None and self._password is not None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> NowPaymentsClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # --- calls -----------------------------------------------------------------------------

    async def status(self) -> bool:
        body = await self._retrying(lambda: self._call("GET", "/status"))
        return isinstance(body, dict) and body.get("message") == "OK"

    async def create_invoice(
        self,
        *,
        order_id: str,
        price_amount: Decimal,
        price_currency: str,
        ipn_callback_url: str,
        order_description: str | None = None,
        success_url: str | None = None,
        cancel_url: str | None = None,
    ) -> Invoice:
        payload: dict[str, Any] = {
            "price_amount": price_amount,
            "price_currency": price_currency,
            "order_id": order_id,
            "ipn_callback_url": ipn_callback_url,
        }
        if order_description:
            payload["order_description"] = order_description
        if success_url:
            payload["success_url"] = success_url
        if cancel_url:
            payload["cancel_url"] = cancel_url
        body = await self._retrying(
            lambda: self._call("POST", "/invoice", json_body=payload),
            only=(_NotSent,),
        )
        return _parse(Invoice, body, "POST /invoice")

    async def get_payment(self, payment_id: str) -> ProviderPayment:
        if not payment_id.isdigit():
            raise ProviderRejectedError("INVALID_PAYMENT_ID", "payment id must be digits")
        body = await self._retrying(lambda: self._call("GET", f"/payment/{payment_id}"))
        return _parse(ProviderPayment, body, "GET /payment/{id}")

    async def payments_for_invoice(
        self, invoice_id: str, *, limit: int = 50
    ) -> list[ProviderPayment]:
        """Every payment the provider made from one invoice (needs the JWT)."""
        if not invoice_id.isdigit():
            raise ProviderRejectedError("INVALID_INVOICE_ID", "invoice id must be digits")
        params = {"invoiceId": invoice_id, "limit": str(limit), "page": "0", "orderBy": "asc"}
        body = await self._with_jwt("GET", "/payment/", params=params)
        return list(_parse(PaymentPage, body, "GET /payment/").data)

    async def login(self) -> str:
        """A valid JWT: the cached one, or a fresh ``POST /auth`` (one at a time)."""
        return await self._token(stale=None)

    # --- plumbing --------------------------------------------------------------------------

    async def _with_jwt(self, method: str, path: str, *, params: dict[str, str]) -> Any:
        assert f"{method} {path}" in _JWT_ENDPOINTS, f"{method} {path} is not a JWT endpoint"
        token = await self._token(stale=None)
        try:
            return await self._retrying(
                lambda: self._call(method, path, params=params, bearer=token)
            )
        except ProviderAuthError as exc:
            if exc.status_code != 401:
                raise
            # Expired early, revoked, or the provider's clock disagrees with ours: log in again
            # once (other callers waiting on the lock reuse that new token) and retry once.
            log.info("provider_jwt_refused", method=method, path=path, code=exc.code)
            fresh = await self._token(stale=token)
            return await self._retrying(
                lambda: self._call(method, path, params=params, bearer=fresh)
            )

    def _cached(self, stale: str | None) -> str | None:
        jwt = self._jwt
        if jwt is None or jwt.token == stale or self._clock() >= jwt.refresh_at:
            return None
        return jwt.token

    async def _token(self, *, stale: str | None) -> str:
        cached = self._cached(stale)
        if cached is not None:
            return cached
        if self._email is None or self._password is None:
            raise ProviderAuthError(
                "AUTH_NOT_CONFIGURED",
                "this provider endpoint needs a JWT: set NOWPAYMENTS_EMAIL and "
                "NOWPAYMENTS_PASSWORD (the provider account's login)",
            )
        async with self._login_lock:
            # Whoever held the lock before us may have logged in already.
            cached = self._cached(stale)
            if cached is not None:
                return cached
            credentials = {"email": self._email, "password": self._password.get_secret_value()}
            body = await self._retrying(lambda: self._call("POST", "/auth", json_body=credentials))
            self.logins += 1
            token = body.get("token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise ProviderProtocolError("INVALID_PROVIDER_RESPONSE", "POST /auth: no token")
            self._jwt = _Jwt(token, self._refresh_at(token))
            log.info("provider_login", lifetime=round(self._jwt.refresh_at - self._clock()))
            return token

    def _refresh_at(self, token: str) -> float:
        now = self._clock()
        exp = jwt_expiry(token)
        if exp is not None:
            at = exp - self._jwt_margin
            # An exp already past or absurdly far (clock skew, a token that says nothing
            # sensible) falls back to the configured lifetime rather than a login per call.
            if now < at <= now + 24 * 3600:
                return at
        return now + self._jwt_lifetime

    async def _retrying(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        only: tuple[type[BaseException], ...] = (ProviderUnavailableError,),
    ) -> T:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._read_retries + 1),
            wait=wait_exponential_jitter(
                multiplier=self._backoff, max=self._backoff_max, jitter=self._backoff
            ),
            retry=retry_if_exception_type(only),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    result = await call()
                    return result
        except _NotSent as exc:
            raise ProviderUnavailableError(exc.code, exc.message) from exc
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        bearer: str | None = None,
    ) -> Any:
        content = _dumps(json_body) if json_body is not None else None
        headers: dict[str, str] = {}
        if content is not None:
            headers["content-type"] = "application/json"
        if bearer is not None:
            headers["authorization"] = f"Bearer {bearer}"
        try:
            response = await self._http.request(
                method, path, content=content, headers=headers, params=params
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            log.warning("provider_unreachable", method=method, path=path, error=type(exc).__name__)
            raise _NotSent("PROVIDER_UNREACHABLE", f"{type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            log.warning(
                "provider_transport_error", method=method, path=path, error=type(exc).__name__
            )
            if method == "GET":
                raise ProviderUnavailableError("PROVIDER_UNAVAILABLE", type(exc).__name__) from exc
            # The request may have been processed: the caller must not assume either way.
            raise ProviderAmbiguousError("PROVIDER_NO_ANSWER", type(exc).__name__) from exc
        if response.status_code >= 400:
            error = error_from(response)
            log.warning(
                "provider_error",
                method=method,
                path=path,
                status_code=response.status_code,
                code=error.code,
            )
            raise error
        try:
            return loads_decimal(response.content)
        except ValueError as exc:
            raise ProviderProtocolError(
                "INVALID_PROVIDER_RESPONSE", f"{method} {path} did not answer JSON"
            ) from exc


class _NotSent(ProviderUnavailableError):
    """The connection was never established: safe to retry even a POST."""


def _dumps(body: dict[str, Any]) -> bytes:
    """A flat JSON object with Decimals as JSON numbers in plain notation (``0.00000001``, never
    ``1E-8``): the stdlib encoder cannot write a Decimal as a number without going through float."""
    parts: list[str] = []
    for key, value in body.items():
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError(f"{key} is not a finite amount")
            encoded = format(value, "f")
        elif value is None or isinstance(value, str | bool | int):
            encoded = json.dumps(value, ensure_ascii=False)
        else:
            raise TypeError(f"cannot encode {key} of type {type(value).__name__}")
        parts.append(f"{json.dumps(key)}:{encoded}")
    return ("{" + ",".join(parts) + "}").encode()


def _parse(model: type[M], body: Any, what: str) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ProviderProtocolError(
            "INVALID_PROVIDER_RESPONSE", f"{what}: {where or 'body'} {first.get('msg', '')}"
        ) from exc
