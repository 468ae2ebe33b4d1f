"""Checkout helpers of the provider API: minimums, estimates and the coin lists.

Shapes follow the Postman collection "NOWPayments API" (Currencies and Payments folders); the
numbers come from this emulator's fixed rates (coins.py), so they agree with what
POST /v1/payment would charge.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, ROUND_UP, Decimal, InvalidOperation
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from .api import guard
from .coins import COINS, FIAT_USD_RATES, Coin, usd_rate
from .responses import ProviderError, js_response
from .service import Emulator
from .state import Payment, iso

router = APIRouter(prefix="/v1")

# Fiat amounts the provider quotes carry 8 decimals (min-amount's fiat_equivalent 35.40626584).
_FIAT_QUANTUM = Decimal("0.00000001")
# Rate freeze of an estimate when the payment carries no expiry of its own (fixed rate: 20 min).
_ESTIMATE_LIFETIME = timedelta(minutes=20)

# CoinGecko ids, as the provider lists them in full-currencies (cg_id).
_CG_IDS = {
    "btc": "bitcoin",
    "eth": "ethereum",
    "ltc": "litecoin",
    "doge": "dogecoin",
    "trx": "tron",
    "usdttrc20": "tether",
    "usdterc20": "tether",
    "usdc": "usd-coin",
}
_SMART_CONTRACTS = {
    "usdttrc20": "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t",
    "usdterc20": "0xdac17f958d2ee523a2206206994597c13d831ec7",
    "usdc": "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48",
}


def _invalid(message: str) -> ProviderError:
    return ProviderError(400, "INVALID_REQUEST_PARAMS", message)


def _currency(request: Request, name: str, *, required: bool) -> str | None:
    text = (request.query_params.get(name) or "").strip().lower()
    if not text:
        if required:
            raise _invalid(f'"{name}" is required')
        return None
    if usd_rate(text) is None:
        raise ProviderError(400, "CURRENCY_UNAVAILABLE", f"Currency {text} is not available")
    return text


def _quantize(amount: Decimal, currency: str, rounding: str = ROUND_HALF_UP) -> Decimal:
    coin = COINS.get(currency)
    quantum = coin.quantum if coin else _FIAT_QUANTUM
    return amount.quantize(quantum, rounding=rounding)


def _convert(amount: Decimal, source: str, target: str) -> Decimal:
    rate_from, rate_to = usd_rate(source), usd_rate(target)
    assert rate_from is not None and rate_to is not None
    return amount * rate_from / rate_to


@router.get("/min-amount")
async def min_amount(
    request: Request, emulator: Annotated[Emulator, Depends(guard("min_amount"))]
) -> Response:
    """The smallest payment in currency_from: the emulator's USD minimum, rounded up.

    currency_to defaults to the merchant's payout coin (EMULATOR_OUTCOME_CURRENCY) and then to
    currency_from; is_fixed_rate / is_fee_paid_by_user are accepted, the minimum is the same.
    """
    source = _currency(request, "currency_from", required=True)
    assert source is not None
    outcome = getattr(emulator.config, "outcome_currency", None)
    target = _currency(request, "currency_to", required=False) or outcome or source
    fiat = _currency(request, "fiat_equivalent", required=False)
    if fiat is not None and fiat not in FIAT_USD_RATES:
        raise _invalid('"fiat_equivalent" must be a fiat currency')
    rate = usd_rate(source)
    assert rate is not None
    minimum = _quantize(emulator.config.min_price_usd / rate, source, ROUND_UP)
    body: dict[str, object] = {
        "currency_from": source,
        "currency_to": target,
        "min_amount": minimum,
    }
    if fiat is not None:
        body["fiat_equivalent"] = _convert(minimum, source, fiat).quantize(
            _FIAT_QUANTUM, ROUND_HALF_UP
        )
    return js_response(body)


@router.get("/estimate")
async def estimate(
    request: Request, _: Annotated[Emulator, Depends(guard("estimate"))]
) -> Response:
    """amount of currency_from in currency_to; crypto targets round as POST /v1/payment does."""
    text = (request.query_params.get("amount") or "").strip()
    if not text:
        raise _invalid('"amount" is required')
    try:
        amount = Decimal(text)
    except InvalidOperation as exc:
        raise _invalid('"amount" must be a number') from exc
    if not amount.is_finite() or amount <= 0:
        raise _invalid('"amount" must be a positive number')
    source = _currency(request, "currency_from", required=True)
    target = _currency(request, "currency_to", required=True)
    assert source is not None and target is not None
    return js_response(
        {
            "currency_from": source,
            "amount_from": amount.normalize(),
            "currency_to": target,
            "estimated_amount": _quantize(_convert(amount, source, target), target),
        }
    )


def _wallet_regex(coin: Coin) -> str:
    # Hex addresses (0x…) take either case, as the provider's own ^(0x)[0-9A-Fa-f]{40}$ does.
    hexadecimal = set(coin.address_alphabet) <= set("0123456789abcdef")
    chars = "0-9A-Fa-f" if hexadecimal else re.escape(coin.address_alphabet)
    body = coin.address_length - len(coin.address_prefix)
    return f"^({re.escape(coin.address_prefix)})[{chars}]{{{body}}}$"


def full_currency(index: int, coin: Coin) -> dict[str, object]:
    return {
        "id": index + 1,
        "code": coin.code.upper(),
        "name": coin.name,
        "enable": True,
        "wallet_regex": _wallet_regex(coin),
        "priority": index + 1,
        "extra_id_exists": False,
        "extra_id_regex": None,
        "logo_url": f"/images/coins/{coin.code}.svg",
        "track": True,
        "cg_id": _CG_IDS.get(coin.code, coin.code),
        "is_maxlimit": False,
        "network": coin.network,
        "smart_contract": _SMART_CONTRACTS.get(coin.code),
        "network_precision": coin.decimals,
    }


@router.get("/full-currencies")
async def full_currencies(_: Annotated[Emulator, Depends(guard("full_currencies"))]) -> Response:
    return js_response(
        {"currencies": [full_currency(i, coin) for i, coin in enumerate(COINS.values())]}
    )


@router.get("/merchant/coins")
async def merchant_coins(_: Annotated[Emulator, Depends(guard("merchant_coins"))]) -> Response:
    # The Postman example shows {"currencies": […]}, but merchants' code against the live API
    # reads `selectedCurrencies` (and lower-cases the codes): the live shape wins. Every coin is
    # "checked" in this emulator's coin settings.
    return js_response({"selectedCurrencies": [code.upper() for code in COINS]})


def token_id(api_key: str) -> str:
    """The provider's id of the api key a payment was made with ("please discard")."""
    return str(int(hashlib.sha256(api_key.encode()).hexdigest(), 16) % 9_000_000_000 + 10**9)


def _estimate_expiry(payment: Payment) -> datetime:
    valid_until = getattr(payment, "valid_until", None)
    if isinstance(valid_until, datetime):
        return valid_until
    return payment.created_at.astimezone(UTC) + _ESTIMATE_LIFETIME


@router.post("/payment/{payment_id}/update-merchant-estimate")
async def update_merchant_estimate(
    payment_id: str, emulator: Annotated[Emulator, Depends(guard("update_estimate"))]
) -> Response:
    """Rates are fixed here, so the estimate never moves: the current pay_amount and its expiry."""
    payment = (
        emulator.store.payments.get(int(payment_id))
        if payment_id.isdigit() and len(payment_id) <= 19
        else None
    )
    if payment is None:
        raise ProviderError(404, "PAYMENT_NOT_FOUND", f"Payment {payment_id} not found")
    return js_response(
        {
            "id": str(payment.payment_id),
            "token_id": token_id(emulator.config.api_key),
            "pay_amount": payment.pay_amount,
            "expiration_estimate_date": iso(_estimate_expiry(payment)),
        }
    )
