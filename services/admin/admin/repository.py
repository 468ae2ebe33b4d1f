"""Every query of the admin service. Functions take the caller's session and never commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from admin.domain import RESOLVING_KINDS, SETTLED_ORDER_STATUSES, STUCK_PAYMENT_STATUSES
from admin.models import (
    READ_MODELS,
    AdminUser,
    AttentionDecision,
    AttentionItem,
    AuditLog,
    DeadLetterView,
    DeliveryView,
    EmailView,
    Inbox,
    LoginAttempt,
    OrderEventView,
    OrderView,
    PaymentTransitionView,
    PaymentView,
    RevocationView,
    RevokedToken,
    WebhookEventView,
    WebhookLogView,
)


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int


async def _page(session: AsyncSession, stmt: Select[Any], page: Page) -> tuple[list[Any], int]:
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    rows = (await session.scalars(stmt.limit(page.limit).offset(page.offset))).all()
    return list(rows), int(total or 0)


def _between(
    column: Any, start: datetime | None, end: datetime | None
) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if start is not None:
        clauses.append(column >= start)
    if end is not None:
        clauses.append(column <= end)
    return clauses


# --- operators, attempts, tokens, audit --------------------------------------------------------


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> AdminUser | None:
    return await session.get(AdminUser, user_id)


async def get_user_by_username(session: AsyncSession, username: str) -> AdminUser | None:
    return await session.scalar(select(AdminUser).where(AdminUser.username == username))


async def insert_user(session: AsyncSession, user: AdminUser) -> bool:
    """False when the username is taken (the unique key decides, not a read-then-write)."""
    stmt = (
        insert(AdminUser)
        .values(
            id=user.id,
            username=user.username,
            password_hash=user.password_hash,
            role=user.role,
            disabled=user.disabled,
        )
        .on_conflict_do_nothing(index_elements=[AdminUser.username])
        .returning(AdminUser.id)
    )
    return (await session.execute(stmt)).first() is not None


async def set_password_hash(session: AsyncSession, user_id: uuid.UUID, password_hash: str) -> None:
    await session.execute(
        update(AdminUser).where(AdminUser.id == user_id).values(password_hash=password_hash)
    )


async def mark_login(session: AsyncSession, user_id: uuid.UUID, at: datetime) -> None:
    await session.execute(update(AdminUser).where(AdminUser.id == user_id).values(last_login_at=at))


async def lock_login_key(session: AsyncSession, username: str) -> None:
    """Serialise attempts on one username across replicas until the transaction ends, so
    parallel guesses cannot all slip in under the failure limit."""
    await session.execute(
        select(func.pg_advisory_xact_lock(func.hashtextextended("admin-login:" + username, 0)))
    )


async def recent_failures_for_username(
    session: AsyncSession, username: str, since: datetime
) -> list[datetime]:
    """Failures inside the window that came after the user's last success."""
    last_success = (
        select(func.max(LoginAttempt.attempted_at))
        .where(LoginAttempt.username == username, LoginAttempt.succeeded.is_(True))
        .scalar_subquery()
    )
    rows = await session.scalars(
        select(LoginAttempt.attempted_at).where(
            LoginAttempt.username == username,
            LoginAttempt.succeeded.is_(False),
            LoginAttempt.attempted_at > since,
            or_(last_success.is_(None), LoginAttempt.attempted_at > last_success),
        )
    )
    return list(rows)


async def recent_failures_for_ip(session: AsyncSession, ip: str, since: datetime) -> list[datetime]:
    rows = await session.scalars(
        select(LoginAttempt.attempted_at).where(
            LoginAttempt.ip == ip,
            LoginAttempt.succeeded.is_(False),
            LoginAttempt.attempted_at > since,
        )
    )
    return list(rows)


async def record_attempt(
    session: AsyncSession, username: str, ip: str | None, succeeded: bool, at: datetime
) -> None:
    session.add(LoginAttempt(username=username[:64], ip=ip, succeeded=succeeded, attempted_at=at))
    await session.flush()


async def prune_login_attempts(session: AsyncSession, before: datetime) -> int:
    result = await session.execute(delete(LoginAttempt).where(LoginAttempt.attempted_at < before))
    return int(getattr(result, "rowcount", 0) or 0)


