"""Test helpers for the webhooks gateway: sign IPNs the provider's way, post them, read events.

The JavaScript serialiser here is the tests' own, written apart from ``webhooks.domain``: the
production code keeps each number's literal text, this one renders Python values the way
``JSON.stringify`` renders JS values. Agreement between the two is part of what the tests show.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from shared.runtime import ServiceContext
from shared.testing.jetstream import stored_bodies
from shared.testing.plugin import Infra
from webhooks.main import build, create_api
from webhooks.settings import WebhooksSettings

SECRET = "test-ipn-secret-current-0123456789"
PREVIOUS_SECRET = "test-ipn-secret-previous-9876543210"
SIG = "x-nowpayments-sig"
IPN_PATH = "/webhooks/nowpayments"
ALIAS_PATH = "/payments/ipn"
FIXTURES = Path(__file__).parent / "fixtures"


def js_number(value: int | float | Decimal) -> str:
    """Number.prototype.toString for a double (ECMAScript Number::toString, radix 10)."""
    if isinstance(value, int) and not isinstance(value, bool):
        assert abs(value) < 2**53, "tests keep integers exact in JS"
        return str(value)
    x = float(value)
    if math.isnan(x) or math.isinf(x):
        return "null"
    if x == 0:
        return "0"
    if x < 0:
        return "-" + js_number(-x)
    # repr gives the shortest round-tripping digits; rebuild them as digits * 10**exponent.
    mantissa, _, exp_text = repr(x).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    exponent = int(exp_text or 0) - len(frac)
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    k = len(stripped)
    n = k + exponent
    if k <= n <= 21:
        return stripped + "0" * (n - k)
    if 0 < n <= 21:
        return stripped[:n] + "." + stripped[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + stripped
    e = n - 1
    head = stripped[0] + ("." + stripped[1:] if k > 1 else "")
    return f"{head}e{'+' if e > 0 else '-'}{abs(e)}"


def js_stringify(value: Any, *, sort: bool = True, rng: random.Random | None = None) -> str:
    """JSON.stringify(sortObject(value)); with ``rng`` keys come in a shuffled order instead."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float | Decimal):
        return js_number(value)
    if isinstance(value, str):
        # For strings without lone surrogates Python's escaping is exactly JavaScript's.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        keys = list(value)
        if rng is not None:
            rng.shuffle(keys)
        elif sort:
            # Array.prototype.sort compares UTF-16 code units; then a JS object lists its
            # integer-like ("array index") keys first, ascending, whatever the insertion order.
            keys.sort(key=lambda k: k.encode("utf-16-be", "surrogatepass"))
            keys.sort(key=lambda k: int(k) if _array_index(k) else math.inf)
        inner = ",".join(
            json.dumps(k, ensure_ascii=False) + ":" + js_stringify(value[k], sort=sort, rng=rng)
            for k in keys
        )
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ",".join(js_stringify(v, sort=sort, rng=rng) for v in value) + "]"
    raise TypeError(type(value).__name__)


def _array_index(key: str) -> bool:
    return re.fullmatch(r"0|[1-9][0-9]*", key) is not None and int(key) < 2**32 - 1


def encode(body: dict[str, Any]) -> bytes:
    return js_stringify(body).encode("utf-8")


def sign(raw: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode("utf-8"), raw, hashlib.sha512).hexdigest()


_payment_ids = iter(range(6_000_000_000, 7_000_000_000, 7919))


def ipn(**overrides: Any) -> dict[str, Any]:
    """A current-style IPN (sorted on the wire, nested fee, parent_payment_id)."""
    payment_id = overrides.pop("payment_id") if "payment_id" in overrides else next(_payment_ids)
    body: dict[str, Any] = {
        "actually_paid": 0.0012,
        "actually_paid_at_fiat": 0,
        "fee": {
            "currency": "btc",
            "depositFee": 0.000002,
            "serviceFee": 0.0000115,
            "withdrawalFee": 0,
        },
        "invoice_id": 4522625843,
        "order_description": "Game key",
        "order_id": "ord_7d3f2c",
        "outcome_amount": 0.0011885,
        "outcome_currency": "btc",
        "parent_payment_id": None,
        "pay_address": "bc1qexampleaddressxyz",
        "pay_amount": 0.0012,
        "pay_currency": "btc",
        "payin_extra_id": None,
        "payment_id": payment_id,
        "payment_status": "finished",
        "price_amount": 59.99,
        "price_currency": "usd",
        "purchase_id": "5931000544",
        "updated_at": 1732626000000,
    }
    body.update(overrides)
    return body


def shapes() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "nowpayments-ipn-shapes.json").read_text())
    return data


async def post(
    client: httpx.AsyncClient,
    raw: bytes,
    signature: str | None,
    *,
    path: str = IPN_PATH,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    sent = {"content-type": "application/json", **(headers or {})}
    if signature is not None:
        sent[SIG] = signature
    return await client.post(path, content=raw, headers=sent)


async def post_signed(
    client: httpx.AsyncClient, body: dict[str, Any], secret: str = SECRET, **kw: Any
) -> httpx.Response:
    raw = encode(body)
    return await post(client, raw, sign(raw, secret), **kw)


async def stream_messages(nats_url: str, subject: str, stream: str = "WEBHOOKS") -> list[bytes]:
    """Every message currently stored for ``subject``."""
    return await stored_bodies(nats_url, stream, subject)


# ---------------------------------------------------------------------------------------------
# The api in-process on the test infrastructure


def make_settings(infra: Infra, **overrides: Any) -> WebhooksSettings:
    values: dict[str, Any] = {
        "database_url": infra.database_url,
        "nats_url": infra.nats_url,
        "ipn_secret": SECRET,
        "ipn_secret_previous": PREVIOUS_SECRET,
        "log_json": False,
        "db_pool_size": 10,
        "outbox_sweep_seconds": 0.2,
    }
    values.update(overrides)
    return WebhooksSettings(**values)


@dataclass
class Gateway:
    app: Any
    ctx: ServiceContext
    client: httpx.AsyncClient


async def open_gateway(settings: WebhooksSettings) -> Gateway:
    ctx = build(settings)
    app = create_api(ctx)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    client = httpx.AsyncClient(transport=transport, base_url="http://webhooks.test")
    return Gateway(app, ctx, client)


async def close_gateway(gw: Gateway) -> None:
    await gw.client.aclose()
    await gw.app.state.store.close()
    await gw.ctx.close()
