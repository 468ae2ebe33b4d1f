"""The provider's REST API under /v1, with the request and error shapes NOWPayments uses."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from decimal import ROUND_UP, Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from .coins import COINS, Coin, usd_rate
from .responses import ProviderError, emulator_of, js_response
from .service import Emulator
from .signing import js_number
from .state import Invoice, Payment, iso

router = APIRouter(prefix="/v1")

_MAX_BODY = 64 * 1024
_MAX_TEXT = 2048


def guard(operation: str, *, needs_key: bool = True) -> Callable[[Request], Awaitable[Emulator]]:
    """Injected faults first (the provider is down for everyone), then the api key."""

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
        "expiration_estimate_date": None,
        "is_fixed_rate": False,
        "is_fee_paid_by_user": False,
        "type": "crypto2crypto",
    }


@router.get("/status")
async def api_status(
    _: Annotated[Emulator, Depends(guard("status", needs_key=False))],
) -> Response:
    return js_response({"message": "OK"})


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
        ipn_callback_url=_text(data, "ipn_callback_url"),
        success_url=_text(data, "success_url"),
        cancel_url=_text(data, "cancel_url"),
        partially_paid_url=_text(data, "partially_paid_url"),
        customer_email=_text(data, "customer_email"),
        is_fixed_rate=_flag(data, "is_fixed_rate"),
        is_fee_paid_by_user=_flag(data, "is_fee_paid_by_user"),
    )
    return js_response(invoice_view(emulator, invoice))


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
    _check_minimum(emulator, price_amount, price_currency)
    payment = emulator.store.create_payment(
        coin=coin,
        price_amount=price_amount,
        price_currency=price_currency,
        invoice=None,
        order_id=_text(data, "order_id"),
        order_description=_text(data, "order_description"),
        ipn_callback_url=_text(data, "ipn_callback_url"),
        pay_amount=pay_amount,
    )
    return js_response(created_payment_view(payment), 201)


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


@router.get("/payment")
@router.get("/payment/")
async def list_payments(
    emulator: Annotated[Emulator, Depends(guard("list_payments"))],
    limit: Annotated[int, Query(ge=1, le=500)] = 10,
    page: Annotated[int, Query(ge=0)] = 0,
    invoice_id: Annotated[str | None, Query(alias="invoiceId")] = None,
    order_by: Annotated[str, Query(alias="orderBy", pattern="^(asc|desc)$")] = "asc",
) -> Response:
    payments = list(emulator.store.payments.values())
    if invoice_id is not None:
        wanted = _int_id(invoice_id, "invoiceId")
        payments = [p for p in payments if p.invoice_id == wanted]
    payments.sort(key=lambda p: p.created_at, reverse=order_by == "desc")
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
