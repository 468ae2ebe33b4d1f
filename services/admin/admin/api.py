"""HTTP API of the admin console: login, read models with filters, operator actions.

Routes live on three routers so the access rule is structural, not per-handler:
``public`` (login only), ``reader`` (any signed-in user; read-only apart from logout) and
``writer`` (operators only). ``create_routers`` refuses to start if a state-changing route is
put on the reader router.

No ``from __future__ import annotations`` here: the dependency aliases (``CurrentUser``,
``Operator``) are closures, and FastAPI can only see them in eagerly evaluated annotations.
"""

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from shared.contracts.payments import PaymentStatus
from shared.db import DatabaseUnavailableError, is_connection_error
from shared.observability import get_logger
from shared.runtime import ServiceContext
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from admin import repository as repo
from admin import service
from admin.domain import (
    SAFE_METHODS,
    OrderStatus,
    ThrottlePolicy,
    can_write,
    parse_webhook_log_id,
)
from admin.errors import (
    AdminError,
    ForbiddenError,
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
)
from admin.models import WebhookLogView
from admin.read import snapshot
from admin.schemas import (
    AcknowledgeIn,
    AcknowledgeOut,
    AttachIn,
    AttentionDecisionOut,
    AttentionItemOut,
    AuditOut,
    CausedOut,
    CausedTransitionOut,
    DeadLetterOut,
    DeadLetterSectionOut,
    DeliveryOut,
    EmailOut,
    LoginIn,
    LoginOut,
    MeOut,
    NeedsAttentionCountsOut,
    NeedsAttentionOut,
    OkOut,
    OrderDetailOut,
    OrderEventOut,
    OrderOut,
    PageOut,
    PaymentActionOut,
    PaymentDetailOut,
    PaymentOut,
    PublicationOut,
    ReasonIn,
    ReprocessOut,
    RevocationOut,
    RevokeOut,
    SettleIn,
    StuckOut,
    StuckSectionOut,
    TransitionOut,
    WebhookLogDetailOut,
    WebhookLogOut,
)
from admin.security import Passwords, Tokens
from admin.service import Actor, PaymentAction, Principal
from admin.settings import AdminSettings

log = get_logger(__name__)

COOKIE_NAME = "bitloot_admin"
# State-changing routes any signed-in user may call (a viewer must be able to log out).
SELF_SERVICE_ROUTES = frozenset({("POST", "/admin/logout")})

Limit = Annotated[int, Query(ge=1, le=100, description="page size, 1-100")]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
Text64 = Annotated[str | None, Query(min_length=1, max_length=64)]
Text200 = Annotated[str | None, Query(min_length=1, max_length=200)]
When = Annotated[datetime | None, Query(description="ISO 8601; without offset means UTC")]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _range(
    start: datetime | None, end: datetime | None, names: tuple[str, str]
) -> tuple[datetime | None, datetime | None]:
    start, end = _utc(start), _utc(end)
    if start is not None and end is not None and start > end:
        raise InvalidInputError(names[0], f"must not be after {names[1]}")
    return start, end


def _page(items: list[Any], total: int, page: repo.Page) -> dict[str, Any]:
    return {"items": items, "total": total, "limit": page.limit, "offset": page.offset}


def _client_ip(request: Request) -> str | None:
    return request.client.host[:64] if request.client else None


