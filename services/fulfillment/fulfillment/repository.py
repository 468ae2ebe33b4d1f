"""Every query of the fulfillment schema. Functions take the caller's session and never commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from fulfillment.models import (
    SCHEMA,
    Delivery,
    DeliveryItem,
    DownloadGrant,
    EmailLog,
    RateLimit,
    Refund,
)

EMAIL_CHANNEL = f"bitloot_email_{SCHEMA}"


async def lock_order(session: AsyncSession, order_id: str) -> None:
    """Serialise work on one order until the transaction ends (duplicates queue up here)."""
    await session.execute(
        select(func.pg_advisory_xact_lock(func.hashtextextended(f"delivery:{order_id}", 0)))
    )


async def delivery_for_order(session: AsyncSession, order_id: str) -> Delivery | None:
    result = await session.execute(select(Delivery).where(Delivery.order_id == order_id))
    return result.scalar_one_or_none()


async def insert_delivery(session: AsyncSession, delivery: Delivery) -> bool:
    """True if inserted; False if the order already has one (unique on order_id)."""
    result = await session.execute(
        insert(Delivery)
        .values(
            id=delivery.id,
            order_id=delivery.order_id,
            email=delivery.email,
            item_count=delivery.item_count,
            correlation_id=delivery.correlation_id,
            source_event_id=delivery.source_event_id,
        )
        .on_conflict_do_nothing(index_elements=[Delivery.order_id])
        .returning(Delivery.id)
    )
    return result.first() is not None


async def add_items(session: AsyncSession, items: Sequence[DeliveryItem]) -> None:
    session.add_all(items)
    await session.flush()


async def items_of(session: AsyncSession, delivery_id: uuid.UUID) -> list[DeliveryItem]:
    result = await session.execute(
        select(DeliveryItem)
        .where(DeliveryItem.delivery_id == delivery_id)
        .order_by(DeliveryItem.position)
    )
    return list(result.scalars())


async def add_grant(session: AsyncSession, grant: DownloadGrant) -> DownloadGrant:
    session.add(grant)
    await session.flush()
    return grant


async def get_grant(session: AsyncSession, grant_id: uuid.UUID) -> DownloadGrant | None:
    return await session.get(DownloadGrant, grant_id)


async def grant_with_delivery(
    session: AsyncSession, grant_id: uuid.UUID
) -> tuple[DownloadGrant, Delivery] | None:
    result = await session.execute(
        select(DownloadGrant, Delivery)
        .join(Delivery, Delivery.id == DownloadGrant.delivery_id)
        .where(DownloadGrant.id == grant_id)
    )
    row = result.first()
    return (row[0], row[1]) if row is not None else None


async def count_download(session: AsyncSession, grant_id: uuid.UUID) -> int | None:
    """Take one download from the grant if it still allows one; the new count, else None.

    One conditional UPDATE: two concurrent clicks on the last allowed download cannot both win.
    """
    result = await session.execute(
        update(DownloadGrant)
        .where(
            DownloadGrant.id == grant_id,
            DownloadGrant.revoked_at.is_(None),
            DownloadGrant.expires_at > func.now(),
            DownloadGrant.downloads < DownloadGrant.max_downloads,
        )
        .values(downloads=DownloadGrant.downloads + 1, last_download_at=func.now())
        .returning(DownloadGrant.downloads)
    )
    value = result.scalar_one_or_none()
    return int(value) if value is not None else None


async def revoke_grants(session: AsyncSession, order_id: str, reason: str) -> int:
    result = await session.execute(
        update(DownloadGrant)
        .where(DownloadGrant.order_id == order_id, DownloadGrant.revoked_at.is_(None))
        .values(revoked_at=func.now(), revoked_reason=reason)
        .returning(DownloadGrant.id)
    )
    return len(result.all())


async def mark_delivery_revoked(session: AsyncSession, delivery_id: uuid.UUID, reason: str) -> None:
    await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.revoked_at.is_(None))
        .values(revoked_at=func.now(), revoked_reason=reason)
    )


async def record_refund(
    session: AsyncSession, order_id: str, source_event_id: uuid.UUID, reason: str
) -> bool:
    """True the first time the order is recorded as refunded."""
    result = await session.execute(
        insert(Refund)
        .values(order_id=order_id, source_event_id=source_event_id, reason=reason)
        .on_conflict_do_nothing(index_elements=[Refund.order_id])
        .returning(Refund.order_id)
    )
    return result.first() is not None


async def is_refunded(session: AsyncSession, order_id: str) -> bool:
    result = await session.execute(select(Refund.order_id).where(Refund.order_id == order_id))
    return result.first() is not None


async def db_now(session: AsyncSession) -> datetime:
    value: datetime = (await session.execute(select(func.now()))).scalar_one()
    return value


# --- email log ---------------------------------------------------------------------------------


async def queue_email(
    session: AsyncSession,
    *,
    order_id: str,
    template: str,
    recipient: str,
    context: dict[str, Any],
    correlation_id: str | None,
    ref: str = "",
) -> bool:
    """Record an email to send; False when (order, template, ref) already has one."""
    result = await session.execute(
        insert(EmailLog)
        .values(
            order_id=order_id,
            template=template,
            ref=ref,
            recipient=recipient,
            context=context,
            correlation_id=correlation_id,
        )
        .on_conflict_do_nothing(constraint="uq_email_log_order_template_ref")
        .returning(EmailLog.id)
    )
    inserted = result.first() is not None
    if inserted:
        # Delivered at commit: the dispatcher wakes only for emails that really exist.
        await session.execute(select(func.pg_notify(EMAIL_CHANNEL, "")))
    return inserted


@dataclass(frozen=True)
class ClaimedEmail:
    id: int
    order_id: str
    template: str
    ref: str
    recipient: str
    context: dict[str, Any]
    correlation_id: str | None
    attempts: int
    created_at: datetime


async def claim_due_emails(
    session: AsyncSession, *, limit: int, lease: timedelta
) -> list[ClaimedEmail]:
    """Take due emails for this sender: counts the attempt and hides the row for ``lease``.

    SKIP LOCKED lets several workers share the queue; a sender that dies leaves its rows to
    reappear when the lease runs out.
    """
    due = (
        select(EmailLog.id)
        .where(EmailLog.status == "pending", EmailLog.next_attempt_at <= func.now())
        .order_by(EmailLog.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = await session.execute(
        update(EmailLog)
        .where(EmailLog.id.in_(due))
        .values(attempts=EmailLog.attempts + 1, next_attempt_at=func.now() + lease)
        .returning(
            EmailLog.id,
            EmailLog.order_id,
            EmailLog.template,
            EmailLog.ref,
            EmailLog.recipient,
            EmailLog.context,
            EmailLog.correlation_id,
            EmailLog.attempts,
            EmailLog.created_at,
        )
    )
    return [ClaimedEmail(*row) for row in result.all()]


async def mark_email_sent(
    session: AsyncSession, email_id: int, attempts: int, provider_message_id: str | None
) -> bool:
    # attempts in the WHERE: a sender whose lease ran out and was re-claimed must not win.
    result = await session.execute(
        update(EmailLog)
        .where(
            EmailLog.id == email_id,
            EmailLog.status == "pending",
            EmailLog.attempts == attempts,
        )
        .values(
            status="sent",
            sent_at=func.now(),
            last_error=None,
            provider_message_id=provider_message_id,
        )
        .returning(EmailLog.id)
    )
    return result.first() is not None


async def mark_email_failed_attempt(
    session: AsyncSession,
    email_id: int,
    attempts: int,
    *,
    error: str,
    retry_in: float | None,
) -> bool:
    """Schedule the next try, or (``retry_in`` None) give up for good."""
    values: dict[str, Any] = {"last_error": error[:1000]}
    if retry_in is None:
        values["status"] = "failed"
    else:
        values["next_attempt_at"] = func.now() + timedelta(seconds=retry_in)
    result = await session.execute(
        update(EmailLog)
        .where(
            EmailLog.id == email_id,
            EmailLog.status == "pending",
            EmailLog.attempts == attempts,
        )
        .values(**values)
        .returning(EmailLog.id)
    )
    return result.first() is not None


async def cancel_pending_emails(
    session: AsyncSession, order_id: str, templates: Sequence[str], reason: str
) -> list[ClaimedEmail]:
    """Give up on the order's unsent emails of these templates (terminal, like a failure).

    A row a sender holds right now may still go out: its ``mark_email_sent`` then finds the
    row no longer pending and records nothing.
    """
    result = await session.execute(
        update(EmailLog)
        .where(
            EmailLog.order_id == order_id,
            EmailLog.template.in_(list(templates)),
            EmailLog.status == "pending",
        )
        .values(status="failed", last_error=reason[:1000])
        .returning(
            EmailLog.id,
            EmailLog.order_id,
            EmailLog.template,
            EmailLog.ref,
            EmailLog.recipient,
            EmailLog.context,
            EmailLog.correlation_id,
            EmailLog.attempts,
            EmailLog.created_at,
        )
    )
    return [ClaimedEmail(*row) for row in result.all()]


async def emails_for_order(session: AsyncSession, order_id: str) -> list[EmailLog]:
    result = await session.execute(
        select(EmailLog).where(EmailLog.order_id == order_id).order_by(EmailLog.id)
    )
    return list(result.scalars())


# --- rate limits -------------------------------------------------------------------------------


async def take_token(session: AsyncSession, key: str, *, capacity: int, per_second: float) -> bool:
    """Token bucket in one statement: refill by elapsed time, then take one if there is one.

    ON CONFLICT ... WHERE leaves the row untouched (and returns nothing) when the bucket is
    empty; the row lock makes concurrent requests for one key count one after another.
    """
    table = RateLimit.__table__
    refilled = func.least(
        literal(float(capacity)),
        table.c.tokens
        + func.extract("epoch", func.now() - table.c.updated_at) * literal(per_second),
    )
    first = insert(RateLimit).values(key=key, tokens=float(capacity) - 1.0, updated_at=func.now())
    stmt = first.on_conflict_do_update(
        index_elements=[RateLimit.key],
        set_={"tokens": refilled - 1.0, "updated_at": func.now()},
        where=refilled >= 1.0,
    ).returning(RateLimit.key)
    result = await session.execute(stmt)
    return result.first() is not None


async def prune_rate_limits(session: AsyncSession, *, older_than: timedelta) -> int:
    """Buckets untouched this long are full again; dropping them changes nothing."""
    result = await session.execute(
        delete(RateLimit)
        .where(RateLimit.updated_at < func.now() - older_than)
        .returning(RateLimit.key)
    )
    return len(result.all())


async def table_counts(session: AsyncSession) -> dict[str, int]:
    """Rows per table, for tests and the README's figures."""
    counts = {}
    for model in (Delivery, DeliveryItem, DownloadGrant, EmailLog):
        counts[model.__tablename__] = int(
            (await session.execute(select(func.count()).select_from(model))).scalar_one()
        )
    return counts
