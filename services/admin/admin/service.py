"""Admin use cases. They never commit: the HTTP handler or CLI command owns the transaction."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from faststream.nats import NatsBroker
from shared.contracts.fulfillment import RevokeGrantsReply, RevokeGrantsRequest
from shared.contracts.webhooks import ReprocessReply, ReprocessRequest
from shared.messaging.rpc import ServiceUnavailableError, request
from shared.observability import current_correlation_id, get_logger
from sqlalchemy.ext.asyncio import AsyncSession

from admin import repository as repo
from admin.domain import (
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
