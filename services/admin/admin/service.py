"""Admin use cases. They never commit: the HTTP handler or CLI command owns the transaction."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import nats
from faststream.nats import NatsBroker
from shared.contracts.fulfillment import RevokeGrantsReply, RevokeGrantsRequest
from shared.contracts.payments import (
    AttachPaymentRequest,
    PaymentActionReply,
    SettlePaymentRequest,
)
from shared.contracts.webhooks import ReprocessReply, ReprocessRequest
from shared.messaging.rpc import ServiceUnavailableError, request
from shared.observability import current_correlation_id, get_logger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from admin import repository as repo
from admin.domain import (
    KNOWN_ATTENTION_KINDS,
    ThrottlePolicy,
    WebhookLogRef,
    normalize_username,
    retry_after_seconds,
    validate_new_password,
    validate_new_username,
    validate_role,
)
from admin.errors import (
    ConflictError,
    NotAuthenticatedError,
    NotFoundError,
    ThrottledError,
)
from admin.models import AdminUser, AuditLog, OrderView, WebhookLogView
from admin.security import IssuedToken, Passwords, TokenClaims, Tokens

log = get_logger(__name__)

BAD_CREDENTIALS = "invalid username or password"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Principal:
    id: str
    username: str
    role: str
    jti: str
    expires_at: datetime


@dataclass(frozen=True)
class Actor:
    """Who does something, for the audit log (an operator, or the CLI on the host)."""

    id: str | None
    username: str | None
    ip: str | None = None


CLI_ACTOR = Actor(id=None, username="cli")


# --- operators and sessions --------------------------------------------------------------------


async def create_user(
    session: AsyncSession,
    passwords: Passwords,
    *,
    username: str,
    password: str,
    role: str,
    actor: Actor,
) -> AdminUser:
    name = validate_new_username(username)
    validate_new_password(password)
    chosen = validate_role(role)
    user = AdminUser(
        id=uuid.uuid4(),
        username=name,
        password_hash=await asyncio.to_thread(passwords.hash, password),
        role=chosen.value,
        disabled=False,
    )
    if not await repo.insert_user(session, user):
        raise ConflictError(f"username {name!r} already exists")
    await write_audit(
        session,
        actor,
        "user.create",
        target_type="admin_user",
        target_id=str(user.id),
        outcome="ok",
        detail={"username": name, "role": chosen.value},
    )
    return user


@dataclass(frozen=True)
class LoginOutcome:
    """A login either issues a token, or says why not — and its audit row commits either way."""

    issued: IssuedToken | None = None
    user: AdminUser | None = None
    error: NotAuthenticatedError | ThrottledError | None = None


async def login(
    session: AsyncSession,
    passwords: Passwords,
    tokens: Tokens,
    *,
    username: str,
    password: str,
    ip: str | None,
    user_policy: ThrottlePolicy,
    ip_policy: ThrottlePolicy,
) -> LoginOutcome:
    name = normalize_username(username)[:64]
    await repo.lock_login_key(session, name)
    now = utcnow()
    waits = [
        retry_after_seconds(
            await repo.recent_failures_for_username(session, name, now - user_policy.window),
            now,
            user_policy,
        )
    ]
    if ip is not None:
        waits.append(
            retry_after_seconds(
                await repo.recent_failures_for_ip(session, ip, now - ip_policy.window),
                now,
                ip_policy,
            )
        )
    wait = max((w for w in waits if w is not None), default=None)
    actor = Actor(id=None, username=name, ip=ip)
    if wait is not None:
        # Not recorded as a failure: a locked-out user's retries must not extend the lock.
        await write_audit(
            session, actor, "login", outcome="throttled", detail={"retry_after": wait}
        )
        return LoginOutcome(error=ThrottledError("too many failed logins; try again later", wait))

    user = await repo.get_user_by_username(session, name)
    stored = user.password_hash if user is not None and not user.disabled else None
    # argon2 is deliberately slow CPU work: keep it off the event loop.
    ok = await asyncio.to_thread(passwords.verify, stored, password)
    await repo.record_attempt(session, name, ip, ok, now)
    if not ok or user is None:
        await write_audit(
            session, actor, "login", outcome="failed", detail={"known_user": user is not None}
        )
        return LoginOutcome(error=NotAuthenticatedError(BAD_CREDENTIALS))

    if passwords.needs_rehash(user.password_hash):
        await repo.set_password_hash(
            session, user.id, await asyncio.to_thread(passwords.hash, password)
        )
    await repo.mark_login(session, user.id, now)
    issued = tokens.issue(str(user.id), user.role, now)
    await write_audit(
        session,
        Actor(str(user.id), user.username, ip),
        "login",
        outcome="ok",
        detail={"jti": issued.claims.jti},
    )
    return LoginOutcome(issued=issued, user=user)


async def principal_for(session: AsyncSession, claims: TokenClaims) -> Principal:
    """The operator behind a valid token, as they are now: a disabled or deleted user, or a
    logged-out token, stops working at once; a role change applies to the next request."""
    try:
        user_id = uuid.UUID(claims.sub)
    except ValueError:
        raise NotAuthenticatedError("invalid token") from None
    user = await repo.get_user(session, user_id)
    if user is None or user.disabled:
        raise NotAuthenticatedError("invalid token")
    if await repo.is_token_revoked(session, claims.jti):
        raise NotAuthenticatedError("session ended; log in again")
    return Principal(str(user.id), user.username, user.role, claims.jti, claims.expires_at)


async def logout(session: AsyncSession, principal: Principal, ip: str | None) -> None:
    await repo.revoke_token(session, principal.jti, principal.expires_at)
    await write_audit(session, Actor(principal.id, principal.username, ip), "logout", outcome="ok")


async def prune_security_tables(session: AsyncSession, keep_attempts: timedelta) -> int:
    now = utcnow()
    return await repo.prune_login_attempts(session, now - keep_attempts) + (
        await repo.prune_revoked_tokens(session, now)
    )


# --- audit -------------------------------------------------------------------------------------


async def write_audit(
    session: AsyncSession,
    actor: Actor,
    action: str,
    *,
    outcome: str,
    target_type: str | None = None,
    target_id: str | None = None,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> int:
    now = utcnow()
    return await repo.add_audit(
        session,
        AuditLog(
            occurred_at=now,
            completed_at=None if outcome == "pending" else now,
            actor_id=actor.id,
            actor_username=actor.username,
            action=action,
            target_type=target_type,
            target_id=target_id,
            reason=reason,
            outcome=outcome,
            detail={"correlation_id": current_correlation_id(), **(detail or {})},
            ip=actor.ip,
        ),
    )


async def complete_audit(
    session: AsyncSession, audit_id: int, outcome: str, detail: dict[str, Any]
) -> None:
    await repo.complete_audit(session, audit_id, outcome=outcome, at=utcnow(), detail=detail)


# --- operator actions (request-reply to the owning service) ------------------------------------


@dataclass(frozen=True)
class ActionResult:
    ok: bool
    message: str
    outcome: str  # the audit outcome: ok | refused | unavailable
    error_code: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


async def begin_reprocess(
    session: AsyncSession, actor: Actor, ref: WebhookLogRef, reason: str
) -> tuple[int, WebhookLogView]:
    """Checks the target and writes the audit row *before* anything is sent, so an action is
    never taken without a trace even if the process dies right after sending."""
    if ref.kind != "accepted":
        raise ConflictError(
            "rejected callbacks failed verification and were never accepted; "
            "they cannot be reprocessed"
        )
    logged = await repo.get_webhook_log(session, ref.public_id)
    if logged is None:
        raise NotFoundError(f"webhook log {ref.public_id} not found")
    audit_id = await write_audit(
        session,
        actor,
        "webhook.reprocess",
        outcome="pending",
        target_type="webhook_log",
        target_id=ref.public_id,
        reason=reason,
    )
    return audit_id, logged


async def send_reprocess(
    broker: NatsBroker, *, webhook_log_id: int, operator_id: str, reason: str, timeout: float
) -> ActionResult:
    try:
        reply = await request(
            broker,
            ReprocessRequest(
                webhook_log_id=webhook_log_id,
                operator_id=operator_id,
                reason=reason,
                correlation_id=current_correlation_id(),
            ),
            ReprocessReply,
            timeout=timeout,
        )
    except ServiceUnavailableError:
        log.warning("reprocess_unavailable", webhook_log_id=webhook_log_id)
        return ActionResult(
            False,
            "the webhooks service did not answer; nothing was changed, try again later",
            "unavailable",
            "unavailable",
        )
    # A newer gateway may say more (e.g. "payment already final, nothing changed") in `message`.
    said = getattr(reply, "message", None) or reply.error_message
    if reply.ok:
        return ActionResult(
            True,
            said
            or "reprocess queued: the stored callback was published "
            "again and will go through the normal path",
            "ok",
            data={"event_id": reply.event_id},
        )
    return ActionResult(
        False,
        said or "the webhooks service refused the reprocess",
        _refusal_outcome(reply.error_code),
        reply.error_code,
        data={"event_id": reply.event_id},
    )


async def begin_revoke(
    session: AsyncSession, actor: Actor, order_id: str, reason: str
) -> tuple[int, OrderView]:
    order = await repo.get_order(session, order_id)
    if order is None:
        raise NotFoundError(f"order {order_id} not found")
    audit_id = await write_audit(
        session,
        actor,
        "order.revoke_downloads",
        outcome="pending",
        target_type="order",
        target_id=order_id,
        reason=reason,
    )
    return audit_id, order


async def send_revoke(
    broker: NatsBroker, *, order_id: str, operator_id: str, reason: str, timeout: float
) -> ActionResult:
    try:
        reply = await request(
            broker,
            RevokeGrantsRequest(
                order_id=order_id,
                operator_id=operator_id,
                reason=reason,
                correlation_id=current_correlation_id(),
            ),
            RevokeGrantsReply,
            timeout=timeout,
        )
    except ServiceUnavailableError:
        log.warning("revoke_unavailable", order_id=order_id)
        return ActionResult(
            False,
            "the fulfillment service did not answer; nothing was changed, try again later",
            "unavailable",
            "unavailable",
        )
    said = getattr(reply, "message", None) or reply.error_message
    if reply.ok:
        return ActionResult(
            True,
            said or f"{reply.revoked} download link(s) revoked",
            "ok",
            data={"revoked": reply.revoked},
        )
    return ActionResult(
        False,
        said or "the fulfillment service refused the revoke",
        _refusal_outcome(reply.error_code),
        reply.error_code,
        data={"revoked": reply.revoked},
    )


def _refusal_outcome(error_code: str | None) -> str:
    # The owning service answered but could not reach its own database: the same as no answer.
    return "unavailable" if error_code == "unavailable" else "refused"


# --- payments that need attention --------------------------------------------------------------

PaymentActionKind = Literal["settle", "attach"]
AUDIT_ACTIONS: dict[str, str] = {"settle": "order.settle", "attach": "order.attach_payment"}

# What the operator reads for each error code of a PaymentActionReply (payments' own text is
# appended, so nothing it said is lost).
PAYMENT_ERRORS: dict[str, str] = {
    "payment_not_found": "This order has no payment yet, so there is nothing to settle.",
    "provider_payment_not_found": "NOWPayments does not know that payment id; check the number.",
    "belongs_to_other_order": (
        "That provider payment belongs to another order; nothing was changed."
    ),
    "refunded": "The payment was refunded; it cannot be settled or attached.",
    "provider_unavailable": (
        "NOWPayments did not answer the payments service; nothing was changed. "
        "Try again in a few minutes."
    ),
    "unavailable": (
        "The payments service could not reach its database; nothing was changed. Try again shortly."
    ),
    "invalid_request": "The payments service refused the request as invalid.",
    "internal_error": "The payments service failed while handling the action.",
}
NO_RESPONDER = (
    "the payments service is not running (nobody answered); nothing was changed, try again later"
)
TIMED_OUT = (
    "the payments service did not answer in time; the action may still complete — "
    "check the order before trying again (re-sending the same form is safe)"
)


@dataclass(frozen=True)
class PaymentAction:
    kind: PaymentActionKind
    order_id: str
    reason: str
    provider_payment_id: str | None = None

    @property
    def audit_action(self) -> str:
        return AUDIT_ACTIONS[self.kind]


@dataclass(frozen=True)
class StartedAction:
    """An audit row exists for the action. ``done`` is the stored result of an earlier request
    with the same idempotency key (answer with it, send nothing); ``in_flight`` means that
    earlier request has not finished yet."""

    audit_id: int
    action_id: uuid.UUID
    done: ActionResult | None = None
    in_flight: bool = False


def _stored_result(entry: AuditLog) -> ActionResult | None:
    """The result of a finished action from its audit row, or None when it should be sent
    (again, with the same action_id — payments dedups): pending, or unavailable/retryable."""
    detail = entry.detail or {}
    if entry.outcome == "ok" or (entry.outcome == "refused" and not detail.get("retryable")):
        return ActionResult(
            entry.outcome == "ok",
            str(detail.get("message") or ""),
            entry.outcome,
            detail.get("error_code"),
            data={k: detail.get(k) for k in ("payment_id", "status", "changed", "retryable")},
        )
    return None


async def begin_payment_action(
    session: AsyncSession, actor: Actor, action: PaymentAction, idempotency_key: str | None
) -> StartedAction:
    """The audit row (with the action_id payments will see) commits before anything is sent.
    The same idempotency key again — a double submit — finds that row instead of making a new
    action: one action_id per key, whatever the timing."""
    if await repo.get_order(session, action.order_id) is None:
        raise NotFoundError(f"order {action.order_id} not found")
    key = idempotency_key or uuid.uuid4().hex
    action_id = uuid.uuid4()
    now = utcnow()
    detail: dict[str, Any] = {
        "correlation_id": current_correlation_id(),
        "action_id": str(action_id),
        "provider_payment_id": action.provider_payment_id,
    }
    audit_id = await repo.add_audit_once(
        session,
        AuditLog(
            occurred_at=now,
            actor_id=actor.id,
            actor_username=actor.username,
            action=action.audit_action,
            target_type="order",
            target_id=action.order_id,
            reason=action.reason,
            outcome="pending",
            detail=detail,
            ip=actor.ip,
            action_id=action_id,
            idempotency_key=key,
        ),
    )
    if audit_id is not None:
        return StartedAction(audit_id, action_id)
    earlier = await repo.get_audit_by_key(session, action.audit_action, key)
    if earlier is None or earlier.action_id is None:  # the key's row vanished: impossible
        raise ConflictError("this Idempotency-Key cannot be used; send the form again")
    same = (
        earlier.target_id == action.order_id
        and (earlier.detail or {}).get("provider_payment_id") == action.provider_payment_id
    )
    if not same:
        raise ConflictError("this Idempotency-Key was already used for a different action")
    return StartedAction(
        earlier.id,
        earlier.action_id,
        _stored_result(earlier),
        in_flight=earlier.outcome == "pending",
    )


async def await_payment_action(
    sessions: async_sessionmaker[AsyncSession],
    action: PaymentAction,
    idempotency_key: str,
    timeout: float,
) -> ActionResult | None:
    """Wait for the first of two identical submits to finish, so the second shows the same
    result instead of a confusing "already settled". None if it does not finish in time."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        async with sessions() as session:
            entry = await repo.get_audit_by_key(session, action.audit_action, idempotency_key)
        if entry is not None and entry.outcome != "pending":
            return _stored_result(entry)
        await asyncio.sleep(0.1)
    return None


