"""The only way the web app reaches the system: typed HTTP clients for the two gateways.

Every backend failure becomes one of the ``BackendError`` subclasses below, carrying a message
that is safe to show to a user; pages turn them into friendly error pages. Nothing here logs a
token or a password.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from shared.observability import CORRELATION_HEADER, current_correlation_id, get_logger

log = get_logger(__name__)


# -- errors ------------------------------------------------------------------------------------


class BackendError(Exception):
    """A gateway answered with an error (or not at all)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        field: str | None = None,
        service: str = "",
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field
        self.service = service
        self.retry_after = retry_after


class BackendUnavailableError(BackendError):
    """Connection refused, timeout, 5xx: try again later."""


class NotFoundError(BackendError):
    pass


class InvalidInputError(BackendError):
    """400/409/422: the request was refused; ``field`` names the input when the gateway says."""


class UnauthorizedError(BackendError):
    pass


class ForbiddenError(BackendError):
    pass


class RateLimitedError(BackendError):
    pass


# -- models ------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class Product(_Model):
    sku: str
    title: str
    description: str = ""
    price: str
    currency: str


class OrderItem(_Model):
    sku: str
    quantity: int
    title: str | None = None
    unit_price: str | None = None
    line_total: str | None = None


class CreatedOrder(_Model):
    order_id: str
    order_token: str
    status: str
    total: str | None = None
    currency: str | None = None


class Checkout(_Model):
    order_id: str
    payment_url: str
    amount: str | None = None
    currency: str | None = None
    status: str | None = None


class HistoryEntry(_Model):
    status: str
    at: str | None = None
    cause_event_id: str | None = None


class OrderView(_Model):
    order_id: str
    status: str
    message: str | None = None
    payment_status: str | None = None
    items: list[OrderItem] = Field(default_factory=list)
    total: str | None = None
    currency: str | None = None
    payment_url: str | None = None
    email: str | None = None  # masked by orders: p***@example.com
    failure_reason: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list)


class AdminLogin(_Model):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = 3600
    role: str = ""


class Page(_Model):
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int


class ActionResult(_Model):
    ok: bool = True
    message: str | None = None
    event_id: str | None = None
    audit_id: int | None = None


class PaymentActionResult(ActionResult):
    """Answer to a settle / attach: ``replayed`` when it is the stored answer to an earlier
    submit of the same form (same idempotency key)."""

    action_id: str | None = None
    payment_id: str | None = None
    status: str | None = None
    changed: bool = False
    replayed: bool = False
    resolved: int = 0


class AttentionCounts(_Model):
    total: int = 0
    attention: int = 0
    dead_letters: int = 0
    stuck: int = 0
    by_kind: dict[str, int] = Field(default_factory=dict)


class Section(_Model):
    total: int = 0
    items: list[dict[str, Any]] = Field(default_factory=list)
    href: str | None = None


class NeedsAttention(Page):
    counts: AttentionCounts = Field(default_factory=AttentionCounts)
    dead_letters: Section = Field(default_factory=Section)
    stuck: Section = Field(default_factory=Section)


# -- transport ---------------------------------------------------------------------------------

_M = TypeVar("_M", bound=BaseModel)


