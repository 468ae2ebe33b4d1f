"""Fulfillment events and the revoke command admin sends."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from shared.contracts import subjects
from shared.contracts.envelope import Event, Reply, Request


class OrderDelivered(Event):
    SUBJECT: ClassVar[str] = subjects.ORDER_DELIVERED

    order_id: str
    delivery_id: str
    item_count: int
    link_expires_at: datetime


class EmailSent(Event):
    SUBJECT: ClassVar[str] = subjects.EMAIL_SENT

    order_id: str
    template: str
    status: str  # sent | failed
    attempts: int
    recipient_masked: str  # e.g. c***@example.com — never the full address in events
    error: str | None = None


class GrantsRevoked(Event):
    SUBJECT: ClassVar[str] = subjects.GRANTS_REVOKED

    order_id: str
    revoked: int
    operator_id: str
    reason: str


class RevokeGrantsRequest(Request):
    SUBJECT: ClassVar[str] = subjects.REVOKE_GRANTS

    order_id: str
    operator_id: str
    reason: str = Field(min_length=1, max_length=500)


class RevokeGrantsReply(Reply):
    revoked: int = 0