async def send_payment_action(
    broker: NatsBroker,
    action: PaymentAction,
    *,
    operator: str,
    action_id: uuid.UUID,
    timeout: float,
) -> ActionResult:
    payload: SettlePaymentRequest | AttachPaymentRequest
    if action.kind == "settle":
        payload = SettlePaymentRequest(
            order_id=action.order_id,
            operator=operator,
            reason=action.reason,
            action_id=action_id,
            correlation_id=current_correlation_id(),
        )
    else:
        assert action.provider_payment_id is not None
        payload = AttachPaymentRequest(
            order_id=action.order_id,
            provider_payment_id=action.provider_payment_id,
            operator=operator,
            reason=action.reason,
            action_id=action_id,
            correlation_id=current_correlation_id(),
        )
    try:
        reply = await request(broker, payload, PaymentActionReply, timeout=timeout)
    except ServiceUnavailableError as exc:
        nobody = isinstance(exc.__cause__, nats.errors.NoRespondersError)
        log.warning(
            "payment_action_unavailable", kind=action.kind, order_id=action.order_id, nobody=nobody
        )
        return ActionResult(
            False,
            NO_RESPONDER if nobody else TIMED_OUT,
            "unavailable",
            "unavailable" if nobody else "timeout",
            data={"retryable": True},
        )
    data = {
        "payment_id": reply.payment_id,
        "status": reply.status,
        "changed": reply.changed,
        "retryable": reply.retryable,
    }
    if reply.ok:
        return ActionResult(True, _success_message(action, reply), "ok", data=data)
    code = reply.error_code or "refused"
    readable = PAYMENT_ERRORS.get(code, "The payments service refused the action.")
    said = (reply.error_message or "").strip()
    message = f"{readable} Payments said: {said}" if said else readable
    retryable = reply.retryable or code in ("unavailable", "provider_unavailable")
    return ActionResult(
        False,
        message,
        "unavailable" if retryable else "refused",
        code,
        data={**data, "retryable": retryable},
    )


