"""Events published by the webhooks gateway, and the reprocess command it answers."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import Field

from shared.contracts import subjects
from shared.contracts.envelope import Event, Reply, Request


class IpnReceived(Event):
    """A verified provider callback. The body is a hint; the provider's API is the truth."""

    SUBJECT: ClassVar[str] = subjects.IPN_RECEIVED

    webhook_log_id: int
    provider: str = "nowpayments"
    dedup_key: str
    payment_id: str | None = None  # provider ids are integers beyond 2^53: carried as text
    invoice_id: str | None = None
    order_id: str | None = None  # ours, echoed back by the provider
    payment_status: str
    price_amount: Decimal | None = None
    price_currency: str | None = None
    pay_amount: Decimal | None = None
    actually_paid: Decimal | None = None
    pay_currency: str | None = None
    outcome_amount: Decimal | None = None
    outcome_currency: str | None = None
    provider_updated_at: int | None = None  # epoch ms, as sent
    received_at: datetime
    payload: dict[str, Any] = Field(default_factory=dict)  # parsed body, numbers as text
    raw_body: str | None = None  # exactly as received (admin shows it); bounded by the 64 KiB cap
    headers: dict[str, str] = Field(default_factory=dict)  # secrets stripped
    replay: bool = False
    replayed_by: str | None = None
    replay_reason: str | None = None


class IpnRejected(Event):
    SUBJECT: ClassVar[str] = subjects.IPN_REJECTED

    failure_id: int | None  # None when the row was not stored (flood cap reached)
    provider: str = "nowpayments"
    reason: str
    source_ip: str | None = None
    received_at: datetime
    body_excerpt: str = ""
    dropped_since_last: int = 0


class ReprocessRequest(Request):
    SUBJECT: ClassVar[str] = subjects.REPROCESS

    webhook_log_id: int
    operator_id: str
    reason: str = Field(min_length=1, max_length=500)


class ReprocessReply(Reply):
    event_id: str | None = None
