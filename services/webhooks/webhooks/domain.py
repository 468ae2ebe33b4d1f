"""Pure rules of the webhooks gateway (no I/O): how NOWPayments signs an IPN, what a verified
IPN must contain, how duplicates are recognised and how many rejections we are willing to keep.

Signing, as the provider does it: HMAC-SHA512 keyed with the IPN secret's UTF-8 bytes over
``JSON.stringify`` of the body with keys sorted at every level. Real bodies arrive in exactly that
form, so the raw bytes are checked first. Only if that fails do we rebuild the provider's
canonical form (a proxy may have re-ordered keys, older IPNs arrived in insertion order): every
number is written as JavaScript prints it, computed from its literal text and never through a
Python float's repr (which turns 0.000002 into 2e-06), and strings are escaped the way
JavaScript escapes them (non-ASCII and ``/`` stay as they are).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from shared.money import InvalidAmountError, amount_text, to_decimal
from shared.observability import REDACTED, SECRET_HEADERS

from webhooks.errors import InvalidJsonError, IpnRejectedError

PROVIDER = "nowpayments"
SIGNATURE_HEADER = "x-nowpayments-sig"
MAX_JSON_DEPTH = 32

SecretSlot = Literal["current", "previous"]
_SLOTS: tuple[SecretSlot, SecretSlot] = ("current", "previous")


class JsonNumber(str):
    """A JSON number kept as the exact text it arrived in; never converted to float."""

    __slots__ = ()


# --------------------------------------------------------------------------------------------
# JSON in, JavaScript JSON out


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # JavaScript keeps the last of two equal keys and Python does too, but a body with duplicate
    # keys can mean different things to different readers downstream: refuse it.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidJsonError(f"duplicate key {key[:40]!r}")
            seen.add(key)
    return obj


def _no_constants(name: str) -> Any:
    raise InvalidJsonError(f"{name} is not a JSON value")


def _check_depth(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidJsonError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def parse_json_text(text: str, *, numbers: Callable[[str], Any] = JsonNumber) -> Any:
    """Parse one JSON document keeping every number's literal text.

    ``numbers=JsonNumber`` (the default) keeps numbers distinguishable from strings, which the
    canonical form needs; ``numbers=str`` gives plain text, which pydantic serialises ~2x faster
    than a str subclass — the hot path's event payload uses that.
    """
    try:
        value = json.loads(
            text,
            parse_float=numbers,
            parse_int=numbers,
            parse_constant=_no_constants,
            object_pairs_hook=_object_without_duplicates,
        )
    except RecursionError as exc:
        raise InvalidJsonError("nested too deeply") from exc
    except InvalidJsonError:
        raise
    except ValueError as exc:
        raise InvalidJsonError(str(exc)[:120]) from exc
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH:  # cheaper than walking every IPN
        _check_depth(value)
    return value


def decode_body(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJsonError("body is not UTF-8") from exc


_JS_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
# What JSON.stringify escapes: quote, backslash, C0 controls and (well-formed JSON.stringify,
# ES2019) lone surrogates. json.loads joins valid surrogate pairs, so any surrogate left is lone.
_JS_ESCAPE = re.compile('["\\\\\x00-\x1f\ud800-\udfff]')
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]{0,9}")


def _js_escape(match: re.Match[str]) -> str:
    ch = match.group()
    return _JS_SHORT_ESCAPES.get(ch) or f"\\u{ord(ch):04x}"


def js_string(value: str) -> str:
    return '"' + _JS_ESCAPE.sub(_js_escape, value) + '"'


def _is_array_index(key: str) -> bool:
    return _ARRAY_INDEX.fullmatch(key) is not None and int(key) <= 2**32 - 2


def js_key_order(keys: Sequence[str]) -> list[str]:
    """Keys as a JS object enumerates them after ``Object.keys(o).sort()`` re-insertion:
    integer-like keys first (ascending), then the rest by UTF-16 code units."""
    ordered = sorted(keys, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
    indices = [k for k in ordered if _is_array_index(k)]
    if not indices:
        return ordered
    return sorted(indices, key=int) + [k for k in ordered if not _is_array_index(k)]


def js_number_text(literal: str) -> str:
    """The text ``JSON.stringify`` gives the number written ``literal`` — but only where that
    text stands for exactly the same decimal value; otherwise the literal itself.

    The provider parses nothing: it prints its own doubles, so a genuine body's literals are
    already JS text and come back unchanged (``0.000002``, ``1e-7``, ``1e+21``). A body
    re-printed on the way (``2e-06``, ``69.250``, ``1E-7``, ``5.0``) gets the provider's
    spelling back. A literal the double would round (``5261148849000000001``) keeps its text:
    two different values never share a canonical text, so a digit changed in transit cannot
    verify, and what we use downstream is always the value that was signed.
    """
    try:
        number = float(literal)
    except ValueError:
        return literal
    if not math.isfinite(number):
        return literal  # JSON.stringify would print null: not the same value
    text = _js_double_text(number)
    if text == literal:
        return text
    try:
        same = Decimal(text) == Decimal(literal)
    except InvalidOperation:
        return literal
    return text if same else literal


def _js_double_text(number: float) -> str:
    """ECMAScript Number::toString(10) of a finite double."""
    if number == 0:
        return "0"  # -0 too
    if number < 0:
        return "-" + _js_double_text(-number)
    # repr gives the shortest round-tripping digits, which is what ECMAScript requires.
    _, digit_tuple, exponent = Decimal(repr(number)).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent += len(digit_tuple) - len(digits)
    k = len(digits)
    n = exponent + k  # the decimal point sits after n digits
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"


def _write_js(value: Any, out: list[str]) -> None:
    if type(value) is JsonNumber:
        out.append(js_number_text(value))
    elif isinstance(value, str):
        out.append(js_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, dict):
        out.append("{")
        for position, key in enumerate(js_key_order(list(value))):
            if position:
                out.append(",")
            out.append(js_string(key))
            out.append(":")
            _write_js(value[key], out)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for position, item in enumerate(value):
            if position:
                out.append(",")
            _write_js(item, out)
        out.append("]")
    else:  # parse_json_text yields nothing else
        raise TypeError(f"not a parsed JSON value: {type(value).__name__}")


def canonical_json(value: Any) -> bytes:
    """The provider's signed form of a parsed body: sorted keys, compact, JS escaping."""
    out: list[str] = []
    _write_js(value, out)
    return "".join(out).encode("utf-8")


