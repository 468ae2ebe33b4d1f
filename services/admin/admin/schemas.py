"""Request and response bodies of the admin API (the admin console codes against these)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

T = TypeVar("T")


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class LoginOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    role: str
    username: str


class MeOut(BaseModel):
    id: str
    username: str
    role: str


class OkOut(BaseModel):
    ok: bool
    message: str


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be blank")
        return value


class ActionOut(BaseModel):
    ok: bool
    message: str
    error_code: str | None = None
    audit_id: int


class ReprocessOut(ActionOut):
    event_id: str | None = None


class RevokeOut(ActionOut):
    revoked: int = 0


class PaymentOut(Out):
    payment_id: uuid.UUID
    order_id: str
    provider: str
    provider_payment_id: str | None
    invoice_id: str | None
    status: str
    previous_status: str
    is_final: bool
    source: str
    version: int
    price_amount: Decimal
    price_currency: str
    pay_amount: Decimal | None
    actually_paid: Decimal | None
    pay_currency: str | None
    surplus: Decimal | None
    note: str | None
    created_at: datetime
    updated_at: datetime


class TransitionOut(Out):
    event_id: uuid.UUID
    payment_id: uuid.UUID
    provider_payment_id: str | None
    invoice_id: str | None
    previous_status: str
    status: str
    source: str
    version: int
    is_final: bool
    actually_paid: Decimal | None
    note: str | None
    occurred_at: datetime
    causation_id: str | None


class PaymentDetailOut(PaymentOut):
    transitions: list[TransitionOut]


class OrderOut(Out):
    order_id: str
    status: str
    version: int
    email: str
    total: Decimal
    currency: str
    payment_id: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime


class OrderEventOut(Out):
    event_id: uuid.UUID
    event_type: str
    status: str
    version: int
    occurred_at: datetime
    detail: dict[str, Any]


class DeliveryOut(Out):
    delivery_id: str
    order_id: str
    item_count: int
    link_expires_at: datetime
    delivered_at: datetime


class EmailOut(Out):
    event_id: uuid.UUID
    order_id: str
    template: str
    status: str
    attempts: int
    recipient_masked: str
    error: str | None
    occurred_at: datetime


class RevocationOut(Out):
    event_id: uuid.UUID
    order_id: str
    revoked: int
    operator_id: str
    reason: str
    occurred_at: datetime


class OrderDetailOut(OrderOut):
    items: list[dict[str, Any]] | None
    actually_paid: Decimal | None
    pay_amount: Decimal | None
    pay_currency: str | None
    events: list[OrderEventOut]
    payments: list[PaymentOut]
    deliveries: list[DeliveryOut]
    emails: list[EmailOut]
    revocations: list[RevocationOut]


class WebhookLogOut(Out):
    id: str
    kind: Literal["accepted", "rejected"]
    accepted: bool
    provider: str
    webhook_log_id: int | None
    failure_id: int | None
    external_id: str | None
    payment_id: str | None
    invoice_id: str | None
    order_id: str | None
    event_type: str | None
    payment_status: str | None
    actually_paid: Decimal | None
    pay_currency: str | None
    received_at: datetime
    reason: str | None
    source_ip: str | None
    received_count: int
    replay_count: int


class PublicationOut(Out):
    event_id: uuid.UUID
    replay: bool
    replayed_by: str | None
    replay_reason: str | None
    occurred_at: datetime


class CausedTransitionOut(TransitionOut):
    caused_by_this: bool


class CausedOut(BaseModel):
    """What the callback led to: its publications, and the payment state it touched."""

    publications: list[PublicationOut]
    payments: list[PaymentOut]
    transitions: list[CausedTransitionOut]


class WebhookLogDetailOut(WebhookLogOut):
    dedup_key: str | None
    price_amount: Decimal | None
    price_currency: str | None
    pay_amount: Decimal | None
    provider_updated_at: int | None
    raw_body: str | None
    headers: dict[str, str]
    payload: dict[str, Any]
    body_excerpt: str | None
    dropped_since_last: int
    can_reprocess: bool
    caused: CausedOut


class DeadLetterOut(Out):
    id: str
    consumer: str
    stream_sequence: int
    original_subject: str
    deliveries: int
    error: str
    event_id: str | None
    body: str
    dead_lettered_at: datetime


class AuditOut(Out):
    id: int
    occurred_at: datetime
    completed_at: datetime | None
    actor_id: str | None
    actor_username: str | None
    action: str
    target_type: str | None
    target_id: str | None
    reason: str | None
    outcome: str
    detail: dict[str, Any]
    ip: str | None


# --- payments that need attention --------------------------------------------------------------


class AttentionDecisionOut(Out):
    state: str
    actor_username: str | None
    reason: str | None
    audit_id: int | None
    decided_at: datetime


class AttentionItemOut(BaseModel):
    payment_id: uuid.UUID
    key: str
    order_id: str
    kind: str
    detail: str
    provider_payment_id: str | None
    parent_payment_id: str | None
    provider_status: str | None
    payment_status: str | None
    amount: Decimal | None
    currency: str | None
    raised_at: datetime
    age_seconds: int
    state: Literal["open", "acknowledged", "resolved"]
    decision: AttentionDecisionOut | None
    order_status: str | None  # None: admin has not seen the order yet
    order_total: Decimal | None
    order_currency: str | None


class StuckOut(BaseModel):
    kind: str  # payment_partially_paid | payment_mismatch | order_underpaid
    order_id: str
    order_status: str | None
    payment_id: str | None
    payment_status: str | None
    price_amount: Decimal | None
    price_currency: str | None
    pay_amount: Decimal | None
    actually_paid: Decimal | None
    pay_currency: str | None
    since: datetime
    age_seconds: int


class DeadLetterSectionOut(BaseModel):
    total: int
    items: list[DeadLetterOut]  # the newest few
    href: str


class StuckSectionOut(BaseModel):
    total: int
    items: list[StuckOut]  # the newest few
    href: str


class NeedsAttentionCountsOut(BaseModel):
    total: int  # open attention items + dead letters + stuck
    attention: int
    dead_letters: int
    stuck: int
    by_kind: dict[str, int]  # the gauge's labels and values


class NeedsAttentionOut(PageOut[AttentionItemOut]):
    counts: NeedsAttentionCountsOut
    dead_letters: DeadLetterSectionOut
    stuck: StuckSectionOut


class AcknowledgeIn(ReasonIn):
    key: str = Field(min_length=1, max_length=120)


class AcknowledgeOut(ActionOut):
    state: str


class SettleIn(ReasonIn):
    pass


class AttachIn(ReasonIn):
    provider_payment_id: str = Field(
        pattern=r"^[0-9]{1,32}$", description="the NOWPayments payment_id, digits only"
    )

    @field_validator("provider_payment_id", mode="before")
    @classmethod
    def _trim(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value


class PaymentActionOut(ActionOut):
    action_id: uuid.UUID
    payment_id: str | None = None
    status: str | None = None
    changed: bool = False
    retryable: bool = False
    replayed: bool = False  # the stored answer to an earlier submit with the same key
    resolved: int = 0  # attention items of the order this action resolved
