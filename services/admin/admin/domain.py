"""Pure rules of the admin context: roles, usernames, login throttling, public ids. No I/O."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from admin.errors import InvalidInputError


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"


def can_write(role: str) -> bool:
    return role == Role.OPERATOR


# Methods that change nothing; every other method on an /admin route needs an operator.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

OrderStatus = Literal[
    "created", "awaiting_payment", "paid", "fulfilled", "underpaid", "failed", "expired", "refunded"
]

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{2,63}$")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 hashes anything, but unbounded input is a DoS lever


def normalize_username(raw: str) -> str:
    """Usernames compare case-insensitively: ``Alice`` and ``alice`` are one operator."""
    return raw.strip().lower()


def validate_new_username(raw: str) -> str:
    name = normalize_username(raw)
    if not _USERNAME.fullmatch(name):
        raise InvalidInputError("username", "3-64 characters: letters, digits, '.', '_', '@', '-'")
    return name


def validate_new_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInputError("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInputError("password", f"must be at most {MAX_PASSWORD_LENGTH} characters")
    return password


def validate_role(raw: str) -> Role:
    try:
        return Role(raw)
    except ValueError:
        raise InvalidInputError("role", "must be 'viewer' or 'operator'") from None


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures: int
    window: timedelta


def retry_after_seconds(
    failures: Sequence[datetime], now: datetime, policy: ThrottlePolicy
) -> int | None:
    """Seconds until another attempt is allowed, or None when it is allowed now.

    ``failures`` are the failed attempts that still count (inside the window, after the last
    success). The lock lifts when fewer than ``max_failures`` remain inside the window, i.e. when
    the failure at position ``n - max`` (oldest first) leaves it.
    """
    recent = sorted(f for f in failures if f > now - policy.window)
    if len(recent) < policy.max_failures:
        return None
    pivot = recent[len(recent) - policy.max_failures]
    wait = (pivot + policy.window - now).total_seconds()
    return max(1, math.ceil(wait))


WebhookKind = Literal["accepted", "rejected"]


@dataclass(frozen=True)
class WebhookLogRef:
    """A public webhook-log id: ``a-<webhook_log_id>`` or ``r-<failure_id|event_id>``."""

    kind: WebhookKind
    key: str

    @property
    def public_id(self) -> str:
        return f"{self.kind[0]}-{self.key}"

    @property
    def webhook_log_id(self) -> int:
        if self.kind != "accepted":
            raise InvalidInputError("id", "only accepted webhooks have a webhook log id")
        return int(self.key)


def accepted_log_id(webhook_log_id: int) -> str:
    return f"a-{webhook_log_id}"


def rejected_log_id(failure_id: int | None, event_id: uuid.UUID) -> str:
    # A failure the gateway did not store (flood cap) has no id of its own; its event id is.
    return f"r-{failure_id}" if failure_id is not None else f"r-{event_id}"


def parse_webhook_log_id(raw: str) -> WebhookLogRef:
    prefix, _, key = raw.partition("-")
    if prefix == "a" and key.isdigit() and len(key) <= 19:
        return WebhookLogRef("accepted", str(int(key)))
    if prefix == "r" and key.isdigit() and len(key) <= 19:
        return WebhookLogRef("rejected", str(int(key)))
    if prefix == "r":
        try:
            return WebhookLogRef("rejected", str(uuid.UUID(key)))
        except ValueError:
            pass
    raise InvalidInputError("id", "expected 'a-<number>' (accepted) or 'r-<number>' (rejected)")


def durable_name(subject: str) -> str:
    """Durable consumer names may not contain dots: ``admin-payments-status_changed-v1``."""
    return "admin-" + subject.replace(".", "-").replace(">", "all").replace("*", "any")


def short_event_type(subject: str) -> str:
    """``orders.order_paid.v1`` → ``order_paid`` for timelines."""
    parts = subject.split(".")
    return parts[1] if len(parts) >= 2 else subject


# --- payments that need attention --------------------------------------------------------------

# Attention kinds that record an operator's own settle/attach: never open themselves, and they
# resolve every item of the same order raised before them.
RESOLVING_KINDS = ("settled_by_operator", "attached_by_operator")
# The kinds payments documents (``shared.contracts.payments.PaymentAttentionRaised``); the gauge
# reports each, at 0 too, so an alert on one kind does not depend on it having been seen.
KNOWN_ATTENTION_KINDS = (
    "late_money",
    "child_payment",
    "wrong_asset",
    "amount_discrepancy",
    "overpaid",
    "unknown_status",
    "cancelled",
    "refunded",
    "price_mismatch",
    "provider_refused",
)
AttentionState = Literal["open", "acknowledged", "resolved"]
# Payments stuck in a status no event will move on by itself, while their order is unpaid.
STUCK_PAYMENT_STATUSES = ("partially_paid", "mismatch")
SETTLED_ORDER_STATUSES = ("paid", "fulfilled")