# --------------------------------------------------------------------------------------------
# Signature


@dataclass(frozen=True, slots=True)
class Verified:
    method: Literal["raw", "canonical"]
    secret: SecretSlot
    signature: str  # normalised lowercase hex
    document: dict[str, Any] | None = None  # parsed already by the canonical check

    @property
    def label(self) -> str:
        return f"{self.method}/{self.secret}"


def _reject_signature(detail: str) -> IpnRejectedError:
    return IpnRejectedError("invalid_signature", detail)


def verify_signature(body: bytes, header: str | None, keys: Sequence[bytes]) -> Verified:
    """Check ``x-nowpayments-sig`` against the raw bytes, then against the canonical form.

    Every comparison is ``hmac.compare_digest`` on the 64-byte digests. The canonical fallback
    has to parse the unverified body, but only to rebuild the bytes the provider signed: nothing
    read from it is used unless a signature matches.
    """
    if header is None or not header.strip():
        raise IpnRejectedError("missing_signature", f"{SIGNATURE_HEADER} header is required")
    signature = header.strip().lower()
    if len(signature) != 128:
        raise IpnRejectedError(
            "malformed_signature", f"{SIGNATURE_HEADER} must be 128 hex characters"
        )
    try:
        expected = bytes.fromhex(signature)
    except ValueError:
        raise IpnRejectedError(
            "malformed_signature", f"{SIGNATURE_HEADER} must be 128 hex characters"
        ) from None

    for slot, key in zip(_SLOTS, keys, strict=False):
        if hmac.compare_digest(hmac.digest(key, body, hashlib.sha512), expected):
            return Verified("raw", slot, signature)

    mismatch = f"{SIGNATURE_HEADER} does not match the body"
    try:
        document = parse_json_text(decode_body(body))
        canonical = canonical_json(document)
    except (InvalidJsonError, TypeError, UnicodeError):
        raise _reject_signature(mismatch) from None
    if not isinstance(document, dict) or canonical == body:
        raise _reject_signature(mismatch)
    for slot, key in zip(_SLOTS, keys, strict=False):
        if hmac.compare_digest(hmac.digest(key, canonical, hashlib.sha512), expected):
            return Verified("canonical", slot, signature, document)
    raise _reject_signature(mismatch)


