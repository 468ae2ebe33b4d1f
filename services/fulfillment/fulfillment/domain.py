"""Pure fulfillment rules: licence generation, object keys, grant checks, email policy.

Nothing here does I/O, so every rule is tested with plain values.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

LICENCE_GROUPS = 5
LICENCE_GROUP_LEN = 5
MAX_ITEMS_PER_ORDER = 100
MAX_QUANTITY_PER_ITEM = 1000
MAX_ORDER_ID_LENGTH = 64
MAX_SKU_LENGTH = 100
MAX_TITLE_LENGTH = 200
MAX_EMAIL_LENGTH = 320

# Templates and whether a second email of the same kind may be sent for one order.
TEMPLATE_ORDER_COMPLETED = "order_completed"
TEMPLATE_UNDERPAID = "underpaid"
TEMPLATE_PAYMENT_FAILED = "payment_failed"
TEMPLATE_PAYMENT_EXPIRED = "payment_expired"
TEMPLATE_REISSUE = "reissue"
TEMPLATE_PAYMENT_REFUNDED = "payment_refunded"
TEMPLATES = frozenset(
    {
        TEMPLATE_ORDER_COMPLETED,
        TEMPLATE_UNDERPAID,
        TEMPLATE_PAYMENT_FAILED,
        TEMPLATE_PAYMENT_EXPIRED,
        TEMPLATE_REISSUE,
        TEMPLATE_PAYMENT_REFUNDED,
    }
)
# Emails carrying a download link: not worth sending once the payment was refunded.
LINK_TEMPLATES = (TEMPLATE_ORDER_COMPLETED, TEMPLATE_REISSUE)

# A refund revokes grants like an operator would; this names who did it (events, audit).
REFUND_OPERATOR = "system:refund"
REFUND_REASON = "payment refunded"


class UndeliverableOrderError(ValueError):
    """The paid order cannot be turned into goods (no items, absurd quantity)."""


@dataclass(frozen=True)
class LineToDeliver:
    position: int  # 1-based place of the line in the order
    sku: str
    title: str
    quantity: int


def licence_key_material(secret: bytes) -> bytes:
    """A key used only for licences, so a download token never equals licence input."""
    return hmac.new(secret, b"bitloot/licence/v1", hashlib.sha256).digest()


def licence_key(material: bytes, order_id: str, position: int, sku: str, unit: int) -> str:
    """``XXXXX-XXXXX-XXXXX-XXXXX-XXXXX`` from an HMAC: same inputs, same key, forever."""
    message = "\x1f".join((order_id, str(position), sku, str(unit))).encode()
    digest = hmac.new(material, message, hashlib.sha256).digest()
    text = base64.b32encode(digest).decode().rstrip("=")
    # Base32 has no 0/1/8/9, so keys never mix O with 0 or I with 1 when read aloud.
    chars = text[: LICENCE_GROUPS * LICENCE_GROUP_LEN]
    return "-".join(
        chars[i : i + LICENCE_GROUP_LEN] for i in range(0, len(chars), LICENCE_GROUP_LEN)
    )


def licence_keys(material: bytes, order_id: str, line: LineToDeliver) -> list[str]:
    return [
        licence_key(material, order_id, line.position, line.sku, unit)
        for unit in range(1, line.quantity + 1)
    ]


def licence_file(material: bytes, order_id: str, line: LineToDeliver) -> bytes:
    """The object's bytes. No timestamps: a retry or a regeneration writes identical bytes."""
    keys = licence_keys(material, order_id, line)
    lines = [
        "BitLoot licence",
        f"Order: {order_id}",
        f"Item: {line.title} ({line.sku})",
        f"Quantity: {line.quantity}",
        "",
        *keys,
        "",
    ]
    return "\n".join(lines).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _slug(value: str, limit: int) -> str:
    slug = _UNSAFE.sub("-", value).strip("-.")[:limit]
    return slug or "x"


def object_key(prefix: str, order_id: str, line: LineToDeliver) -> str:
    """Deterministic key. A short hash of the raw ids keeps two ids that slug alike apart."""
    tag = hashlib.sha256(f"{order_id}\x1f{line.sku}".encode()).hexdigest()[:10]
    return (
        f"{prefix.strip('/')}/{_slug(order_id, 64)}/"
        f"{line.position:03d}-{_slug(line.sku, 48)}-{tag}.txt"
    )


def download_filename(line: LineToDeliver) -> str:
    return f"{_slug(line.sku, 48)}-licence.txt"


def lines_to_deliver(
    order_id: str, email: str, items: list[tuple[str, str, int]]
) -> list[LineToDeliver]:
    """Validate a paid order and number its lines (sku, title, quantity).

    Titles are cut to what the item row stores, before the file is made: a regenerated file
    must come out of the stored row byte for byte.
    """
    if not order_id or len(order_id) > MAX_ORDER_ID_LENGTH:
        raise UndeliverableOrderError("order id is empty or too long")
    if "@" not in email or len(email) > MAX_EMAIL_LENGTH:
        raise UndeliverableOrderError("order has no usable email address")
    if not items:
        raise UndeliverableOrderError("order has no items")
    if len(items) > MAX_ITEMS_PER_ORDER:
        raise UndeliverableOrderError(f"order has more than {MAX_ITEMS_PER_ORDER} items")
    lines = []
    for position, (sku, title, quantity) in enumerate(items, start=1):
        if not 1 <= quantity <= MAX_QUANTITY_PER_ITEM:
            raise UndeliverableOrderError(f"item {position} has quantity {quantity}")
        if not sku or len(sku) > MAX_SKU_LENGTH:
            raise UndeliverableOrderError(f"item {position} has an empty or too long sku")
        lines.append(LineToDeliver(position, sku, title[:MAX_TITLE_LENGTH], quantity))
    return lines


class GrantState(StrEnum):
    OK = "ok"
    EXPIRED = "expired"
    REVOKED = "revoked"
    EXHAUSTED = "exhausted"


def grant_state(
    *,
    now: datetime,
    expires_at: datetime,
    revoked_at: datetime | None,
    downloads: int,
    max_downloads: int,
) -> GrantState:
    """Why a grant does (not) allow a download. Revocation wins over everything else."""
    if revoked_at is not None:
        return GrantState.REVOKED
    if now >= expires_at:
        return GrantState.EXPIRED
    if downloads >= max_downloads:
        return GrantState.EXHAUSTED
    return GrantState.OK


def email_backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones: base, 2x, 4x... up to cap."""
    exponent = max(attempts - 1, 0)
    return float(min(cap, base * (2 ** min(exponent, 30))))


def mask_email(address: str) -> str:
    """``c***@example.com``: enough to recognise, not enough to harvest."""
    local, sep, domain = address.partition("@")
    if not sep:
        return "***"
    return f"{local[:1]}***@{domain}"


def same_email(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def normalize_order_id(order_id: str) -> str:
    return order_id.strip()
