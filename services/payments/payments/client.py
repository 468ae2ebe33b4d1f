"""Typed async client for the NOWPayments API (and the emulator that stands in for it).

- Every JSON number is parsed as Decimal (``parse_float=Decimal``) and ids are kept as text:
  a float would lose an amount's digits, and ids exceed JavaScript's 2^53.
- Reads (GET) are retried with exponential backoff and jitter on connection errors, timeouts,
  429 and 5xx. ``POST /invoice`` is retried only when the connection was never established (the
  provider cannot have seen the request); after that a retry could create a second invoice,
  since the provider has no idempotency key.
- Provider errors ``{"status":false,"statusCode":…,"code":"…","message":"…"}`` become
  :class:`ProviderError` subclasses carrying ``code`` and ``message``. The API key is sent in
  ``x-api-key`` and never logged or put into an error.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError
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


class ProviderAmbiguousError(ProviderUnavailableError):
    """The request may have reached the provider but no answer came back (POST only)."""


class ProviderProtocolError(ProviderError):
    """A 2xx answer we cannot read; retrying the same call would read the same thing."""


class _Model(BaseModel):
    # Ids arrive as integers in some answers and strings in others: text either way.
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)


class Invoice(_Model):
    id: str
    invoice_url: str
    order_id: str | None = None
    price_amount: Decimal | None = None
    price_currency: str | None = None
    created_at: str | None = None


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
    updated_at: str | int | None = None

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
            updated_at_ms=self.updated_at if isinstance(self.updated_at, int) else None,
        )


class PaymentPage(_Model):
    data: list[ProviderPayment]
    total: int | None = None


def _error_from(response: httpx.Response) -> ProviderError:
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
    return ProviderRejectedError(code, message, status_code=status)


class NowPaymentsClient:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        read_retries: int = 3,
        backoff: float = 0.2,
        backoff_max: float = 3.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"x-api-key": api_key, "accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
        )
        self._read_retries = read_retries
        self._backoff = backoff
        self._backoff_max = backoff_max

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
        params = {"invoiceId": invoice_id, "limit": str(limit), "page": "0", "orderBy": "asc"}
        body = await self._retrying(lambda: self._call("GET", "/payment/", params=params))
        return list(_parse(PaymentPage, body, "GET /payment/").data)

    # --- plumbing --------------------------------------------------------------------------

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
    ) -> Any:
        content = _dumps(json_body) if json_body is not None else None
        headers = {"content-type": "application/json"} if content is not None else None
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
            error = _error_from(response)
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