def sign(body: bytes, key: bytes) -> str:
    """Lowercase hex HMAC-SHA512, as the provider sends it (used by the bench and tools)."""
    return hmac.new(key, body, hashlib.sha512).hexdigest()


# --------------------------------------------------------------------------------------------
# What a verified IPN carries

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NUMERIC_ID = re.compile(r"[0-9]{1,40}")
_STATUS = re.compile(r"[A-Za-z_]{1,32}")
_EPOCH_MS = re.compile(r"[0-9]{1,16}")
# ISO 8601 as older IPNs and the payment API write it ("2023-10-30T20:28:34.802Z").
_ISO_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?"
    r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?",
    re.IGNORECASE,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,20}")
_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")

AMOUNT_FIELDS = ("price_amount", "pay_amount", "actually_paid", "outcome_amount")
MAX_SCALE = 30


def _invalid(name: str, reason: str) -> IpnRejectedError:
    return IpnRejectedError("invalid_payload", f"{name}: {reason}")


def _id_field(doc: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = doc.get(name)
    if value is None or value == "":
        if required:
            raise _invalid(name, "is required")
        return None
    if type(value) is JsonNumber:
        if not _NUMERIC_ID.fullmatch(value):
            raise _invalid(name, "must be a whole number")
        return str(value)
    if isinstance(value, str) and _ID.fullmatch(value):
        return value
    raise _invalid(name, "must be an id of at most 64 letters, digits, '-' or '_'")


# Plain decimal text short enough that no bound below can be hit: most amounts on the wire.
_PLAIN_AMOUNT = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,15})?")


def _amount_field(doc: Mapping[str, Any], name: str) -> Decimal | None:
    value = doc.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):  # JsonNumber is a str: numbers and numeric strings both work
        raise _invalid(name, "must be a number")
    if _PLAIN_AMOUNT.fullmatch(value):
        return Decimal(value)  # ≤ 30 digits, scale ≤ 15, not negative: every check below holds
    try:
        amount = to_decimal(str(value))
    except InvalidAmountError as exc:
        raise _invalid(name, str(exc)) from None
    if amount < 0:
        raise _invalid(name, "must not be negative")
    # Bounded scale: plain text of any accepted amount stays short (dedup keys, NUMERIC, logs),
    # and 1e-999999 cannot make us write a million zeros. Wei has 18 decimals; 30 is plenty.
    exponent = amount.as_tuple().exponent
    if not isinstance(exponent, int) or not -MAX_SCALE <= exponent <= MAX_SCALE:
        raise _invalid(name, f"more than {MAX_SCALE} decimal places or too large")
    if amount and amount.adjusted() > MAX_SCALE:
        raise _invalid(name, "too large")
    return amount


def _text_field(
    doc: Mapping[str, Any], name: str, max_length: int, pattern: re.Pattern[str] | None = None
) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(name, "must be text")
    text = str(value)
    if len(text) > max_length:
        raise _invalid(name, f"longer than {max_length} characters")
    if pattern is not None and text and not pattern.fullmatch(text):
        raise _invalid(name, "has unexpected characters")
    if _CONTROL.search(text):
        raise _invalid(name, "contains control characters")
    return text or None


