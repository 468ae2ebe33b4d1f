"""The provider's REST API under /v1, with the request and error shapes NOWPayments uses."""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import ROUND_UP, Decimal, InvalidOperation
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request, Response

from . import auth
from .coins import COINS, Coin, usd_rate
from .responses import ProviderError, emulator_of, js_response
from .scenarios import Scenario
from .service import Emulator
from .signing import js_number
from .state import Invoice, Payment, iso

router = APIRouter(prefix="/v1")

_MAX_BODY = 64 * 1024
_MAX_TEXT = 2048


def guard(
    operation: str, *, needs_key: bool = True, needs_jwt: bool = False
) -> Callable[[Request], Awaitable[Emulator]]:
    """Injected faults first (the provider is down for everyone), then the api key, then the JWT
    where the provider wants one (Postman "NOWPayments API": the list of payments, payouts)."""

    async def dependency(request: Request) -> Emulator:
        emulator = emulator_of(request)
        fault = emulator.store.take_fault(operation)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status_code is not None:
                raise ProviderError(fault.status_code, fault.code, fault.message)
        if needs_key:
            sent = request.headers.get("x-api-key", "")
            if not hmac.compare_digest(sent.encode(), emulator.config.api_key.encode()):
                raise ProviderError(403, "INVALID_API_KEY", "Invalid api key")
        if needs_jwt:
            auth.require_jwt(request)
        return emulator

    return dependency


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise ProviderError(413, "INVALID_REQUEST_PARAMS", "Request body is too large")
    try:
        # parse_float keeps every amount exact; no float touches money.
        data = json.loads(raw or b"{}", parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProviderError(400, "INVALID_REQUEST_PARAMS", "Body must be valid JSON") from exc
    if not isinstance(data, dict):
        raise ProviderError(400, "INVALID_REQUEST_PARAMS", '"value" must be of type object')
    return data


def _invalid(message: str) -> ProviderError:
    return ProviderError(400, "INVALID_REQUEST_PARAMS", message)


def _amount(data: dict[str, Any], name: str, *, required: bool) -> Decimal | None:
    value = data.get(name)
    if value is None:
        if required:
            raise _invalid(f'"{name}" is required')
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise _invalid(f'"{name}" must be a number')
    try:
        amount = Decimal(value) if not isinstance(value, Decimal) else value
    except InvalidOperation as exc:
        raise _invalid(f'"{name}" must be a number') from exc
    if not amount.is_finite() or amount <= 0:
        raise _invalid(f'"{name}" must be a positive number')
    return amount


def _text(data: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise _invalid(f'"{name}" is required')
        return None
    if not isinstance(value, str):
        raise _invalid(f'"{name}" must be a string')
    if len(value) > _MAX_TEXT:
        raise _invalid(f'"{name}" length must be less than or equal to {_MAX_TEXT} characters long')
    return value


# RFC 3986 characters; Joi's uri() (the provider validates with Joi) refuses anything else.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")


def _uri(data: dict[str, Any], name: str) -> str | None:
    """A callback or redirect url, else `"<name>" must be a valid uri` as the provider says."""
    value = _text(data, name)
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        parts = None
    hierarchical = parts is not None and parts.scheme.lower() in ("http", "https")
    if parts is None or not _URI.match(value) or (hierarchical and not parts.hostname):
        raise _invalid(f'"{name}" must be a valid uri')
    return value


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise _invalid(f'"{name}" must be a boolean')
    return value


def _price_currency(data: dict[str, Any]) -> str:
    currency = _text(data, "price_currency", required=True)
    assert currency is not None
    if usd_rate(currency) is None:
        raise ProviderError(400, "CURRENCY_UNAVAILABLE", f"Currency {currency} is not available")
    return currency.lower()


def _coin(data: dict[str, Any], *, required: bool) -> Coin | None:
    code = _text(data, "pay_currency", required=required)
    if code is None:
        return None
    coin = COINS.get(code.lower())
    if coin is None:
        raise ProviderError(400, "CURRENCY_UNAVAILABLE", f"Currency {code} is not available")
    return coin


def _check_minimum(emulator: Emulator, price_amount: Decimal, price_currency: str) -> None:
    rate = usd_rate(price_currency)
    assert rate is not None
    if price_amount * rate < emulator.config.min_price_usd:
        minimum = (emulator.config.min_price_usd / rate).quantize(Decimal("0.01"), ROUND_UP)
        raise ProviderError(
            400,
            "AMOUNT_MINIMAL_ERROR",
            f"amountTo is too small: {js_number(price_amount)} {price_currency} is less than "
            f"the minimal {js_number(minimum)} {price_currency}",
        )


def invoice_view(emulator: Emulator, invoice: Invoice) -> dict[str, object]:
    return {
        "id": str(invoice.id),  # a string here, an integer in IPNs: the provider is not consistent
        "token_id": invoice.token_id,
        "order_id": invoice.order_id,
        "order_description": invoice.order_description,
        "price_amount": js_number(invoice.price_amount),
        "price_currency": invoice.price_currency,
        "pay_currency": invoice.pay_currency,
        "ipn_callback_url": invoice.ipn_callback_url,
        "invoice_url": emulator.invoice_url(invoice),
        "success_url": invoice.success_url,
        "cancel_url": invoice.cancel_url,
        "partially_paid_url": invoice.partially_paid_url,
        "customer_email": invoice.customer_email,
        "payout_currency": None,
        "created_at": iso(invoice.created_at),
        "updated_at": iso(invoice.updated_at),
        "is_fixed_rate": invoice.is_fixed_rate,
        "is_fee_paid_by_user": invoice.is_fee_paid_by_user,
    }


def created_payment_view(payment: Payment) -> dict[str, object]:
    return {
        "payment_id": str(payment.payment_id),  # a string on creation, as the provider returns it
        "payment_status": payment.payment_status,
        "pay_address": payment.pay_address,
        "price_amount": payment.price_amount,
        "price_currency": payment.price_currency,
        "pay_amount": payment.pay_amount,
        "amount_received": payment.outcome_amount,
        "pay_currency": payment.pay_currency,
        "order_id": payment.order_id,
        "order_description": payment.order_description,
        "ipn_callback_url": payment.ipn_callback_url,
        "invoice_id": payment.invoice_id,
        "created_at": iso(payment.created_at),
        "updated_at": iso(payment.updated_at),
        "purchase_id": payment.purchase_id,
        "payin_extra_id": None,
        "network": payment.coin.network,
        "network_precision": payment.coin.decimals,
        # is_fixed_rate, is_fee_paid_by_user, expiration_estimate_date, valid_until
        **payment.lifetime_view(),
        "type": "crypto2crypto",
    }


@router.get("/status")
async def api_status(
    _: Annotated[Emulator, Depends(guard("status", needs_key=False))],
) -> Response:
    return js_response({"message": "OK"})


@router.post("/auth")
async def authenticate(
    request: Request, emulator: Annotated[Emulator, Depends(guard("auth", needs_key=False))]
) -> Response:
    # No api key: the provider's Authentication request carries only the dashboard login.
    return auth.login(emulator, auth.authority_of(request), await _json_object(request))


@router.get("/currencies")
async def currencies(_: Annotated[Emulator, Depends(guard("currencies"))]) -> Response:
    return js_response({"currencies": list(COINS)})


@router.post("/invoice")
async def create_invoice(
    request: Request, emulator: Annotated[Emulator, Depends(guard("create_invoice"))]
) -> Response:
    data = await _json_object(request)
    price_amount = _amount(data, "price_amount", required=True)
    assert price_amount is not None
    price_currency = _price_currency(data)
    coin = _coin(data, required=False)
    _check_minimum(emulator, price_amount, price_currency)
    invoice = emulator.store.create_invoice(
        price_amount=price_amount,
        price_currency=price_currency,
        pay_currency=coin.code if coin else None,
        order_id=_text(data, "order_id"),
        order_description=_text(data, "order_description"),
        ipn_callback_url=_uri(data, "ipn_callback_url"),
        success_url=_uri(data, "success_url"),
        cancel_url=_uri(data, "cancel_url"),
        partially_paid_url=_uri(data, "partially_paid_url"),
        customer_email=_text(data, "customer_email"),
        is_fixed_rate=_flag(data, "is_fixed_rate"),
        is_fee_paid_by_user=_flag(data, "is_fee_paid_by_user"),
    )
    # 201 Created, as the provider answers (Postman "NOWPayments API", Create invoice).
    return js_response(invoice_view(emulator, invoice), 201)


@router.post("/payment")
async def create_payment(
    request: Request, emulator: Annotated[Emulator, Depends(guard("create_payment"))]
) -> Response:
    data = await _json_object(request)
    price_amount = _amount(data, "price_amount", required=True)
    assert price_amount is not None
    price_currency = _price_currency(data)
    coin = _coin(data, required=True)
    assert coin is not None
    pay_amount = _amount(data, "pay_amount", required=False)
    case = _case(data)
    _check_minimum(emulator, price_amount, price_currency)
    payment = emulator.store.create_payment(
        coin=coin,
        price_amount=price_amount,
        price_currency=price_currency,
        invoice=None,
        order_id=_text(data, "order_id"),
        order_description=_text(data, "order_description"),
        ipn_callback_url=_uri(data, "ipn_callback_url"),
        pay_amount=pay_amount,
        is_fixed_rate=_flag(data, "is_fixed_rate"),
        is_fee_paid_by_user=_flag(data, "is_fee_paid_by_user"),
    )
    if case is not None:
        # The sandbox plays the chosen flow by itself and sends an IPN per status.
        emulator.play(payment, SANDBOX_CASES[case])
    return js_response(created_payment_view(payment), 201)


# The sandbox's `case` on Create payment ("simply specify the case which you want to test"):
# the values seen in merchants' sandbox code, mapped to this emulator's scenarios.
SANDBOX_CASES: dict[str, Scenario] = {
    "success": "full",
    "partially_paid": "underpay",
    "failed": "fail",
}


def _case(data: dict[str, Any]) -> str | None:
    case = _text(data, "case")
    if case is None:
        return None
    if case not in SANDBOX_CASES:
        raise _invalid(f'"case" must be one of [{", ".join(SANDBOX_CASES)}]')
    return case


@router.post("/invoice-payment")
async def create_invoice_payment(
    request: Request, emulator: Annotated[Emulator, Depends(guard("invoice_payment"))]
) -> Response:
    data = await _json_object(request)
    iid = data.get("iid")
    if iid is None:
        raise _invalid('"iid" is required')
    invoice = emulator.store.invoices.get(_int_id(iid, "iid"))
    if invoice is None:
        raise ProviderError(404, "INVOICE_NOT_FOUND", "Invoice not found")
    if invoice.is_expired():
        raise ProviderError(400, "INVOICE_EXPIRED", "Invoice is expired")
    coin = _coin(data, required=True)
    assert coin is not None
    payment = emulator.open_payment(invoice, coin)
    return js_response(created_payment_view(payment), 201)


def _int_id(value: object, name: str) -> int:
    text = str(value)
    if isinstance(value, bool) or not text.isdigit() or len(text) > 19:
        raise _invalid(f'"{name}" must be a number')
    return int(text)


@router.get("/payment/{payment_id}")
async def get_payment(
    payment_id: str, emulator: Annotated[Emulator, Depends(guard("get_payment"))]
) -> Response:
    payment = emulator.store.payments.get(_int_id(payment_id, "payment_id"))
    if payment is None:
        raise ProviderError(404, "PAYMENT_NOT_FOUND", f"Payment {payment_id} not found")
    return js_response(payment.api_view())


# Get list of payments (Postman "NOWPayments API"): sortBy values, default created_at / asc.
SORT_FIELDS = (
    "created_at",
    "payment_id",
    "payment_status",
    "pay_address",
    "price_amount",
    "price_currency",
    "pay_amount",
    "actually_paid",
    "pay_currency",
    "order_id",
    "order_description",
    "purchase_id",
    "outcome_amount",
    "outcome_currency",
)
_MAX_LIMIT = 500


def _query_int(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    if not re.fullmatch(r"-?\d{1,9}", text.strip()):
        raise _invalid(f'"{name}" must be a number')
    value = int(text)
    if value < low:
        raise _invalid(f'"{name}" must be greater than or equal to {low}')
    if high is not None and value > high:
        raise _invalid(f'"{name}" must be less than or equal to {high}')
    return value


def _query_choice(request: Request, name: str, allowed: tuple[str, ...]) -> str:
    text = request.query_params.get(name) or allowed[0]
    if text not in allowed:
        raise _invalid(f'"{name}" must be one of [{", ".join(allowed)}]')
    return text


def _query_date(request: Request, name: str) -> datetime | None:
    """YYYY-MM-DD (midnight UTC, as JavaScript's Date reads it) or ISO yyyy-MM-ddTHH:mm:ss.SSSZ."""
    text = (request.query_params.get(name) or "").strip()
    if not text:
        return None
    try:
        if re.fullmatch(r"\d{4}-\d\d-\d\d", text):
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _invalid(f'"{name}" must be a valid date') from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _sort_key(field: str) -> Callable[[Payment], tuple[Any, ...]]:
    def key(payment: Payment) -> tuple[Any, ...]:
        if field == "created_at":
            return (False, payment.created_at, payment.payment_id)
        value = payment.api_view().get(field)
        if isinstance(value, str) and field in ("payment_id", "purchase_id") and value.isdigit():
            value = int(value)
        # Nulls last ascending; ties keep creation order.
        return (value is None, value if value is not None else 0, payment.created_at)

    return key


@router.get("/payment")
@router.get("/payment/")
async def list_payments(
    request: Request,
    emulator: Annotated[Emulator, Depends(guard("list_payments", needs_jwt=True))],
) -> Response:
    limit = _query_int(request, "limit", 10, 1, _MAX_LIMIT)
    page = _query_int(request, "page", 0, 0, None)
    sort_by = _query_choice(request, "sortBy", SORT_FIELDS)
    order_by = _query_choice(request, "orderBy", ("asc", "desc"))
    date_from = _query_date(request, "dateFrom")
    date_to = _query_date(request, "dateTo")
    invoice_id = request.query_params.get("invoiceId")
    payments = list(emulator.store.payments.values())
    if invoice_id:
        wanted = _int_id(invoice_id, "invoiceId")
        payments = [p for p in payments if p.invoice_id == wanted]
    if date_from is not None:
        payments = [p for p in payments if p.created_at >= date_from]
    if date_to is not None:
        payments = [p for p in payments if p.created_at <= date_to]
    payments.sort(key=_sort_key(sort_by), reverse=order_by == "desc")
    total = len(payments)
    window = payments[page * limit : (page + 1) * limit]
    return js_response(
        {
            "data": [p.api_view() for p in window],
            "limit": limit,
            "page": page,
            "pagesCount": -(-total // limit),
            "total": total,
        }
    )
