"""Fulfillment use cases. They take the caller's session and never commit: the boundary does.

Exactly once, step by step, for a paid order:
1. an advisory lock on the order serialises duplicates (same or different event ids);
2. a delivery row already there means the work is done: return;
3. every item is uploaded under a deterministic key, skipped when the same bytes are there;
4. delivery, items, the first grant, a *pending* email row and the OrderDelivered outbox row are
   written in the one transaction the consumer commits with its inbox row.
Sending the email happens later, outside that transaction (``jobs.EmailDispatcher``), so a
slow or failing mail server never holds back a delivery.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.contracts.fulfillment import (
    EmailSent,
    GrantsRevoked,
    OrderDelivered,
    RevokeGrantsRequest,
)
from shared.contracts.orders import OrderEvent, OrderPaid, OrderRefunded
from shared.messaging import add_to_outbox
from shared.money import amount_text
from shared.observability import get_logger
from sqlalchemy.ext.asyncio import AsyncSession

from fulfillment import domain, emails
from fulfillment import repository as repo
from fulfillment.emails import EmailBackend, OutgoingEmail
from fulfillment.errors import LicenceMismatchError, UnknownOrderError
from fulfillment.links import LinkSigner, TokenProblem
from fulfillment.models import Delivery, DeliveryItem, DownloadGrant, Outbox
from fulfillment.repository import ClaimedEmail
from fulfillment.settings import FulfillmentSettings
from fulfillment.storage import ObjectStore

log = get_logger(__name__)

# The token's own age limit sits a little above the grant's: the row decides, the token only
# caps how long a leaked or forged-row link could ever live.
TOKEN_AGE_SLACK_SECONDS = 3600


@dataclass
class FaultHooks:
    """Test seams awaited at fixed points, so a test can pause or "kill" the worker there."""

    before_lock: Callable[[str], Awaitable[None]] | None = None
    after_upload: Callable[[str], Awaitable[None]] | None = None
    before_send: Callable[[ClaimedEmail], Awaitable[None]] | None = None


@dataclass
class Fulfillment:
    """The collaborators every use case needs, built once per process."""

    settings: FulfillmentSettings
    store: ObjectStore
    signer: LinkSigner
    mailer: EmailBackend
    licence_material: bytes
    hooks: FaultHooks = field(default_factory=FaultHooks)

    @classmethod
    def from_settings(
        cls,
        settings: FulfillmentSettings,
        *,
        store: ObjectStore | None = None,
        mailer: EmailBackend | None = None,
    ) -> Fulfillment:
        settings.check()
        secret = settings.token_secret().get_secret_value()
        return cls(
            settings=settings,
            store=store or ObjectStore.from_settings(settings),
            signer=LinkSigner(
                secret, max_age_seconds=settings.link_ttl_seconds + TOKEN_AGE_SLACK_SECONDS
            ),
            mailer=mailer or emails.make_backend(settings),
            licence_material=domain.licence_key_material(secret.encode()),
        )

    @property
    def public_url(self) -> str:
        return self.settings.public_url.rstrip("/")

    @property
    def reissue_url(self) -> str:
        return f"{self.public_url}/downloads/reissue"

    def link_for(self, grant_id: uuid.UUID, issued_at: datetime) -> str:
        return f"{self.public_url}/downloads/{self.signer.token_for(grant_id, issued_at=issued_at)}"


# --- delivery ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryOutcome:
    order_id: str
    delivery_id: uuid.UUID | None  # None: refunded before it was delivered, nothing made
    created: bool
    uploaded: int = 0


async def deliver_paid_order(
    session: AsyncSession, f: Fulfillment, event: OrderPaid
) -> DeliveryOutcome:
    order_id = event.order_id
    if f.hooks.before_lock is not None:
        await f.hooks.before_lock(order_id)
    await repo.lock_order(session, order_id)
    existing = await repo.delivery_for_order(session, order_id)
    if existing is not None:
        return DeliveryOutcome(order_id, existing.id, created=False)
    if await repo.is_refunded(session, order_id):
        # The refund was handled first (the consumers race): the goods are never handed out.
        log.warning("paid_order_already_refunded", order_id=order_id)
        return DeliveryOutcome(order_id, None, created=False)

    lines = domain.lines_to_deliver(
        order_id, event.email, [(i.sku, i.title, i.quantity) for i in event.items]
    )
    files = [
        (
            line,
            domain.object_key(f.settings.s3_key_prefix, order_id, line),
            domain.licence_file(f.licence_material, order_id, line),
        )
        for line in lines
    ]
    results = await asyncio.gather(*(f.store.put_if_changed(key, data) for _, key, data in files))
    uploaded = sum(1 for r in results if r.uploaded)
    if f.hooks.after_upload is not None:
        await f.hooks.after_upload(order_id)

    now = await repo.db_now(session)
    delivery = Delivery(
        id=uuid.uuid4(),
        order_id=order_id,
        email=event.email,
        item_count=len(lines),
        correlation_id=event.correlation_id,
        source_event_id=event.event_id,
    )
    if not await repo.insert_delivery(session, delivery):
        # Unreachable under the lock; the unique key still decides if the lock is ever bypassed.
        again = await repo.delivery_for_order(session, order_id)
        assert again is not None
        return DeliveryOutcome(order_id, again.id, created=False)
    await repo.add_items(
        session,
        [
            DeliveryItem(
                delivery_id=delivery.id,
                position=line.position,
                sku=line.sku,
                title=line.title,
                quantity=line.quantity,
                object_key=key,
                sha256=domain.sha256_hex(data),
                size_bytes=len(data),
            )
            for line, key, data in files
        ],
    )
    grant = await _new_grant(session, f, delivery, kind="initial", now=now)
    await repo.queue_email(
        session,
        order_id=order_id,
        template=domain.TEMPLATE_ORDER_COMPLETED,
        recipient=event.email,
        context=_link_context(grant, lines),
        correlation_id=event.correlation_id,
    )
    await add_to_outbox(
        session,
        Outbox,
        OrderDelivered(
            order_id=order_id,
            delivery_id=str(delivery.id),
            item_count=len(lines),
            link_expires_at=grant.expires_at,
            **event.caused(),
        ),
    )
    log.info("order_delivered", order_id=order_id, items=len(lines), uploaded=uploaded)
    return DeliveryOutcome(order_id, delivery.id, created=True, uploaded=uploaded)


async def _new_grant(
    session: AsyncSession,
    f: Fulfillment,
    delivery: Delivery,
    *,
    kind: str,
    now: datetime,
    item_count: int | None = None,
) -> DownloadGrant:
    items = item_count if item_count is not None else delivery.item_count
    grant = DownloadGrant(
        id=uuid.uuid4(),
        delivery_id=delivery.id,
        order_id=delivery.order_id,
        kind=kind,
        created_at=now,
        expires_at=now + timedelta(seconds=f.settings.link_ttl_seconds),
        # The cap is per item: a three-item order allows three times as many fetches.
        max_downloads=f.settings.download_cap * max(items, 1),
        downloads=0,
    )
    return await repo.add_grant(session, grant)


def _link_context(grant: DownloadGrant, lines: list[domain.LineToDeliver]) -> dict[str, Any]:
    return {
        "grant_id": str(grant.id),
        "issued_at": grant.created_at.isoformat(),
        "expires_at": grant.expires_at.isoformat(),
        "max_downloads": grant.max_downloads,
        "items": [{"title": line.title, "quantity": line.quantity} for line in lines],
    }


# --- notices -----------------------------------------------------------------------------------


async def queue_notice(
    session: AsyncSession, event: OrderEvent, template: str, context: dict[str, Any]
) -> bool:
    """One email per (order, template); False when a redelivery finds it already queued."""
    if len(event.order_id) > domain.MAX_ORDER_ID_LENGTH or len(event.email) > 320:
        raise domain.UndeliverableOrderError("order id or email too long to record")
    return await repo.queue_email(
        session,
        order_id=event.order_id,
        template=template,
        recipient=event.email,
        context=context,
        correlation_id=event.correlation_id,
    )


def amount_or_none(value: Any) -> str | None:
    return amount_text(value) if value is not None else None


# --- revocation --------------------------------------------------------------------------------


async def revoke_order_grants(session: AsyncSession, request: RevokeGrantsRequest) -> int:
    await repo.lock_order(session, request.order_id)
    delivery = await repo.delivery_for_order(session, request.order_id)
    if delivery is None:
        raise UnknownOrderError(f"no delivery for order {request.order_id}")
    envelope = {"correlation_id": request.correlation_id} if request.correlation_id else {}
    return await _revoke_delivery(
        session,
        delivery,
        operator_id=request.operator_id,
        reason=request.reason,
        envelope=envelope,
    )


async def _revoke_delivery(
    session: AsyncSession,
    delivery: Delivery,
    *,
    operator_id: str,
    reason: str,
    envelope: dict[str, str],
) -> int:
    """Every live grant of the order revoked; the caller holds the order's lock."""
    reason = reason[:500]
    revoked = await repo.revoke_grants(session, delivery.order_id, reason)
    # Also on the delivery: a reissue must not hand out a fresh link after that.
    await repo.mark_delivery_revoked(session, delivery.id, reason)
    if revoked:
        await add_to_outbox(
            session,
            Outbox,
            GrantsRevoked(
                order_id=delivery.order_id,
                revoked=revoked,
                operator_id=operator_id,
                reason=reason,
                **envelope,
            ),
        )
    log.info("grants_revoked", order_id=delivery.order_id, revoked=revoked, operator_id=operator_id)
    return revoked