async def revoke_token(session: AsyncSession, jti: str, expires_at: datetime) -> None:
    await session.execute(
        insert(RevokedToken).values(jti=jti, expires_at=expires_at).on_conflict_do_nothing()
    )


async def is_token_revoked(session: AsyncSession, jti: str) -> bool:
    return await session.get(RevokedToken, jti) is not None


async def prune_revoked_tokens(session: AsyncSession, now: datetime) -> int:
    result = await session.execute(delete(RevokedToken).where(RevokedToken.expires_at < now))
    return int(getattr(result, "rowcount", 0) or 0)


async def add_audit(session: AsyncSession, entry: AuditLog) -> int:
    session.add(entry)
    await session.flush()
    return entry.id


async def complete_audit(
    session: AsyncSession, audit_id: int, *, outcome: str, at: datetime, detail: dict[str, Any]
) -> None:
    await session.execute(
        update(AuditLog)
        .where(AuditLog.id == audit_id)
        .values(outcome=outcome, completed_at=at, detail=AuditLog.detail.op("||")(detail))
    )


async def get_audit(session: AsyncSession, audit_id: int) -> AuditLog | None:
    return await session.get(AuditLog, audit_id)


async def add_audit_once(session: AsyncSession, entry: AuditLog) -> int | None:
    """Insert an audit row carrying an idempotency key; None when that key was already used
    for the same action (the unique index decides, so two parallel submits cannot both win)."""
    values = {
        c.name: getattr(entry, c.key)
        for c in _table(AuditLog).columns
        if c.name != "id" and getattr(entry, c.key) is not None
    }
    stmt = (
        insert(AuditLog)
        .values(**values)
        .on_conflict_do_nothing(
            index_elements=["action", "idempotency_key"],
            index_where=text("idempotency_key IS NOT NULL"),
        )
        .returning(AuditLog.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_audit_by_key(
    session: AsyncSession, action: str, idempotency_key: str
) -> AuditLog | None:
    # populate_existing: a caller polling for completion must see the row as committed now.
    return await session.scalar(
        select(AuditLog)
        .where(AuditLog.action == action, AuditLog.idempotency_key == idempotency_key)
        .execution_options(populate_existing=True)
    )


@dataclass(frozen=True)
class AuditFilters:
    action: str | None = None
    actor: str | None = None
    target_id: str | None = None
    outcome: str | None = None
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None


async def list_audit(
    session: AsyncSession, filters: AuditFilters, page: Page
) -> tuple[list[AuditLog], int]:
    clauses = _between(AuditLog.occurred_at, filters.occurred_from, filters.occurred_to)
    if filters.action:
        clauses.append(AuditLog.action == filters.action)
    if filters.actor:
        clauses.append(
            or_(AuditLog.actor_username == filters.actor, AuditLog.actor_id == filters.actor)
        )
    if filters.target_id:
        clauses.append(AuditLog.target_id == filters.target_id)
    if filters.outcome:
        clauses.append(AuditLog.outcome == filters.outcome)
    stmt = (
        select(AuditLog).where(*clauses).order_by(AuditLog.occurred_at.desc(), AuditLog.id.desc())
    )
    return await _page(session, stmt, page)


# --- projections: writes -----------------------------------------------------------------------


def _newest_wins(
    table: Any, excluded: Any, *, replace: Sequence[str], keep_known: Sequence[str]
) -> dict[str, Any]:
    """SET clauses for an upsert where the row with the higher (version, time) wins.

    ``replace`` columns take the newer event's value; ``keep_known`` columns take the newer
    value when it has one and otherwise keep what an older event told us (ids and amounts that
    not every event repeats). The comparison reads the old row, so order of SETs is irrelevant.
    """
    c = table.c
    newer = tuple_(excluded.version, excluded.updated_at) > tuple_(c.version, c.updated_at)
    values: dict[str, Any] = {}
    for col in replace:
        values[col] = case((newer, excluded[col]), else_=c[col])
    for col in keep_known:
        values[col] = case(
            (newer, func.coalesce(excluded[col], c[col])),
            else_=func.coalesce(c[col], excluded[col]),
        )
    values["created_at"] = func.least(c.created_at, excluded.created_at)
    return values


# Projection statements are built once, at import, and executed with a parameter dict:
# SQLAlchemy memoises a statement's cache key on the object, so a constant statement costs
# nothing to re-key, while building ``insert(...).values(**row)`` with its CASE clauses per event
# was most of the admin worker's CPU. Core tables (not ORM classes) keep execution off the ORM
# bulk-insert path.


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


def _newest_wins_upsert(
    model: Any, key: str, *, replace: Sequence[str], keep_known: Sequence[str]
) -> Any:
    stmt = insert(_table(model))
    set_ = _newest_wins(_table(model), stmt.excluded, replace=replace, keep_known=keep_known)
    return stmt.on_conflict_do_update(index_elements=[key], set_=set_)


def _insert_new(model: Any) -> Any:
    return insert(_table(model)).on_conflict_do_nothing()


def _recount_webhook_log() -> Any:
    """Counters of one log row, recounted from its publications (parameters ``b_*``)."""
    ev = _table(WebhookEventView).c
    log = _table(WebhookLogView)
    log_id: Any = bindparam("b_log_id")
    originals = (
        select(func.count())
        .where(ev.webhook_log_id == log_id, ev.replay.is_(False))
        .scalar_subquery()
    )
    replays = (
        select(func.count())
        .where(ev.webhook_log_id == log_id, ev.replay.is_(True))
        .scalar_subquery()
    )
    received = func.greatest(
        1, originals, log.c.received_count, bindparam("b_reported", type_=Integer)
    )
    return (
        update(log)
        .where(log.c.id == bindparam("b_row_id"))
        .values(received_count=received, replay_count=replays)
    )


_UPSERT_PAYMENT = _newest_wins_upsert(
    PaymentView,
    "payment_id",
    replace=(
        "status",
        "previous_status",
        "is_final",
        "source",
        "version",
        "note",
        "order_id",
        "provider",
        "price_amount",
        "price_currency",
        "updated_at",
        "last_event_id",
    ),
    keep_known=(
        "provider_payment_id",
        "invoice_id",
        "pay_amount",
        "actually_paid",
        "pay_currency",
        "surplus",
    ),
)
_UPSERT_ORDER = _newest_wins_upsert(
    OrderView,
    "order_id",
    replace=("status", "version", "email", "total", "currency", "updated_at", "last_event_id"),
    keep_known=("items", "payment_id", "reason", "actually_paid", "pay_amount", "pay_currency"),
)
_RECOUNT_WEBHOOK_LOG = _recount_webhook_log()


def _earliest_wins_upsert(model: Any, keys: Sequence[str], time_column: str) -> Any:
    """Upsert where the copy with the earliest ``time_column`` wins every column: payments
    publishes a situation once, so a second copy is a redelivery and changes nothing, in any
    order."""
    table = _table(model)
    stmt = insert(table)
    earlier = stmt.excluded[time_column] < table.c[time_column]
    set_ = {
        c.name: case((earlier, stmt.excluded[c.name]), else_=c)
        for c in table.columns
        if c.name not in keys
    }
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=set_)


_UPSERT_ATTENTION = _earliest_wins_upsert(AttentionItem, ("payment_id", "key"), "raised_at")
_INSERT_PAYMENT_TRANSITION = _insert_new(PaymentTransitionView)
_INSERT_ORDER_EVENT = _insert_new(OrderEventView)
_INSERT_WEBHOOK_EVENT = _insert_new(WebhookEventView)
_INSERT_WEBHOOK_LOG = _insert_new(WebhookLogView)
_INSERT_DELIVERY = _insert_new(DeliveryView)
_INSERT_EMAIL = _insert_new(EmailView)
_INSERT_REVOCATION = _insert_new(RevocationView)
_INSERT_DEAD_LETTER = _insert_new(DeadLetterView)


async def upsert_payment(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(_UPSERT_PAYMENT, row)


async def insert_payment_transition(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(_INSERT_PAYMENT_TRANSITION, row)


async def upsert_order(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(_UPSERT_ORDER, row)


async def insert_order_event(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(_INSERT_ORDER_EVENT, row)


async def record_webhook_publication(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(_INSERT_WEBHOOK_EVENT, row)


async def upsert_accepted_webhook(
    session: AsyncSession, row: dict[str, Any], reported_received_count: int | None
) -> None:
    """The log's content never changes; its counters are recounted from the publications, so
    applying any event twice or in any order gives the same numbers."""
    await session.execute(_INSERT_WEBHOOK_LOG, row)
    await session.execute(
        _RECOUNT_WEBHOOK_LOG,
        {
            "b_log_id": row["webhook_log_id"],
            "b_row_id": row["id"],
            "b_reported": reported_received_count or 0,
        },
    )


async def insert_rejected_webhook(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(_INSERT_WEBHOOK_LOG, row)


async def insert_delivery(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(_INSERT_DELIVERY, row)


async def insert_email(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(_INSERT_EMAIL, row)


async def insert_revocation(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(_INSERT_REVOCATION, row)


async def insert_dead_letter(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(_INSERT_DEAD_LETTER, row)


async def upsert_attention(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(_UPSERT_ATTENTION, row)


async def truncate_read_models(session: AsyncSession) -> None:
    tables: list[Any] = [*READ_MODELS, Inbox]
    names = ", ".join(f'"{m.__table__.schema}"."{m.__tablename__}"' for m in tables)
    await session.execute(text(f"TRUNCATE {names}"))


# --- read side ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentFilters:
    status: str | None = None
    order_id: str | None = None
    provider_payment_id: str | None = None
    invoice_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


async def list_payments(
    session: AsyncSession, filters: PaymentFilters, page: Page
) -> tuple[list[PaymentView], int]:
    p = PaymentView
    clauses = _between(p.created_at, filters.created_from, filters.created_to)
    for column, value in (
        (p.status, filters.status),
        (p.order_id, filters.order_id),
        (p.provider_payment_id, filters.provider_payment_id),
        (p.invoice_id, filters.invoice_id),
    ):
        if value is not None:
            clauses.append(column == value)
    stmt = select(p).where(*clauses).order_by(p.created_at.desc(), p.payment_id.desc())
    return await _page(session, stmt, page)


async def get_payment(session: AsyncSession, payment_id: uuid.UUID) -> PaymentView | None:
    return await session.get(PaymentView, payment_id)


async def payments_for_order(session: AsyncSession, order_id: str) -> list[PaymentView]:
    rows = await session.scalars(
        select(PaymentView)
        .where(PaymentView.order_id == order_id)
        .order_by(PaymentView.created_at.desc())
    )
    return list(rows)


async def payments_for_provider_ids(
    session: AsyncSession, provider_payment_id: str | None, invoice_id: str | None
) -> list[PaymentView]:
    match = _provider_id_match(PaymentView, provider_payment_id, invoice_id)
    if match is None:
        return []
    rows = await session.scalars(
        select(PaymentView).where(match).order_by(PaymentView.created_at.desc()).limit(20)
    )
    return list(rows)


def _provider_id_match(
    model: Any, provider_payment_id: str | None, invoice_id: str | None
) -> ColumnElement[bool] | None:
    clauses = []
    if provider_payment_id:
        clauses.append(model.provider_payment_id == provider_payment_id)
    if invoice_id:
        clauses.append(model.invoice_id == invoice_id)
    return or_(*clauses) if clauses else None


async def transitions_for_payment(
    session: AsyncSession, payment_id: uuid.UUID
) -> list[PaymentTransitionView]:
    t = PaymentTransitionView
    rows = await session.scalars(
        select(t).where(t.payment_id == payment_id).order_by(t.version, t.occurred_at)
    )
    return list(rows)


async def transitions_related_to(
    session: AsyncSession,
    *,
    provider_payment_id: str | None,
    invoice_id: str | None,
    causation_ids: Sequence[str],
) -> list[PaymentTransitionView]:
    t = PaymentTransitionView
    clauses: list[ColumnElement[bool]] = []
    match = _provider_id_match(t, provider_payment_id, invoice_id)
    if match is not None:
        clauses.append(match)
    if causation_ids:
        clauses.append(t.causation_id.in_(list(causation_ids)))
    if not clauses:
        return []
    rows = await session.scalars(
        select(t).where(or_(*clauses)).order_by(t.payment_id, t.version).limit(200)
    )
    return list(rows)


@dataclass(frozen=True)
class OrderFilters:
    status: str | None = None
    email: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


async def list_orders(
    session: AsyncSession, filters: OrderFilters, page: Page
) -> tuple[list[OrderView], int]:
    o = OrderView
    clauses = _between(o.created_at, filters.created_from, filters.created_to)
    if filters.status is not None:
        clauses.append(o.status == filters.status)
    if filters.email is not None:
        clauses.append(func.lower(o.email) == filters.email.strip().lower())
    stmt = select(o).where(*clauses).order_by(o.created_at.desc(), o.order_id.desc())
    return await _page(session, stmt, page)


async def get_order(session: AsyncSession, order_id: str) -> OrderView | None:
    return await session.get(OrderView, order_id)


async def order_events(session: AsyncSession, order_id: str) -> list[OrderEventView]:
    e = OrderEventView
    rows = await session.scalars(
        select(e).where(e.order_id == order_id).order_by(e.version, e.occurred_at)
    )
    return list(rows)


async def deliveries_for_order(session: AsyncSession, order_id: str) -> list[DeliveryView]:
    rows = await session.scalars(
        select(DeliveryView)
        .where(DeliveryView.order_id == order_id)
        .order_by(DeliveryView.delivered_at.desc())
    )
    return list(rows)


async def emails_for_order(session: AsyncSession, order_id: str) -> list[EmailView]:
    rows = await session.scalars(
        select(EmailView)
        .where(EmailView.order_id == order_id)
        .order_by(EmailView.occurred_at.desc())
    )
    return list(rows)


async def revocations_for_order(session: AsyncSession, order_id: str) -> list[RevocationView]:
    rows = await session.scalars(
        select(RevocationView)
        .where(RevocationView.order_id == order_id)
        .order_by(RevocationView.occurred_at.desc())
    )
    return list(rows)


@dataclass(frozen=True)
class WebhookLogFilters:
    provider: str | None = None
    external_id: str | None = None
    event_type: str | None = None
    accepted: bool | None = None
    received_from: datetime | None = None
    received_to: datetime | None = None


async def list_webhook_logs(
    session: AsyncSession, filters: WebhookLogFilters, page: Page
) -> tuple[list[WebhookLogView], int]:
    w = WebhookLogView
    clauses = _between(w.received_at, filters.received_from, filters.received_to)
    if filters.provider is not None:
        clauses.append(w.provider == filters.provider)
    if filters.external_id is not None:
        clauses.append(
            or_(w.payment_id == filters.external_id, w.invoice_id == filters.external_id)
        )
    if filters.event_type is not None:
        clauses.append(w.payment_status == filters.event_type)
    if filters.accepted is not None:
        clauses.append(w.accepted.is_(filters.accepted))
    stmt = select(w).where(*clauses).order_by(w.received_at.desc(), w.id.desc())
    return await _page(session, stmt, page)


async def get_webhook_log(session: AsyncSession, public_id: str) -> WebhookLogView | None:
    return await session.get(WebhookLogView, public_id)


async def webhook_publications(
    session: AsyncSession, webhook_log_id: int
) -> list[WebhookEventView]:
    e = WebhookEventView
    rows = await session.scalars(
        # A replay carries the original's occurred_at; the original is listed first on a tie.
        select(e)
        .where(e.webhook_log_id == webhook_log_id)
        .order_by(e.occurred_at, e.replay, e.event_id)
    )
    return list(rows)


@dataclass(frozen=True)
class DeadLetterFilters:
    consumer: str | None = None
    original_subject: str | None = None
    dead_lettered_from: datetime | None = None
    dead_lettered_to: datetime | None = None


async def list_dead_letters(
    session: AsyncSession, filters: DeadLetterFilters, page: Page
) -> tuple[list[DeadLetterView], int]:
    d = DeadLetterView
    clauses = _between(d.dead_lettered_at, filters.dead_lettered_from, filters.dead_lettered_to)
    if filters.consumer is not None:
        clauses.append(d.consumer == filters.consumer)
    if filters.original_subject is not None:
        clauses.append(d.original_subject == filters.original_subject)
    stmt = select(d).where(*clauses).order_by(d.dead_lettered_at.desc(), d.dl_sequence.desc())
    return await _page(session, stmt, page)


@dataclass(frozen=True)
class DeliveryFilters:
    order_id: str | None = None
    delivered_from: datetime | None = None
    delivered_to: datetime | None = None


async def list_deliveries(
    session: AsyncSession, filters: DeliveryFilters, page: Page
) -> tuple[list[DeliveryView], int]:
    d = DeliveryView
    clauses = _between(d.delivered_at, filters.delivered_from, filters.delivered_to)
    if filters.order_id is not None:
        clauses.append(d.order_id == filters.order_id)
    stmt = select(d).where(*clauses).order_by(d.delivered_at.desc(), d.delivery_id.desc())
    return await _page(session, stmt, page)


# --- payments that need attention --------------------------------------------------------------


def _attention_state(item: Any, decision: Any) -> ColumnElement[str]:
    """open / acknowledged / resolved, derived at read time so the projection stays a plain
    idempotent upsert: an operator's settle/attach item raised at or after this one resolves it
    (whatever order the events arrived in), as does a decision recorded by admin."""
    later = aliased(AttentionItem)
    resolved_by_event = exists().where(
        later.order_id == item.order_id,
        later.kind.in_(RESOLVING_KINDS),
        later.raised_at >= item.raised_at,
    )
    return case(
        (
            or_(item.kind.in_(RESOLVING_KINDS), decision.state == "resolved", resolved_by_event),
            literal("resolved"),
        ),
        (decision.state == "acknowledged", literal("acknowledged")),
        else_=literal("open"),
    )


def _attention_base() -> tuple[Select[Any], ColumnElement[str]]:
    a, d, o = AttentionItem, AttentionDecision, OrderView
    state = _attention_state(a, d).label("state")
    stmt = (
        select(a, d, o.status.label("order_status"), o.total, o.currency.label("order_currency"))
        .add_columns(state)
        .outerjoin(d, and_(d.payment_id == a.payment_id, d.key == a.key))
        .outerjoin(o, o.order_id == a.order_id)
    )
    return stmt, state


@dataclass(frozen=True)
class AttentionFilters:
    state: str | None = "open"  # None: every state
    kind: str | None = None
    order_id: str | None = None
    payment_id: uuid.UUID | None = None
    raised_from: datetime | None = None
    raised_to: datetime | None = None


@dataclass(frozen=True)
class AttentionRow:
    item: AttentionItem
    decision: AttentionDecision | None
    state: str
    order_status: str | None
    order_total: Any
    order_currency: str | None


def _attention_rows(result: Any) -> list[AttentionRow]:
    return [AttentionRow(r[0], r[1], r[5], r[2], r[3], r[4]) for r in result.all()]


async def list_attention(
    session: AsyncSession, filters: AttentionFilters, page: Page
) -> tuple[list[AttentionRow], int]:
    a = AttentionItem
    stmt, state = _attention_base()
    clauses = _between(a.raised_at, filters.raised_from, filters.raised_to)
    if filters.state is not None:
        clauses.append(state == filters.state)
    if filters.kind is not None:
        clauses.append(a.kind == filters.kind)
    if filters.order_id is not None:
        clauses.append(a.order_id == filters.order_id)
    if filters.payment_id is not None:
        clauses.append(a.payment_id == filters.payment_id)
    stmt = stmt.where(*clauses)
    total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
    ordered = stmt.order_by(a.raised_at.desc(), a.payment_id.desc(), a.key.desc())
    result = await session.execute(ordered.limit(page.limit).offset(page.offset))
    return _attention_rows(result), int(total or 0)


async def get_attention(
    session: AsyncSession, payment_id: uuid.UUID, key: str
) -> AttentionRow | None:
    a = AttentionItem
    stmt, _ = _attention_base()
    rows = _attention_rows(
        await session.execute(stmt.where(a.payment_id == payment_id, a.key == key))
    )
    return rows[0] if rows else None


async def open_attention_counts(session: AsyncSession) -> dict[str, int]:
    a, d = AttentionItem, AttentionDecision
    state = _attention_state(a, d)
    rows = await session.execute(
        select(a.kind, func.count())
        .select_from(a)
        .outerjoin(d, and_(d.payment_id == a.payment_id, d.key == a.key))
        .where(state == "open")
        .group_by(a.kind)
    )
    return {kind: int(n) for kind, n in rows.all()}


async def unresolved_attention_for_order(
    session: AsyncSession, order_id: str
) -> list[AttentionItem]:
    stmt, state = _attention_base()
    result = await session.execute(
        stmt.where(AttentionItem.order_id == order_id, state != "resolved")
    )
    return [r.item for r in _attention_rows(result)]


async def acknowledge_attention(session: AsyncSession, row: dict[str, Any]) -> bool:
    """False when the item already has a decision (acknowledged or resolved)."""
    stmt = (
        insert(AttentionDecision)
        .values(**row, state="acknowledged")
        .on_conflict_do_nothing()
        .returning(AttentionDecision.key)
    )
    return (await session.execute(stmt)).first() is not None


async def resolve_attention(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Resolved wins over acknowledged: the settle/attach is what closed the item."""
    if not rows:
        return
    stmt = insert(AttentionDecision).values([{**r, "state": "resolved"} for r in rows])
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["payment_id", "key"],
            set_={
                "state": "resolved",
                "actor_id": stmt.excluded.actor_id,
                "actor_username": stmt.excluded.actor_username,
                "reason": stmt.excluded.reason,
                "audit_id": stmt.excluded.audit_id,
                "decided_at": stmt.excluded.decided_at,
            },
            where=AttentionDecision.state != "resolved",
        )
    )


def _stuck_query() -> Select[Any]:
    p, o = PaymentView, OrderView
    stuck_payments = (
        select(
            literal("payment_", String).concat(p.status).label("kind"),
            p.order_id.label("order_id"),
            o.status.label("order_status"),
            cast(p.payment_id, String).label("payment_id"),
            p.status.label("payment_status"),
            p.price_amount.label("price_amount"),
            p.price_currency.label("price_currency"),
            p.pay_amount.label("pay_amount"),
            p.actually_paid.label("actually_paid"),
            p.pay_currency.label("pay_currency"),
            p.updated_at.label("since"),
        )
        .select_from(p)
        .outerjoin(o, o.order_id == p.order_id)
        .where(
            p.status.in_(STUCK_PAYMENT_STATUSES),
            or_(o.status.is_(None), o.status.not_in(SETTLED_ORDER_STATUSES)),
        )
    )
    p2 = aliased(PaymentView)
    underpaid_orders = select(
        literal("order_underpaid", String).label("kind"),
        o.order_id,
        o.status,
        o.payment_id,
        literal(None, String),
        o.total,
        o.currency,
        o.pay_amount,
        o.actually_paid,
        o.pay_currency,
        o.updated_at,
    ).where(
        o.status == "underpaid",
        # Shown once: an underpaid order whose payment is listed already is that entry.
        ~exists().where(p2.order_id == o.order_id, p2.status.in_(STUCK_PAYMENT_STATUSES)),
    )
    return select(union_all(stuck_payments, underpaid_orders).subquery())


async def list_stuck(session: AsyncSession, page: Page) -> tuple[list[dict[str, Any]], int]:
    stuck = _stuck_query().subquery()
    total = await session.scalar(select(func.count()).select_from(stuck))
    rows = await session.execute(
        select(stuck)
        .order_by(stuck.c.since.desc(), stuck.c.order_id.desc())
        .limit(page.limit)
        .offset(page.offset)
    )
    return [dict(r._mapping) for r in rows.all()], int(total or 0)


async def stuck_counts(session: AsyncSession) -> dict[str, int]:
    stuck = _stuck_query().subquery()
    rows = await session.execute(select(stuck.c.kind, func.count()).group_by(stuck.c.kind))
    return {kind: int(n) for kind, n in rows.all()}


async def count_dead_letters(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(DeadLetterView)) or 0)
