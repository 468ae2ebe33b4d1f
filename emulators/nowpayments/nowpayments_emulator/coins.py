"""Currencies the emulator knows, with fixed rates so amounts are predictable in tests."""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal


@dataclass(frozen=True, slots=True)
class Coin:
    code: str
    name: str
    decimals: int
    usd_rate: Decimal
    network: str
    address_prefix: str
    address_length: int
    address_alphabet: str

    @property
    def quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.decimals)

    def quantize(self, amount: Decimal) -> Decimal:
        return amount.quantize(self.quantum, rounding=ROUND_HALF_UP)


_BECH32 = "023456789acdefghjklmnpqrstuvwxyz"
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_HEX = "0123456789abcdef"

COINS: dict[str, Coin] = {
    coin.code: coin
    for coin in (
        Coin("btc", "Bitcoin", 8, Decimal("69250"), "btc", "bc1q", 42, _BECH32),
        Coin("eth", "Ethereum", 8, Decimal("3500"), "eth", "0x", 42, _HEX),
        Coin("ltc", "Litecoin", 8, Decimal("80"), "ltc", "ltc1q", 43, _BECH32),
        Coin("doge", "Dogecoin", 8, Decimal("0.16"), "doge", "D", 34, _BASE58),
        Coin("trx", "TRON", 6, Decimal("0.125"), "trx", "T", 34, _BASE58),
        Coin("usdttrc20", "Tether USD (TRC-20)", 6, Decimal("1"), "trx", "T", 34, _BASE58),
        Coin("usdterc20", "Tether USD (ERC-20)", 6, Decimal("1"), "eth", "0x", 42, _HEX),
        Coin("usdc", "USD Coin (ERC-20)", 6, Decimal("1"), "eth", "0x", 42, _HEX),
    )
}

FIAT_USD_RATES: dict[str, Decimal] = {
    "usd": Decimal("1"),
    "eur": Decimal("1.08"),
    "gbp": Decimal("1.27"),
}


def usd_rate(currency: str) -> Decimal | None:
    """USD value of one unit of a fiat or crypto currency, or None when unknown."""
    code = currency.lower()
    if code in FIAT_USD_RATES:
        return FIAT_USD_RATES[code]
    coin = COINS.get(code)
    return coin.usd_rate if coin else None


def pay_amount_for(price_amount: Decimal, price_currency: str, coin: Coin) -> Decimal:
    rate = usd_rate(price_currency)
    if rate is None:
        raise ValueError(f"unknown currency {price_currency!r}")
    return coin.quantize(price_amount * rate / coin.usd_rate)


def fiat_value(amount: Decimal, coin: Coin, price_currency: str) -> Decimal:
    """What a crypto amount is worth in the invoice's price currency."""
    rate = usd_rate(price_currency)
    if rate is None:
        raise ValueError(f"unknown currency {price_currency!r}")
    return (amount * coin.usd_rate / rate).quantize(Decimal("0.00000001"), rounding=ROUND_HALF_UP)


def make_address(coin: Coin, rng: random.Random) -> str:
    body_length = coin.address_length - len(coin.address_prefix)
    return coin.address_prefix + "".join(
        rng.choice(coin.address_alphabet) for _ in range(body_length)
    )


def convert(amount: Decimal, source: Coin, target: Coin) -> Decimal:
    """An amount of one coin in another at the fixed rates, rounded to the target's decimals."""
    if source.code == target.code:
        return target.quantize(amount)
    return target.quantize(amount * source.usd_rate / target.usd_rate)