def _bearer_or_cookie(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticatedError("expected 'Authorization: Bearer <token>'")
        return token.strip()
    return request.cookies.get(COOKIE_NAME) or None


def webhook_out(row: WebhookLogView) -> WebhookLogOut:
    return WebhookLogOut(
        id=row.id,
        kind="accepted" if row.accepted else "rejected",
        accepted=row.accepted,
        provider=row.provider,
        webhook_log_id=row.webhook_log_id,
        failure_id=row.failure_id,
        external_id=row.payment_id or row.invoice_id,
        payment_id=row.payment_id,
        invoice_id=row.invoice_id,
        order_id=row.order_id,
        event_type=row.payment_status,
        payment_status=row.payment_status,
        actually_paid=row.actually_paid,
        pay_currency=row.pay_currency,
        received_at=row.received_at,
        reason=row.reason,
        source_ip=row.source_ip,
        received_count=row.received_count,
        replay_count=row.replay_count,
    )


def _age(since: datetime, now: datetime) -> int:
    return max(0, int((now - since).total_seconds()))


def attention_out(row: repo.AttentionRow, now: datetime) -> AttentionItemOut:
    item = row.item
    return AttentionItemOut(
        payment_id=item.payment_id,
        key=item.key,
        order_id=item.order_id,
        kind=item.kind,
        detail=item.detail,
        provider_payment_id=item.provider_payment_id,
        parent_payment_id=item.parent_payment_id,
        provider_status=item.provider_status,
        payment_status=item.payment_status,
        amount=item.amount,
        currency=item.currency,
        raised_at=item.raised_at,
        age_seconds=_age(item.raised_at, now),
        state=row.state,
        decision=AttentionDecisionOut.model_validate(row.decision) if row.decision else None,
        order_status=row.order_status,
        order_total=row.order_total,
        order_currency=row.order_currency,
    )


def dead_letter_out(r: Any) -> DeadLetterOut:
    return DeadLetterOut(
        id=f"{r.consumer}:{r.stream_sequence}",
        consumer=r.consumer,
        stream_sequence=r.stream_sequence,
        original_subject=r.original_subject,
        deliveries=r.deliveries,
        error=r.error,
        event_id=r.event_id,
        body=r.body,
        dead_lettered_at=r.dead_lettered_at,
    )


def counts_out(by_kind: dict[str, int]) -> NeedsAttentionCountsOut:
    dead = by_kind.get("dead_letter", 0)
    stuck = sum(by_kind.get(k, 0) for k in STUCK_KINDS)
    attention = sum(n for k, n in by_kind.items() if k != "dead_letter" and k not in STUCK_KINDS)
    return NeedsAttentionCountsOut(
        total=attention + dead + stuck,
        attention=attention,
        dead_letters=dead,
        stuck=stuck,
        by_kind=by_kind,
    )


STUCK_KINDS = ("payment_partially_paid", "payment_mismatch", "order_underpaid")
SECTION_SIZE = 5
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=8,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="the same key again (a double submit) answers with the first action's "
        "result instead of sending a second action",
    ),
]