def _epoch_ms_field(doc: Mapping[str, Any], name: str) -> int | None:
    """Epoch milliseconds (current IPNs) or an ISO 8601 time (older ones), as epoch ms.

    The same moment gives the same number either way, so the dedup key of one IPN does not
    depend on the shape it came in (ISO text carries milliseconds; finer digits are cut)."""
    value = doc.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str) and _EPOCH_MS.fullmatch(value):
        return int(value)
    if type(value) is str and len(value) <= 40 and _ISO_TIME.fullmatch(value):
        return _iso_to_epoch_ms(value, name)
    raise _invalid(name, "must be epoch milliseconds or an ISO 8601 time")


def _iso_to_epoch_ms(text: str, name: str) -> int:
    normalised = text.upper().replace(" ", "T", 1)
    if normalised.endswith("Z"):
        normalised = normalised[:-1] + "+00:00"
    head, dot, tail = normalised.partition(".")
    if dot:  # fromisoformat wants 3 or 6 fraction digits: keep milliseconds, drop the rest
        fraction = re.match(r"[0-9]+", tail)
        assert fraction is not None
        digits = fraction.group()
        normalised = f"{head}.{(digits + '000')[:3]}{tail[len(digits) :]}"
    try:
        moment = datetime.fromisoformat(normalised)
    except ValueError:
        raise _invalid(name, "is not a valid ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the provider's times are UTC
    millis = (moment - _EPOCH) // timedelta(milliseconds=1)
    if millis < 0:
        raise _invalid(name, "is before 1970")
    return millis


@dataclass(frozen=True, slots=True)
class IpnFields:
    """The parts of a verified IPN body that the dedup key and the event need."""

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
    updated_at: int | None = None
    document: dict[str, Any] = field(default_factory=dict)

    @property
    def dedup_key(self) -> str:
        return dedup_key(self.payment_id, self.payment_status, self.actually_paid, self.updated_at)


def dedup_key(
    payment_id: str, payment_status: str, actually_paid: Decimal | None, updated_at: int | None
) -> str:
    """The provider sends no event id: the same delivery repeated has the same key, any real
    change (status, amount seen, provider timestamp) a new one. Amounts are normalised so
    ``69.25`` and ``69.250`` agree."""
    paid = amount_text(actually_paid) if actually_paid is not None else ""
    stamp = "" if updated_at is None else str(updated_at)
    return f"{PROVIDER}:{payment_id}:{payment_status}:{paid}:{stamp}"


def read_ipn(body: bytes, document: dict[str, Any] | None = None) -> IpnFields:
    """Read a verified body. ``document`` is the parse the canonical check already made."""
    if document is None:
        try:
            parsed = parse_json_text(decode_body(body), numbers=str)
        except InvalidJsonError as exc:
            raise IpnRejectedError("invalid_json", f"body is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise IpnRejectedError("invalid_payload", "body must be a JSON object")
        document = parsed
    status = document.get("payment_status")
    if not isinstance(status, str) or not _STATUS.fullmatch(status):
        raise _invalid("payment_status", "is required: letters and '_', at most 32")
    payment_id = _id_field(document, "payment_id", required=True)
    assert payment_id is not None
    return IpnFields(
        payment_id=payment_id,
        payment_status=status,
        invoice_id=_id_field(document, "invoice_id", required=False),
        order_id=_text_field(document, "order_id", 100),
        price_amount=_amount_field(document, "price_amount"),
        price_currency=_text_field(document, "price_currency", 20, _CODE),
        pay_amount=_amount_field(document, "pay_amount"),
        actually_paid=_amount_field(document, "actually_paid"),
        pay_currency=_text_field(document, "pay_currency", 20, _CODE),
        outcome_amount=_amount_field(document, "outcome_amount"),
        outcome_currency=_text_field(document, "outcome_currency", 20, _CODE),
        updated_at=_epoch_ms_field(document, "updated_at"),
        document=document,
    )


# --------------------------------------------------------------------------------------------
# Headers, excerpts, correlation ids

_CORRELATION = re.compile(r"[A-Za-z0-9._:\-]{1,100}")
MAX_STORED_HEADERS = 50
MAX_HEADER_VALUE = 1000


_NUL_OR_SURROGATE = re.compile("[\x00\ud800-\udfff]")


def clean_text(value: str, limit: int) -> str:
    """Text safe for a Postgres text/JSONB value and a NATS payload: no NUL, no lone surrogate."""
    return _NUL_OR_SURROGATE.sub("\ufffd", value[:limit])


def storable_headers(raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """What is kept of a request's headers (ASGI pairs): at most ``MAX_STORED_HEADERS``, names
    lower-cased, secret-bearing values redacted, values bounded, no NUL (Latin-1 text from
    bytes cannot hold a lone surrogate, so NUL is all that ``clean_text`` would replace)."""
    out: dict[str, str] = {}
    for name_bytes, value_bytes in raw[:MAX_STORED_HEADERS]:
        name = name_bytes[:100].decode("latin-1").lower()
        if name in SECRET_HEADERS:
            value = REDACTED
        else:
            value = value_bytes[:MAX_HEADER_VALUE].decode("latin-1")
            if "\x00" in value:
                value = value.replace("\x00", "\ufffd")
        if "\x00" in name:
            name = name.replace("\x00", "\ufffd")
        out[name] = value
    return out


def body_excerpt(body: bytes, limit: int) -> str:
    return clean_text(body[:limit].decode("utf-8", "replace"), limit)


def valid_correlation_id(value: str | None) -> str | None:
    return value if value is not None and _CORRELATION.fullmatch(value) else None


# --------------------------------------------------------------------------------------------
# Who may deliver


class SourceAllowList:
    """``NOWPAYMENTS_IPN_ALLOWED_IPS``: the addresses IPNs may come from (empty: anyone).

    The address checked is the one the api records as ``source_ip``: the socket peer, which
    uvicorn replaces by the X-Forwarded-For client only when the peer is one of its
    ``FORWARDED_ALLOW_IPS`` (a trusted proxy). An IPv4 peer seen as ``::ffff:a.b.c.d`` counts
    as ``a.b.c.d``."""

    def __init__(self, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        self.networks = tuple(networks)
        self._seen: dict[str, bool] = {}  # a handful of provider IPs: parse each once

    def __bool__(self) -> bool:
        return bool(self.networks)

    def allows(self, source_ip: str | None) -> bool:
        if not self.networks:
            return True
        if source_ip is None:
            return False
        known = self._seen.get(source_ip)
        if known is not None:
            return known
        try:
            address = ipaddress.ip_address(source_ip.strip().strip("[]"))
        except ValueError:
            return False  # not an address (a unix socket, garbage): never on the list
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        allowed = any(address in network for network in self.networks)
        if len(self._seen) < 1024:  # bounded: a scan from many addresses must not grow it
            self._seen[source_ip] = allowed
        return allowed


# --------------------------------------------------------------------------------------------
# Flood cap for rejected requests


class FailureBudget:
    """At most ``per_minute`` rejection rows per fixed one-minute window (per process).

    What is over budget is only counted; the next row that is stored carries the count, so an
    operator sees "1 234 dropped since the previous row" instead of a full disk.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._window_start = clock()
        self._used = 0
        self.dropped = 0  # not stored since the last stored row

    def take(self) -> int | None:
        """Admit one row and return the dropped count to report with it, or None if over."""
        now = self._clock()
        if now - self._window_start >= 60.0:
            self._window_start = now
            self._used = 0
        if self._used >= self.per_minute:
            self.dropped += 1
            return None
        self._used += 1
        reported, self.dropped = self.dropped, 0
        return reported

    def give_back(self, reported: int) -> None:
        """The admitted row could not be stored: it and what it carried count as dropped."""
        self.dropped += reported + 1