@dataclass(frozen=True)
class RefundOutcome:
    order_id: str
    first: bool  # False: this refund was already handled (a republish)
    delivered: bool  # the goods had been handed out (their links are revoked now)
    revoked: int
    cancelled_emails: int = 0


async def withdraw_refunded_order(session: AsyncSession, event: OrderRefunded) -> RefundOutcome:
    """A refunded order's goods are withdrawn: links revoked, never delivered afterwards, one
    honest email. Under the order's lock, so it serialises with a delivery of the same order."""
    order_id = event.order_id
    if len(order_id) > domain.MAX_ORDER_ID_LENGTH or len(event.email) > domain.MAX_EMAIL_LENGTH:
        raise domain.UndeliverableOrderError("order id or email too long to record")
    await repo.lock_order(session, order_id)
    first = await repo.record_refund(
        session, order_id, event.event_id, (event.reason or domain.REFUND_REASON)[:500]
    )
    delivery = await repo.delivery_for_order(session, order_id)
    revoked = 0
    if delivery is not None:
        revoked = await _revoke_delivery(
            session,
            delivery,
            operator_id=domain.REFUND_OPERATOR,
            reason=domain.REFUND_REASON,
            envelope=event.caused(),
        )
    # A link email still waiting (mail server down) would arrive with a dead link after this.
    cancelled = await repo.cancel_pending_emails(
        session, order_id, domain.LINK_TEMPLATES, "cancelled: the payment was refunded"
    )
    for email in cancelled:
        await add_to_outbox(
            session, Outbox, _email_event(email, "failed", "cancelled: the payment was refunded")
        )
    await repo.queue_email(
        session,
        order_id=order_id,
        template=domain.TEMPLATE_PAYMENT_REFUNDED,
        # Like a reissue: to the address the goods went to, when they went anywhere.
        recipient=delivery.email if delivery is not None else event.email,
        context={"delivered": delivery is not None},
        correlation_id=event.correlation_id,
    )
    log.info(
        "refunded_order_withdrawn",
        order_id=order_id,
        first=first,
        delivered=delivery is not None,
        revoked=revoked,
        cancelled_emails=len(cancelled),
    )
    return RefundOutcome(order_id, first, delivery is not None, revoked, len(cancelled))


