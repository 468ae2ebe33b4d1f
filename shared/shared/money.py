"""Money is Decimal end to end. Nothing here ever goes through float."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

MAX_AMOUNT_DIGITS = 30


class InvalidAmountError(ValueError):
    """An amount that is not a finite decimal number."""


def to_decimal(value: object) -> Decimal:
    """Parse an amount from JSON text, a string, an int or a Decimal — never from a float.

    A float has already lost the provider's digits (0.1 is not 0.1), so it is refused loudly
    rather than converted quietly.
    """
    if isinstance(value, bool):
        raise InvalidAmountError("a boolean is not an amount")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation as exc:
            raise InvalidAmountError(f"not a decimal number: {value[:40]!r}") from exc
    else:
        raise InvalidAmountError(f"amounts must be decimal text, not {type(value).__name__}")
    if not result.is_finite():
        raise InvalidAmountError("amount must be finite")
    if len(result.as_tuple().digits) > MAX_AMOUNT_DIGITS:
        raise InvalidAmountError("amount has too many digits")
    return result


def loads_decimal(raw: bytes | str) -> Any:
    """``json.loads`` that keeps every non-integer number as its exact Decimal."""
    return json.loads(raw, parse_float=Decimal)


def amount_text(value: Decimal) -> str:
    """Canonical text for an amount in events and APIs: plain notation, no exponent."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def quantize(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
