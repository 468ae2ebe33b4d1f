"""Use cases of the webhooks gateway. None of them commits: the IPN statements are single
atomic statements (see repository), and the replay runs in the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic_core import PydanticSerializationError
from shared.contracts.webhooks import IpnReceived, IpnRejected, ReprocessRequest
from shared.messaging import add_to_outbox
from sqlalchemy.ext.asyncio import AsyncSession

from webhooks import repository
from webhooks.domain import (
    PROVIDER,
    FailureBudget,
    IpnFields,
    body_excerpt,
    read_ipn,
    verify_signature,
)
from webhooks.errors import IpnRejectedError, ReplayUnavailableError
from webhooks.models import Outbox
from webhooks.repository import FailureRow, IngestResult, IpnStore, LogRow, stage_event

EVENT_BODY_EXCERPT_CHARS = 512


@dataclass(frozen=True, slots=True)
class InboundIpn:
    """One HTTP delivery as the api read it (headers already stripped of secrets)."""

    body: bytes
    signature: str | None
    headers: dict[str, str]
    source_ip: str | None
    received_at: datetime
    correlation_id: str | None = None
    declared_size: int | None = None  # Content-Length, when the body was refused unread
    event_id: uuid.UUID | None = None  # for the event this delivery publishes, if new


@dataclass(frozen=True, slots=True)
class Accepted:
    stored: IngestResult
    verified_by: str  # raw|canonical / current|previous


def received_event(
    fields: IpnFields,
    *,
    log_id: int,
    raw_body: str,
    headers: dict[str, str],
    received_at: datetime,
    correlation_id: str | None,
    replayed_by: str | None = None,
    replay_reason: str | None = None,
    event_id: uuid.UUID | None = None,
) -> IpnReceived:
    # Built without validation: every value is already typed and bounded by IpnFields, and
    # validating the model again cost about a tenth of the hot path. ``model_construct`` itself
    # spent ~10 µs walking every field's aliases and defaults; the values here are complete
    # (a unit test holds them to the model's field list), so the instance is assembled the way
    # model_construct finishes one.
    event_id = event_id or uuid.uuid4()
    values: dict[str, Any] = {
        "event_id": event_id,
        "occurred_at": datetime.now(UTC),
        # A delivery that brought no correlation id starts a new chain named after its event.
        "correlation_id": correlation_id or str(event_id),
        "causation_id": None,
        "webhook_log_id": log_id,
        "provider": PROVIDER,
        "dedup_key": fields.dedup_key,
        "payment_id": fields.payment_id,
        "invoice_id": fields.invoice_id,
        "order_id": fields.order_id,
        "payment_status": fields.payment_status,
        "price_amount": fields.price_amount,
        "price_currency": fields.price_currency,
        "pay_amount": fields.pay_amount,
        "actually_paid": fields.actually_paid,
        "pay_currency": fields.pay_currency,
        "outcome_amount": fields.outcome_amount,
        "outcome_currency": fields.outcome_currency,
        "provider_updated_at": fields.updated_at,
        "received_at": received_at,
        "payload": fields.document,
        "raw_body": raw_body,
        "headers": headers,
        "replay": replayed_by is not None,
        "replayed_by": replayed_by,
        "replay_reason": replay_reason,
    }
    return _assemble(IpnReceived, values)


def _assemble(model: type[IpnReceived], values: dict[str, Any]) -> IpnReceived:
    """An instance holding ``values`` as they are (what ``model_construct`` ends with)."""
    event = model.__new__(model)
    object.__setattr__(event, "__dict__", values)
    object.__setattr__(event, "__pydantic_fields_set__", set(values))
    object.__setattr__(event, "__pydantic_extra__", None)
    object.__setattr__(event, "__pydantic_private__", None)
    return event


async def ingest_ipn(store: IpnStore, keys: Sequence[bytes], ipn: InboundIpn) -> Accepted:
    """Verify, then store once per dedup key with its IpnReceived staged in the outbox.

    Raises IpnRejectedError (4xx, nothing stored here) or DatabaseUnavailableError (503).
    """
    verified = verify_signature(ipn.body, ipn.signature, keys)
    fields = read_ipn(ipn.body, verified.document)
    event = received_event(
        fields,
        log_id=0,  # spliced in by the insert
        raw_body=ipn.body.decode("utf-8"),  # read_ipn proved it is UTF-8
        headers=ipn.headers,
        received_at=ipn.received_at,
        correlation_id=ipn.correlation_id,
        event_id=ipn.event_id,
    )
    try:
        staged = stage_event(event, "webhook_log_id")
    except PydanticSerializationError:
        # Only an escaped lone surrogate ("\ud800") can get this far; no real IPN has one.
        raise IpnRejectedError(
            "invalid_payload", "body contains text that is not valid Unicode"
        ) from None
    row = LogRow(
        provider=PROVIDER,
        dedup_key=fields.dedup_key,
        payment_id=fields.payment_id,
        invoice_id=fields.invoice_id,
        order_id=fields.order_id,
        payment_status=fields.payment_status,
        actually_paid=fields.actually_paid,
        provider_updated_at=fields.updated_at,
        signature=verified.signature,
        verified_by=verified.label,
        raw_body=ipn.body,
        headers=ipn.headers,
        source_ip=ipn.source_ip,
        received_at=ipn.received_at,
    )
    return Accepted(await store.ingest(row, staged), verified.label)


async def record_rejection(
    store: IpnStore,
    budget: FailureBudget,
    rejection: IpnRejectedError,
    ipn: InboundIpn,
    *,
    excerpt_bytes: int,
) -> int | None:
    """Keep a capped record of a rejected request and announce it. Returns the row id, or None
    when the flood cap swallowed it. A database fault is re-raised after the row is counted
    as dropped; the caller still answers with the rejection, never a 503."""
    reported = budget.take()
    if reported is None:
        return None
    size = ipn.declared_size if ipn.declared_size is not None else len(ipn.body)
    event = IpnRejected(
        **({"correlation_id": ipn.correlation_id} if ipn.correlation_id else {}),
        failure_id=0,  # spliced in by the insert
        provider=PROVIDER,
        reason=rejection.reason,
        source_ip=ipn.source_ip,
        received_at=ipn.received_at,
        body_excerpt=body_excerpt(ipn.body, EVENT_BODY_EXCERPT_CHARS),
        dropped_since_last=reported,
    )
    row = FailureRow(
        provider=PROVIDER,
        reason=rejection.reason,
        detail=rejection.detail[:300],
        headers=ipn.headers,
        body_excerpt=ipn.body[:excerpt_bytes],
        body_size=size,
        source_ip=ipn.source_ip,
        dropped_before=reported,
        received_at=ipn.received_at,
    )
    try:
        return await store.record_failure(row, stage_event(event, "failure_id"))
    except Exception:
        budget.give_back(reported)
        raise


async def reprocess(session: AsyncSession, request: ReprocessRequest) -> IpnReceived | None:
    """Re-publish a stored IPN as a NEW IpnReceived marked as a replay (None: unknown id).

    The body was verified when it arrived and is read again exactly as stored, so a replay
    carries the same content as the original under a new event id.
    """
    stored = await repository.get_log(session, request.webhook_log_id)
    if stored is None:
        return None
    try:
        fields = read_ipn(stored.raw_body)
    except IpnRejectedError as exc:
        raise ReplayUnavailableError(exc.detail) from exc
    event = received_event(
        fields,
        log_id=stored.id,
        raw_body=stored.raw_body.decode("utf-8"),
        headers=dict(stored.headers or {}),
        received_at=stored.received_at,
        correlation_id=request.correlation_id,
        replayed_by=request.operator_id,
        replay_reason=request.reason,
    )
    await add_to_outbox(session, Outbox, event)
    await repository.mark_replayed(session, stored.id)
    return event