def _as_str(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _error_details(response: httpx.Response) -> tuple[str | None, str | None]:
    """(message, field) from the error shapes our gateways use, or (None, None)."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    if isinstance(error, dict) and error.get("reason"):
        # orders' shape: {"detail": ..., "error": {"field", "reason", "code"}}
        field = error.get("field")
        return _as_str(error["reason"]), _as_str(field) if field else None
    detail = body.get("detail", body)
    if isinstance(detail, str):
        return detail, body.get("field")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        # FastAPI's validation list: [{"loc": ["body", "email"], "msg": "..."}]
        first = detail[0]
        loc = [part for part in first.get("loc", []) if part not in ("body", "query", "path")]
        field = ".".join(_as_str(p) for p in loc) or None
        return _as_str(first.get("msg", "invalid input")), field
    if isinstance(detail, dict):
        message = detail.get("message") or detail.get("reason") or detail.get("detail")
        reason = detail.get("reason")
        if detail.get("field") and reason and message != reason:
            message = f"{message}: {reason}" if message else reason
        return (_as_str(message) if message else None), detail.get("field")
    return None, None


class _Gateway:
    service = ""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Any:
        sent = dict(headers or {})
        cid = current_correlation_id()
        if cid:
            sent[CORRELATION_HEADER] = cid
        if token:
            sent["Authorization"] = f"Bearer {token}"
        try:
            response = await self._client.request(
                method, path, json=json, params=params, headers=sent
            )
        except httpx.HTTPError as exc:
            log.warning("backend_unreachable", service=self.service, error=type(exc).__name__)
            raise BackendUnavailableError(
                f"The {self.service} service is not reachable right now.", service=self.service
            ) from exc
        if response.is_success:
            if response.status_code == 204 or not response.content:
                return {}
            try:
                return response.json()
            except ValueError as exc:
                raise BackendUnavailableError(
                    f"The {self.service} service sent an unreadable answer.", service=self.service
                ) from exc
        self._raise(response)

    def _raise(self, response: httpx.Response) -> None:
        status = response.status_code
        message, field = _error_details(response)
        kwargs: dict[str, Any] = {"status": status, "field": field, "service": self.service}
        if status == 401:
            raise UnauthorizedError(message or "Please sign in.", **kwargs)
        if status == 403:
            raise ForbiddenError(message or "You are not allowed to do that.", **kwargs)
        if status == 404:
            raise NotFoundError(message or "Not found.", **kwargs)
        if status == 429:
            raise RateLimitedError(
                message or "Too many attempts; please wait a moment and try again.",
                retry_after=response.headers.get("retry-after"),
                **kwargs,
            )
        if status >= 500:
            log.warning("backend_error", service=self.service, status=status)
            raise BackendUnavailableError(
                message or f"The {self.service} service is having trouble; please try again.",
                **kwargs,
            )
        raise InvalidInputError(message or "The request was refused.", **kwargs)

    def _parse(self, model: type[_M], data: Any) -> _M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            log.warning("backend_unexpected_shape", service=self.service, model=model.__name__)
            raise BackendUnavailableError(
                f"The {self.service} service sent an answer we could not read.",
                service=self.service,
            ) from exc


class OrdersClient(_Gateway):
    """The public orders gateway (``ORDERS_URL``)."""

    service = "orders"

    async def list_products(self) -> list[Product]:
        data = await self._call("GET", "/products")
        items = data.get("items", []) if isinstance(data, dict) else []
        return [self._parse(Product, item) for item in items]

    async def create_order(
        self, *, email: str, sku: str, quantity: int, idempotency_key: str
    ) -> CreatedOrder:
        data = await self._call(
            "POST",
            "/orders",
            json={"email": email, "items": [{"sku": sku, "quantity": quantity}]},
            headers={"Idempotency-Key": idempotency_key},
        )
        return self._parse(CreatedOrder, data)

    async def checkout(self, order_id: str, order_token: str) -> Checkout:
        data = await self._call(
            "POST", f"/orders/{order_id}/checkout", headers={"X-Order-Token": order_token}
        )
        return self._parse(Checkout, data)

    async def get_order(self, order_id: str, order_token: str) -> OrderView:
        data = await self._call(
            "GET", f"/orders/{order_id}", headers={"X-Order-Token": order_token}
        )
        return self._parse(OrderView, data)


class AdminClient(_Gateway):
    """The admin gateway (``ADMIN_URL``); every call but login carries the operator's JWT."""

    service = "admin"

    async def login(self, username: str, password: str) -> AdminLogin:
        data = await self._call(
            "POST", "/admin/login", json={"username": username, "password": password}
        )
        return self._parse(AdminLogin, data)

    async def me(self, token: str) -> dict[str, Any]:
        data = await self._call("GET", "/admin/me", token=token)
        return data if isinstance(data, dict) else {}

    async def list(self, resource: str, token: str, params: dict[str, Any]) -> Page:
        data = await self._call("GET", f"/admin/{resource}", params=params, token=token)
        return self._parse(Page, data)

    async def record(self, collection: str, record_id: str, token: str) -> dict[str, Any]:
        """One record: ``payments``/``orders``/``webhook-logs`` + id."""
        data = await self._call("GET", f"/admin/{collection}/{record_id}", token=token)
        if not isinstance(data, dict):
            raise BackendUnavailableError("Unexpected answer from admin.", service=self.service)
        return data

    async def webhook_log(self, log_id: str, token: str) -> dict[str, Any]:
        return await self.record("webhook-logs", log_id, token)

    async def reprocess(self, log_id: str, reason: str, token: str) -> ActionResult:
        data = await self._call(
            "POST", f"/admin/webhook-logs/{log_id}/reprocess", json={"reason": reason}, token=token
        )
        return self._parse(ActionResult, data)

    async def revoke_downloads(self, order_id: str, reason: str, token: str) -> ActionResult:
        data = await self._call(
            "POST",
            f"/admin/orders/{order_id}/revoke-downloads",
            json={"reason": reason},
            token=token,
        )
        return self._parse(ActionResult, data)

    # -- payments that need attention --

    async def needs_attention(self, token: str, params: dict[str, Any]) -> NeedsAttention:
        data = await self._call("GET", "/admin/needs-attention", params=params, token=token)
        return self._parse(NeedsAttention, data)

    async def needs_attention_counts(self, token: str) -> AttentionCounts:
        data = await self._call("GET", "/admin/needs-attention/counts", token=token)
        return self._parse(AttentionCounts, data)

    async def acknowledge_attention(
        self, payment_id: str, key: str, reason: str, token: str
    ) -> ActionResult:
        data = await self._call(
            "POST",
            f"/admin/attention/{payment_id}/acknowledge",
            json={"key": key, "reason": reason},
            token=token,
        )
        return self._parse(ActionResult, data)

    async def settle(
        self, order_id: str, reason: str, idempotency_key: str, token: str
    ) -> PaymentActionResult:
        data = await self._call(
            "POST",
            f"/admin/orders/{order_id}/settle",
            json={"reason": reason},
            headers={"Idempotency-Key": idempotency_key},
            token=token,
        )
        return self._parse(PaymentActionResult, data)

    async def attach_payment(
        self,
        order_id: str,
        provider_payment_id: str,
        reason: str,
        idempotency_key: str,
        token: str,
    ) -> PaymentActionResult:
        data = await self._call(
            "POST",
            f"/admin/orders/{order_id}/attach-payment",
            json={"provider_payment_id": provider_payment_id, "reason": reason},
            headers={"Idempotency-Key": idempotency_key},
            token=token,
        )
        return self._parse(PaymentActionResult, data)


def make_client(
    base_url: str, timeout: float, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
        transport=transport,
        follow_redirects=False,
        headers={"Accept": "application/json", "User-Agent": "bitloot-web"},
    )