def create_routers(
    ctx: ServiceContext, settings: AdminSettings, passwords: Passwords, tokens: Tokens
) -> list[APIRouter]:
    sessions = ctx.sessions

    async def authenticate(request: Request) -> Principal:
        token = _bearer_or_cookie(request)
        if token is None:
            raise NotAuthenticatedError("not authenticated")
        claims = tokens.decode(token)
        async with sessions() as session:
            return await service.principal_for(session, claims)

    async def require_operator(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not can_write(principal.role):
            raise ForbiddenError("this action needs the operator role")
        return principal

    CurrentUser = Annotated[Principal, Depends(authenticate)]
    Operator = Annotated[Principal, Depends(require_operator)]

    public = APIRouter(prefix="/admin", tags=["auth"])
    reader = APIRouter(prefix="/admin", dependencies=[Depends(authenticate)])
    writer = APIRouter(prefix="/admin", dependencies=[Depends(require_operator)], tags=["actions"])

    user_policy = ThrottlePolicy(
        settings.login_max_failures, timedelta(seconds=settings.login_window_seconds)
    )
    ip_policy = ThrottlePolicy(
        settings.login_ip_max_failures, timedelta(seconds=settings.login_window_seconds)
    )

    def _cookie_secure(request: Request) -> bool:
        if settings.cookie_secure is not None:
            return settings.cookie_secure
        return request.url.scheme == "https"

    # --- auth ----------------------------------------------------------------------------------

    @public.post(
        "/login",
        response_model=LoginOut,
        responses={
            401: {"description": "bad credentials"},
            429: {"description": "too many failures; see Retry-After"},
        },
    )
    async def login(body: LoginIn, request: Request, response: Response) -> LoginOut:
        async with sessions() as session, session.begin():
            outcome = await service.login(
                session,
                passwords,
                tokens,
                username=body.username,
                password=body.password,
                ip=_client_ip(request),
                user_policy=user_policy,
                ip_policy=ip_policy,
            )
        # Raised after the commit: the failed attempt and its audit row must persist.
        if outcome.error is not None:
            raise outcome.error
        assert outcome.issued is not None and outcome.user is not None
        response.set_cookie(
            COOKIE_NAME,
            outcome.issued.token,
            max_age=tokens.ttl_seconds,
            path=settings.cookie_path,
            httponly=True,
            samesite="strict",
            secure=_cookie_secure(request),
        )
        response.headers["Cache-Control"] = "no-store"
        return LoginOut(
            access_token=outcome.issued.token,
            expires_in=tokens.ttl_seconds,
            role=outcome.user.role,
            username=outcome.user.username,
        )

    @reader.post("/logout", response_model=OkOut, tags=["auth"])
    async def logout(principal: CurrentUser, request: Request, response: Response) -> OkOut:
        async with sessions() as session, session.begin():
            await service.logout(session, principal, _client_ip(request))
        response.delete_cookie(
            COOKIE_NAME,
            path=settings.cookie_path,
            httponly=True,
            samesite="strict",
            secure=_cookie_secure(request),
        )
        return OkOut(ok=True, message="logged out")

    @reader.get("/me", response_model=MeOut, tags=["auth"])
    async def me(principal: CurrentUser) -> MeOut:
        return MeOut(id=principal.id, username=principal.username, role=principal.role)

    # --- payments ------------------------------------------------------------------------------

    @reader.get("/payments", response_model=PageOut[PaymentOut], tags=["payments"])
    async def list_payments(
        limit: Limit = 20,
        offset: Offset = 0,
        status: Annotated[PaymentStatus | None, Query()] = None,
        order_id: Text64 = None,
        provider_payment_id: Text64 = None,
        invoice_id: Text64 = None,
        created_from: When = None,
        created_to: When = None,
    ) -> dict[str, Any]:
        start, end = _range(created_from, created_to, ("created_from", "created_to"))
        page = repo.Page(limit, offset)
        filters = repo.PaymentFilters(status, order_id, provider_payment_id, invoice_id, start, end)
        async with sessions() as session:
            rows, total = await repo.list_payments(session, filters, page)
        return _page([PaymentOut.model_validate(r) for r in rows], total, page)

    @reader.get("/payments/{payment_id}", response_model=PaymentDetailOut, tags=["payments"])
    async def get_payment(payment_id: uuid.UUID) -> PaymentDetailOut:
        async with snapshot(sessions) as session:
            row = await repo.get_payment(session, payment_id)
            if row is None:
                raise NotFoundError(f"payment {payment_id} not found")
            transitions = await repo.transitions_for_payment(session, payment_id)
        return PaymentDetailOut(
            **PaymentOut.model_validate(row).model_dump(),
            transitions=[TransitionOut.model_validate(t) for t in transitions],
        )

    # --- orders --------------------------------------------------------------------------------

    @reader.get("/orders", response_model=PageOut[OrderOut], tags=["orders"])
    async def list_orders(
        limit: Limit = 20,
        offset: Offset = 0,
        status: Annotated[OrderStatus | None, Query()] = None,
        email: Annotated[str | None, Query(min_length=1, max_length=320)] = None,
        created_from: When = None,
        created_to: When = None,
    ) -> dict[str, Any]:
        start, end = _range(created_from, created_to, ("created_from", "created_to"))
        page = repo.Page(limit, offset)
        async with sessions() as session:
            rows, total = await repo.list_orders(
                session, repo.OrderFilters(status, email, start, end), page
            )
        return _page([OrderOut.model_validate(r) for r in rows], total, page)

    @reader.get("/orders/{order_id}", response_model=OrderDetailOut, tags=["orders"])
    async def get_order(order_id: Annotated[str, Path(max_length=64)]) -> OrderDetailOut:
        async with snapshot(sessions) as session:
            row = await repo.get_order(session, order_id)
            if row is None:
                raise NotFoundError(f"order {order_id} not found")
            events = await repo.order_events(session, order_id)
            payments = await repo.payments_for_order(session, order_id)
            deliveries = await repo.deliveries_for_order(session, order_id)
            emails = await repo.emails_for_order(session, order_id)
            revocations = await repo.revocations_for_order(session, order_id)
        return OrderDetailOut(
            **OrderOut.model_validate(row).model_dump(),
            items=row.items,
            actually_paid=row.actually_paid,
            pay_amount=row.pay_amount,
            pay_currency=row.pay_currency,
            events=[OrderEventOut.model_validate(e) for e in events],
            payments=[PaymentOut.model_validate(p) for p in payments],
            deliveries=[DeliveryOut.model_validate(d) for d in deliveries],
            emails=[EmailOut.model_validate(e) for e in emails],
            revocations=[RevocationOut.model_validate(r) for r in revocations],
        )

    # --- webhook logs --------------------------------------------------------------------------

    @reader.get("/webhook-logs", response_model=PageOut[WebhookLogOut], tags=["webhooks"])
    async def list_webhook_logs(
        limit: Limit = 20,
        offset: Offset = 0,
        provider: Text64 = None,
        external_id: Annotated[
            str | None,
            Query(min_length=1, max_length=64, description="provider payment_id or invoice_id"),
        ] = None,
        event_type: Annotated[
            str | None,
            Query(min_length=1, max_length=32, description="payment_status of the callback"),
        ] = None,
        accepted: Annotated[bool | None, Query()] = None,
        received_from: When = None,
        received_to: When = None,
    ) -> dict[str, Any]:
        start, end = _range(received_from, received_to, ("received_from", "received_to"))
        page = repo.Page(limit, offset)
        filters = repo.WebhookLogFilters(provider, external_id, event_type, accepted, start, end)
        async with sessions() as session:
            rows, total = await repo.list_webhook_logs(session, filters, page)
        return _page([webhook_out(r) for r in rows], total, page)

    @reader.get("/webhook-logs/{log_id}", response_model=WebhookLogDetailOut, tags=["webhooks"])
    async def get_webhook_log(log_id: Annotated[str, Path(max_length=80)]) -> WebhookLogDetailOut:
        ref = parse_webhook_log_id(log_id)
        async with snapshot(sessions) as session:
            row = await repo.get_webhook_log(session, ref.public_id)
            if row is None:
                raise NotFoundError(f"webhook log {log_id} not found")
            publications = (
                await repo.webhook_publications(session, row.webhook_log_id)
                if row.webhook_log_id is not None
                else []
            )
            published_ids = [str(p.event_id) for p in publications]
            payments = await repo.payments_for_provider_ids(session, row.payment_id, row.invoice_id)
            transitions = (
                await repo.transitions_related_to(
                    session,
                    provider_payment_id=row.payment_id,
                    invoice_id=row.invoice_id,
                    causation_ids=published_ids,
                )
                if row.accepted
                else []
            )
        caused = CausedOut(
            publications=[PublicationOut.model_validate(p) for p in publications],
            payments=[PaymentOut.model_validate(p) for p in payments],
            transitions=[
                CausedTransitionOut(
                    **TransitionOut.model_validate(t).model_dump(),
                    caused_by_this=t.causation_id in published_ids,
                )
                for t in transitions
            ],
        )
        return WebhookLogDetailOut(
            **webhook_out(row).model_dump(),
            dedup_key=row.dedup_key,
            price_amount=row.price_amount,
            price_currency=row.price_currency,
            pay_amount=row.pay_amount,
            provider_updated_at=row.provider_updated_at,
            raw_body=row.raw_body,
            headers=row.headers or {},
            payload=row.payload or {},
            body_excerpt=row.body_excerpt,
            dropped_since_last=row.dropped_since_last,
            can_reprocess=row.accepted,
            caused=caused,
        )

    # --- dead letters, deliveries, audit -------------------------------------------------------

    @reader.get("/dead-letters", response_model=PageOut[DeadLetterOut], tags=["operations"])
    async def list_dead_letters(
        limit: Limit = 20,
        offset: Offset = 0,
        consumer: Text200 = None,
        original_subject: Text200 = None,
        dead_lettered_from: When = None,
        dead_lettered_to: When = None,
    ) -> dict[str, Any]:
        start, end = _range(
            dead_lettered_from, dead_lettered_to, ("dead_lettered_from", "dead_lettered_to")
        )
        page = repo.Page(limit, offset)
        filters = repo.DeadLetterFilters(consumer, original_subject, start, end)
        async with sessions() as session:
            rows, total = await repo.list_dead_letters(session, filters, page)
        return _page([dead_letter_out(r) for r in rows], total, page)

    @reader.get("/deliveries", response_model=PageOut[DeliveryOut], tags=["orders"])
    async def list_deliveries(
        limit: Limit = 20,
        offset: Offset = 0,
        order_id: Text64 = None,
        delivered_from: When = None,
        delivered_to: When = None,
    ) -> dict[str, Any]:
        start, end = _range(delivered_from, delivered_to, ("delivered_from", "delivered_to"))
        page = repo.Page(limit, offset)
        async with sessions() as session:
            rows, total = await repo.list_deliveries(
                session, repo.DeliveryFilters(order_id, start, end), page
            )
        return _page([DeliveryOut.model_validate(r) for r in rows], total, page)

    @reader.get("/audit", response_model=PageOut[AuditOut], tags=["operations"])
    async def list_audit(
        limit: Limit = 20,
        offset: Offset = 0,
        action: Text64 = None,
        actor: Text64 = None,
        target_id: Text200 = None,
        outcome: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
        occurred_from: When = None,
        occurred_to: When = None,
    ) -> dict[str, Any]:
        start, end = _range(occurred_from, occurred_to, ("occurred_from", "occurred_to"))
        page = repo.Page(limit, offset)
        filters = repo.AuditFilters(action, actor, target_id, outcome, start, end)
        async with sessions() as session:
            rows, total = await repo.list_audit(session, filters, page)
        return _page([AuditOut.model_validate(r) for r in rows], total, page)

    # --- needs attention -----------------------------------------------------------------------

    @reader.get("/needs-attention", response_model=NeedsAttentionOut, tags=["attention"])
    async def needs_attention(
        limit: Limit = 20,
        offset: Offset = 0,
        state: Annotated[Literal["open", "acknowledged", "resolved", "any"], Query()] = "open",
        kind: Annotated[str | None, Query(min_length=1, max_length=40)] = None,
        order_id: Text64 = None,
        payment_id: Annotated[uuid.UUID | None, Query()] = None,
        raised_from: When = None,
        raised_to: When = None,
    ) -> dict[str, Any]:
        start, end = _range(raised_from, raised_to, ("raised_from", "raised_to"))
        page = repo.Page(limit, offset)
        filters = repo.AttentionFilters(
            None if state == "any" else state, kind, order_id, payment_id, start, end
        )
        now = service.utcnow()
        async with snapshot(sessions) as session:
            rows, total = await repo.list_attention(session, filters, page)
            by_kind = await service.needs_attention_counts(session)
            letters, _ = await repo.list_dead_letters(
                session, repo.DeadLetterFilters(), repo.Page(SECTION_SIZE, 0)
            )
            stuck, stuck_total = await repo.list_stuck(session, repo.Page(SECTION_SIZE, 0))
        counts = counts_out(by_kind)
        return {
            **_page([attention_out(r, now) for r in rows], total, page),
            "counts": counts,
            "dead_letters": DeadLetterSectionOut(
                total=counts.dead_letters,
                items=[dead_letter_out(r) for r in letters],
                href="/admin/dead-letters",
            ),
            "stuck": StuckSectionOut(
                total=stuck_total,
                items=[StuckOut(**r, age_seconds=_age(r["since"], now)) for r in stuck],
                href="/admin/needs-attention/stuck",
            ),
        }

    @reader.get(
        "/needs-attention/counts", response_model=NeedsAttentionCountsOut, tags=["attention"]
    )
    async def needs_attention_counts() -> NeedsAttentionCountsOut:
        async with snapshot(sessions) as session:
            return counts_out(await service.needs_attention_counts(session))

    @reader.get("/needs-attention/stuck", response_model=PageOut[StuckOut], tags=["attention"])
    async def stuck_list(limit: Limit = 20, offset: Offset = 0) -> dict[str, Any]:
        page = repo.Page(limit, offset)
        now = service.utcnow()
        async with sessions() as session:
            rows, total = await repo.list_stuck(session, page)
        return _page([StuckOut(**r, age_seconds=_age(r["since"], now)) for r in rows], total, page)

    # --- operator actions ----------------------------------------------------------------------

    async def _in_tx(fn: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
        async with sessions() as session, session.begin():
            return await fn(session)

    @writer.post(
        "/webhook-logs/{log_id}/reprocess",
        response_model=ReprocessOut,
        status_code=202,
        responses={404: {}, 409: {}, 503: {}},
    )
    async def reprocess(
        log_id: Annotated[str, Path(max_length=80)],
        body: Annotated[ReasonIn, Body()],
        principal: Operator,
        request: Request,
    ) -> JSONResponse:
        ref = parse_webhook_log_id(log_id)
        actor = Actor(principal.id, principal.username, _client_ip(request))
        audit_id, _ = await _in_tx(lambda s: service.begin_reprocess(s, actor, ref, body.reason))
        result = await service.send_reprocess(
            ctx.broker,
            webhook_log_id=ref.webhook_log_id,
            operator_id=principal.id,
            reason=body.reason,
            timeout=settings.rpc_timeout_seconds,
        )
        await _in_tx(
            lambda s: service.complete_audit(
                s,
                audit_id,
                result.outcome,
                {"message": result.message, "error_code": result.error_code, **result.data},
            )
        )
        out = ReprocessOut(
            ok=result.ok,
            message=result.message,
            error_code=result.error_code,
            audit_id=audit_id,
            event_id=result.data.get("event_id"),
        )
        return _action_response(out, result)

    @writer.post(
        "/orders/{order_id}/revoke-downloads",
        response_model=RevokeOut,
        responses={404: {}, 409: {}, 503: {}},
    )
    async def revoke_downloads(
        order_id: Annotated[str, Path(max_length=64)],
        body: Annotated[ReasonIn, Body()],
        principal: Operator,
        request: Request,
    ) -> JSONResponse:
        actor = Actor(principal.id, principal.username, _client_ip(request))
        audit_id, _ = await _in_tx(lambda s: service.begin_revoke(s, actor, order_id, body.reason))
        result = await service.send_revoke(
            ctx.broker,
            order_id=order_id,
            operator_id=principal.id,
            reason=body.reason,
            timeout=settings.rpc_timeout_seconds,
        )
        await _in_tx(
            lambda s: service.complete_audit(
                s,
                audit_id,
                result.outcome,
                {"message": result.message, "error_code": result.error_code, **result.data},
            )
        )
        out = RevokeOut(
            ok=result.ok,
            message=result.message,
            error_code=result.error_code,
            audit_id=audit_id,
            revoked=int(result.data.get("revoked") or 0),
        )
        return _action_response(out, result, ok_status=200)

    @writer.post(
        "/attention/{payment_id}/acknowledge",
        response_model=AcknowledgeOut,
        tags=["attention"],
        responses={404: {}, 409: {}},
    )
    async def acknowledge(
        payment_id: uuid.UUID,
        body: Annotated[AcknowledgeIn, Body()],
        principal: Operator,
        request: Request,
    ) -> AcknowledgeOut:
        actor = Actor(principal.id, principal.username, _client_ip(request))
        audit_id = await _in_tx(
            lambda s: service.acknowledge_attention(s, actor, payment_id, body.key, body.reason)
        )
        return AcknowledgeOut(
            ok=True,
            message="Acknowledged: the item is off the open list.",
            audit_id=audit_id,
            state="acknowledged",
        )

    async def _payment_action(
        action: PaymentAction, principal: Principal, request: Request, key: str | None
    ) -> JSONResponse:
        actor = Actor(principal.id, principal.username, _client_ip(request))
        started = await _in_tx(lambda s: service.begin_payment_action(s, actor, action, key))
        result = started.done
        if result is None and started.in_flight and key is not None:
            result = await service.await_payment_action(
                sessions, action, key, settings.rpc_timeout_seconds + 2
            )
        replayed, resolved = result is not None, 0
        if result is None:
            sent = await service.send_payment_action(
                ctx.broker,
                action,
                operator=principal.username,
                action_id=started.action_id,
                timeout=settings.rpc_timeout_seconds,
            )
            resolved = await _in_tx(
                lambda s: service.complete_payment_action(s, actor, action, started, sent)
            )
            result = sent
        out = PaymentActionOut(
            ok=result.ok,
            message=result.message,
            error_code=result.error_code,
            audit_id=started.audit_id,
            action_id=started.action_id,
            payment_id=result.data.get("payment_id"),
            status=result.data.get("status"),
            changed=bool(result.data.get("changed")),
            retryable=bool(result.data.get("retryable")),
            replayed=replayed,
            resolved=resolved,
        )
        content = out.model_dump(mode="json")
        if not result.ok:
            content["detail"] = result.message
        return JSONResponse(content, status_code=_payment_action_status(result))

    @writer.post(
        "/orders/{order_id}/settle",
        response_model=PaymentActionOut,
        tags=["attention"],
        responses={404: {}, 409: {}, 422: {}, 502: {}, 503: {}},
    )
    async def settle(
        order_id: Annotated[str, Path(max_length=64)],
        body: Annotated[SettleIn, Body()],
        principal: Operator,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        action = PaymentAction("settle", order_id, body.reason)
        return await _payment_action(action, principal, request, idempotency_key)

    @writer.post(
        "/orders/{order_id}/attach-payment",
        response_model=PaymentActionOut,
        tags=["attention"],
        responses={404: {}, 409: {}, 422: {}, 502: {}, 503: {}},
    )
    async def attach_payment(
        order_id: Annotated[str, Path(max_length=64)],
        body: Annotated[AttachIn, Body()],
        principal: Operator,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        action = PaymentAction("attach", order_id, body.reason, body.provider_payment_id)
        return await _payment_action(action, principal, request, idempotency_key)

    for route in reader.routes:
        methods = set(getattr(route, "methods", set())) - SAFE_METHODS
        path = getattr(route, "path", "")
        if any((m, path) not in SELF_SERVICE_ROUTES for m in methods):
            raise RuntimeError(f"{methods} {path} changes state: put it on the writer router")
    return [public, reader, writer]


def _action_response(
    out: BaseModel, result: service.ActionResult, ok_status: int = 202
) -> JSONResponse:
    if result.ok:
        status = ok_status
    elif result.outcome == "unavailable":
        status = 503
    elif result.error_code == "not_found":
        status = 404
    elif result.error_code == "invalid_request":
        status = 422
    else:
        status = 409
    content = out.model_dump(mode="json")
    if not result.ok:
        content["detail"] = result.message  # the same key every other error uses
    return JSONResponse(content, status_code=status)


def _payment_action_status(result: service.ActionResult) -> int:
    if result.ok:
        return 200
    code = result.error_code
    if code in ("unavailable", "timeout"):  # nobody answered / payments' database is down
        return 503
    if code in ("provider_unavailable", "internal_error"):  # failed behind payments
        return 502
    if code in ("payment_not_found", "provider_payment_not_found"):
        return 404
    if code == "invalid_request":
        return 422
    return 409


def install_error_handlers(app: FastAPI) -> None:
    async def admin_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, AdminError)
        headers: dict[str, str] = {}
        if isinstance(exc, NotAuthenticatedError):
            headers["WWW-Authenticate"] = "Bearer"
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        body: dict[str, Any] = {"detail": exc.message}
        if isinstance(exc, InvalidInputError):
            body = {"detail": [{"loc": [exc.field], "msg": exc.reason, "type": "value_error"}]}
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    async def database_error(_: Request, exc: Exception) -> Response:
        if isinstance(exc, DatabaseUnavailableError) or is_connection_error(exc):
            log.warning("database_unavailable", error=type(exc).__name__)
            return JSONResponse(
                {"detail": "database unavailable; try again shortly"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        log.error("database_error", error=repr(exc)[:300])
        return JSONResponse({"detail": "internal error"}, status_code=500)

    async def os_error(_: Request, exc: Exception) -> Response:
        log.warning("dependency_unavailable", error=type(exc).__name__)
        return JSONResponse(
            {"detail": "a dependency is unavailable; try again shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    app.add_exception_handler(AdminError, admin_error)
    app.add_exception_handler(SQLAlchemyError, database_error)
    app.add_exception_handler(DatabaseUnavailableError, database_error)
    app.add_exception_handler(OSError, os_error)
    app.add_exception_handler(TimeoutError, os_error)