# --- reissue -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after: int = 0


async def allow_reissue(
    session: AsyncSession, f: Fulfillment, *, client_ip: str, order_id: str
) -> RateDecision:
    """Per IP and per order id, whether or not the order exists: a 429 must not tell."""
    s = f.settings
    buckets = (
        (f"reissue:ip:{client_ip}"[:200], s.reissue_ip_capacity, s.reissue_ip_per_hour),
        (f"reissue:order:{order_id}"[:200], s.reissue_order_capacity, s.reissue_order_per_hour),
    )
    for key, capacity, per_hour in buckets:
        per_second = per_hour / 3600.0
        if not await repo.take_token(session, key, capacity=capacity, per_second=per_second):
            return RateDecision(False, retry_after=max(1, math.ceil(1.0 / per_second)))
    return RateDecision(True)


async def reissue_link(
    session: AsyncSession,
    f: Fulfillment,
    *,
    order_id: str,
    email: str,
    correlation_id: str | None,
) -> bool:
    """A new grant and a "reissue" email when order and email match; the caller never tells."""
    await repo.lock_order(session, order_id)
    delivery = await repo.delivery_for_order(session, order_id)
    if (
        delivery is None
        or delivery.revoked_at is not None
        or not domain.same_email(delivery.email, email)
    ):
        return False
    items = await repo.items_of(session, delivery.id)
    now = await repo.db_now(session)
    grant = await _new_grant(session, f, delivery, kind="reissue", now=now, item_count=len(items))
    lines = [domain.LineToDeliver(i.position, i.sku, i.title, i.quantity) for i in items]
    # Always to the address on the order, never to the one typed into the form.
    await repo.queue_email(
        session,
        order_id=order_id,
        template=domain.TEMPLATE_REISSUE,
        recipient=delivery.email,
        context=_link_context(grant, lines),
        correlation_id=correlation_id or delivery.correlation_id,
        ref=str(grant.id),
    )
    log.info("link_reissued", order_id=order_id, grant_id=str(grant.id))
    return True