def _success_message(action: PaymentAction, reply: PaymentActionReply) -> str:
    status = f" (payment status: {reply.status})" if reply.status else ""
    if action.kind == "settle":
        if reply.changed:
            return (
                f"Order {action.order_id} settled as paid{status}. Orders and fulfillment "
                "follow by themselves: the customer gets the delivery email."
            )
        return f"Order {action.order_id} was already settled; nothing changed{status}."
    if reply.changed:
        return (
            f"Provider payment {action.provider_payment_id} attached to order "
            f"{action.order_id}{status}."
        )
    return (
        f"Provider payment {action.provider_payment_id} was already attached; "
        f"nothing changed{status}."
    )


async def complete_payment_action(
    session: AsyncSession,
    actor: Actor,
    action: PaymentAction,
    started: StartedAction,
    result: ActionResult,
) -> int:
    """Complete the audit row and, when payments said yes, resolve the order's attention items
    (those the operator could see). Returns how many items were resolved."""
    await complete_audit(
        session,
        started.audit_id,
        result.outcome,
        {"message": result.message, "error_code": result.error_code, **result.data},
    )
    if not result.ok:
        return 0
    items = await repo.unresolved_attention_for_order(session, action.order_id)
    now = utcnow()
    await repo.resolve_attention(
        session,
        [
            {
                "payment_id": item.payment_id,
                "key": item.key,
                "order_id": item.order_id,
                "actor_id": actor.id,
                "actor_username": actor.username,
                "reason": f"{action.kind}: {action.reason}",
                "audit_id": started.audit_id,
                "decided_at": now,
            }
            for item in items
        ],
    )
    return len(items)


