"""The provider's wire form: JavaScript `JSON.stringify` text and its HMAC-SHA512 signature.

NOWPayments is a Node service: it sorts the IPN's keys at every level and signs
`JSON.stringify(sorted)`. Python's json.dumps differs from that (2e-06 vs 0.000002, ASCII escapes,
", " separators), so this module renders the JavaScript text itself and signs the exact bytes it
sends. A merchant that re-serialises before checking will fail here, as it would in production.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal

SIGNATURE_HEADER = "x-nowpayments-sig"

# Integers JavaScript holds exactly; beyond this a JS number is already rounded.
_MAX_SAFE_INTEGER = 2**53 - 1
# JS enumerates "array index" keys (canonical integers below 2^32 - 1) first, ascending.
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
_MAX_ARRAY_INDEX = 2**32 - 2

_SHORT_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


def js_number(value: int | float | Decimal) -> str:
    """Render a number as JavaScript's Number.prototype.toString / JSON.stringify would.

    Decimals pass through a double first, because that is all a JS provider can hold.
    """
    if isinstance(value, bool):
        raise TypeError("booleans are not numbers here")
    if isinstance(value, int) and abs(value) <= _MAX_SAFE_INTEGER:
        return str(value)
    number = float(value)
    if not math.isfinite(number):
        return "null"  # JSON.stringify(NaN) and JSON.stringify(Infinity)
    if number == 0:
        return "0"  # also for -0
    if number < 0:
        return "-" + _positive_number(-number)
    return _positive_number(number)


def _positive_number(number: float) -> str:
    # repr() yields the shortest digit string that round-trips, as ECMAScript requires.
    _, digit_tuple, exponent = Decimal(repr(number)).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(str(d) for d in digit_tuple)
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    k = len(stripped)
    n = exponent + k  # the decimal point sits after n digits
    if k <= n <= 21:
        return stripped + "0" * (n - k)
    if 0 < n <= 21:
        return stripped[:n] + "." + stripped[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + stripped
    e = n - 1
    mantissa = stripped if k == 1 else stripped[0] + "." + stripped[1:]
    return f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


def js_string(value: str) -> str:
    """Quote a string as JSON.stringify does: only quotes, backslashes and controls escaped."""
    out: list[str] = ['"']
    i = 0
    length = len(value)
    while i < length:
        ch = value[i]
        code = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDBFF and i + 1 < length and 0xDC00 <= ord(value[i + 1]) <= 0xDFFF:
            # A surrogate pair held as two code points is one well-formed character in JS.
            low = ord(value[i + 1])
            out.append(chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)))
            i += 1
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")  # well-formed JSON.stringify escapes lone surrogates
        else:
            out.append(ch)
        i += 1
    out.append('"')
    return "".join(out)


def _utf16_order(key: str) -> bytes:
    # Array.prototype.sort() compares UTF-16 code units, not code points.
    return key.encode("utf-16-be", "surrogatepass")


def _js_key_order(keys: list[str]) -> list[str]:
    """Order keys as a JS object enumerates them once inserted in `ordered` order."""
    indices = [k for k in keys if _ARRAY_INDEX.fullmatch(k) and int(k) <= _MAX_ARRAY_INDEX]
    index_set = set(indices)
    others = [k for k in keys if k not in index_set]
    return sorted(indices, key=int) + others


def dumps_js(value: object, *, sort_keys: bool = True) -> str:
    """Serialise like `JSON.stringify(sortObject(value))`: compact, JS numbers, keys sorted."""
    parts: list[str] = []
    _write(value, parts, sort_keys)
    return "".join(parts)


def _write(value: object, out: list[str], sort_keys: bool) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int | float | Decimal):
        out.append(js_number(value))
    elif isinstance(value, str):
        out.append(js_string(value))
    elif isinstance(value, Mapping):
        keys = [str(k) for k in value]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate keys after conversion to strings")
        if sort_keys:
            keys = sorted(keys, key=_utf16_order)
        by_text = {str(k): v for k, v in value.items()}
        out.append("{")
        for position, key in enumerate(_js_key_order(keys)):
            if position:
                out.append(",")
            out.append(js_string(key))
            out.append(":")
            _write(by_text[key], out, sort_keys)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append("[")
        for position, item in enumerate(value):
            if position:
                out.append(",")
            _write(item, out, sort_keys)
        out.append("]")
    else:
        raise TypeError(f"cannot serialise {type(value).__name__} as JSON")


def encode_ipn(body: Mapping[str, object]) -> bytes:
    """The exact bytes the provider posts (and signs) for an IPN body."""
    return dumps_js(body, sort_keys=True).encode("utf-8")


def sign(raw_body: bytes, secret: str) -> str:
    """Lowercase hex HMAC-SHA512 of the raw body, keyed with the IPN secret's UTF-8 bytes."""
    return hmac.new(secret.encode("utf-8"), raw_body, hashlib.sha512).hexdigest()