# --- downloads ---------------------------------------------------------------------------------


class DownloadProblem(StrEnum):
    INVALID = "invalid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REFUNDED = "refunded"  # revoked because the payment was refunded
    EXHAUSTED = "exhausted"
    NO_SUCH_ITEM = "no_such_item"


@dataclass(frozen=True)
class Problem:
    kind: DownloadProblem
    order_id: str | None = None


@dataclass(frozen=True)
class Redirect:
    url: str


@dataclass(frozen=True)
class ListedItem:
    position: int
    title: str
    quantity: int


@dataclass(frozen=True)
class ItemList:
    order_id: str
    items: list[ListedItem]
    remaining: int
    expires_at: datetime


_STATE_PROBLEM = {
    domain.GrantState.EXPIRED: DownloadProblem.EXPIRED,
    domain.GrantState.REVOKED: DownloadProblem.REVOKED,
    domain.GrantState.EXHAUSTED: DownloadProblem.EXHAUSTED,
}


def _problem_of(grant: DownloadGrant, state: domain.GrantState) -> DownloadProblem:
    if state is domain.GrantState.REVOKED and grant.revoked_reason == domain.REFUND_REASON:
        return DownloadProblem.REFUNDED
    return _STATE_PROBLEM.get(state, DownloadProblem.EXHAUSTED)


def _state_of(grant: DownloadGrant, now: datetime) -> domain.GrantState:
    return domain.grant_state(
        now=now,
        expires_at=grant.expires_at,
        revoked_at=grant.revoked_at,
        downloads=grant.downloads,
        max_downloads=grant.max_downloads,
    )


async def open_download(
    session: AsyncSession, f: Fulfillment, token: str, position: int | None
) -> Problem | Redirect | ItemList:
    """Decide what a click on a link gets. Counts a download only when it answers a Redirect."""
    check = f.signer.check(token)
    if check.grant_id is None:
        return Problem(DownloadProblem.INVALID)
    found = await repo.grant_with_delivery(session, check.grant_id)
    if found is None:
        return Problem(DownloadProblem.INVALID)
    grant, delivery = found
    now = await repo.db_now(session)
    state = _state_of(grant, now)
    if check.problem is TokenProblem.EXPIRED and state is domain.GrantState.OK:
        state = domain.GrantState.EXPIRED
    if state is not domain.GrantState.OK:
        return Problem(_problem_of(grant, state), delivery.order_id)

    items = await repo.items_of(session, delivery.id)
    if position is None:
        if len(items) > 1:
            return ItemList(
                order_id=delivery.order_id,
                items=[ListedItem(i.position, i.title, i.quantity) for i in items],
                remaining=grant.max_downloads - grant.downloads,
                expires_at=grant.expires_at,
            )
        position = 1
    item = next((i for i in items if i.position == position), None)
    if item is None:
        return Problem(DownloadProblem.NO_SUCH_ITEM, delivery.order_id)

    line = domain.LineToDeliver(item.position, item.sku, item.title, item.quantity)
    # Before counting: a storage fault must not cost the customer one of their downloads.
    await _ensure_object(f, delivery.order_id, item, line)
    if await repo.count_download(session, grant.id) is None:
        # Lost a race since the read above (last allowed download, revocation, expiry).
        await session.refresh(grant)
        state = _state_of(grant, await repo.db_now(session))
        return Problem(_problem_of(grant, state), delivery.order_id)
    url = f.store.presigned_get(
        item.object_key,
        filename=domain.download_filename(line),
        expires_in=f.settings.presign_ttl_seconds,
    )
    return Redirect(url)