async def acknowledge_attention(
    session: AsyncSession, actor: Actor, payment_id: uuid.UUID, key: str, reason: str
) -> int:
    row = await repo.get_attention(session, payment_id, key)
    if row is None:
        raise NotFoundError(f"attention item {payment_id} / {key} not found")
    if row.state != "open":
        raise ConflictError(f"this item is already {row.state}")
    audit_id = await write_audit(
        session,
        actor,
        "attention.acknowledge",
        outcome="ok",
        target_type="attention_item",
        target_id=f"{payment_id}:{key}"[:200],
        reason=reason,
        detail={"order_id": row.item.order_id, "kind": row.item.kind},
    )
    recorded = await repo.acknowledge_attention(
        session,
        {
            "payment_id": payment_id,
            "key": key,
            "order_id": row.item.order_id,
            "actor_id": actor.id,
            "actor_username": actor.username,
            "reason": reason,
            "audit_id": audit_id,
            "decided_at": utcnow(),
        },
    )
    if not recorded:  # a parallel acknowledge or settle got there first
        raise ConflictError("this item was decided meanwhile; reload the page")
    return audit_id


async def needs_attention_counts(session: AsyncSession) -> dict[str, int]:
    """Open attention items by kind, plus ``dead_letter`` and the stuck kinds (``payment_
    partially_paid``, ``payment_mismatch``, ``order_underpaid``): what the gauge reports."""
    counts = {kind: 0 for kind in KNOWN_ATTENTION_KINDS}
    counts.update(await repo.open_attention_counts(session))
    counts["dead_letter"] = await repo.count_dead_letters(session)
    for kind in ("payment_partially_paid", "payment_mismatch", "order_underpaid"):
        counts[kind] = 0
    counts.update(await repo.stuck_counts(session))
    return counts