async def _ensure_object(
    f: Fulfillment, order_id: str, item: DeliveryItem, line: domain.LineToDeliver
) -> None:
    """Re-create a missing object (moto in dev forgets everything on restart).

    The licence is a pure function of the order and the secret, so the same bytes come back;
    the stored sha256 proves it before anything is served.
    """
    if await f.store.exists(item.object_key):
        return
    data = domain.licence_file(f.licence_material, order_id, line)
    if domain.sha256_hex(data) != item.sha256:
        log.error("licence_regeneration_mismatch", order_id=order_id, position=item.position)
        raise LicenceMismatchError(f"order {order_id} item {item.position}")
    await f.store.put_if_changed(item.object_key, data)
    log.warning("licence_object_regenerated", order_id=order_id, position=item.position)


# --- email -------------------------------------------------------------------------------------


async def claim_emails(session: AsyncSession, f: Fulfillment) -> list[ClaimedEmail]:
    return await repo.claim_due_emails(
        session,
        limit=f.settings.email_batch_size,
        lease=timedelta(seconds=f.settings.email_claim_lease_seconds),
    )


def idempotency_key(email: ClaimedEmail) -> str:
    base = f"{email.order_id}:{email.template}"
    return f"{base}:{email.ref}" if email.ref else base


def build_email(f: Fulfillment, email: ClaimedEmail) -> OutgoingEmail:
    context = dict(email.context)
    extra: dict[str, Any] = {}
    if "grant_id" in context:
        extra = {
            "link": f.link_for(
                uuid.UUID(context["grant_id"]), datetime.fromisoformat(context["issued_at"])
            ),
            "reissue_url": f.reissue_url,
            "expires_at": human_time(datetime.fromisoformat(context["expires_at"])),
        }
    return emails.render(
        email.template,
        context,
        order_id=email.order_id,
        recipient=email.recipient,
        idempotency_key=idempotency_key(email),
        created_at=email.created_at,
        settings=f.settings,
        extra=extra,
    )


def human_time(value: datetime) -> str:
    return value.strftime("%d %b %Y %H:%M UTC")


def _email_event(email: ClaimedEmail, status: str, error: str | None = None) -> EmailSent:
    envelope = {"correlation_id": email.correlation_id} if email.correlation_id else {}
    return EmailSent(
        order_id=email.order_id,
        template=email.template,
        status=status,
        attempts=email.attempts,
        recipient_masked=domain.mask_email(email.recipient),
        error=error,
        **envelope,
    )


async def record_sent(
    session: AsyncSession, email: ClaimedEmail, provider_message_id: str | None
) -> bool:
    if not await repo.mark_email_sent(session, email.id, email.attempts, provider_message_id):
        return False  # our lease ran out and another sender owns the row now
    await add_to_outbox(session, Outbox, _email_event(email, "sent"))
    return True


async def record_failure(
    session: AsyncSession, f: Fulfillment, email: ClaimedEmail, error: str, *, permanent: bool
) -> str:
    """``retry`` or ``failed`` (terminal, published). Errors are stored, never the message."""
    give_up = permanent or email.attempts >= f.settings.email_max_attempts
    retry_in = (
        None
        if give_up
        else domain.email_backoff(
            email.attempts,
            f.settings.email_backoff_base_seconds,
            f.settings.email_backoff_max_seconds,
        )
    )
    changed = await repo.mark_email_failed_attempt(
        session, email.id, email.attempts, error=error, retry_in=retry_in
    )
    if changed and give_up:
        await add_to_outbox(session, Outbox, _email_event(email, "failed", error[:500]))
    return "failed" if give_up else "retry"
