"""HTTP boundary of the orders gateway: each handler owns its transaction and maps errors.

Every refusal names its field and reason; an unknown order and a wrong token get the same 404;
an unreachable dependency is a 503 (or 502 for the provider), never a stack trace.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from shared.contracts.payments import CreateInvoiceReply
from shared.db import DatabaseUnavailableError, is_connection_error
from shared.messaging.rpc import ServiceUnavailableError, request
from shared.observability import current_correlation_id, get_logger
from shared.runtime import ServiceContext
from sqlalchemy.exc import SQLAlchemyError

from orders import service
from orders.domain import FieldProblem
from orders.errors import (
    CheckoutNotAllowedError,
    InvalidOrderError,
    OrderNotFoundError,
    PaymentProviderError,
    PaymentsUnavailableError,
)
from orders.schemas import (
    CheckoutOut,
    CreateOrderIn,
    ErrorDetail,
    ErrorOut,
    OrderCreatedOut,
    OrderOut,
    ProductList,
    ValidationErrorOut,
)
from orders.settings import OrdersSettings

log = get_logger(__name__)

MAX_BODY_BYTES = 32 * 1024  # 20 lines of sku + quantity fit many times over
NOT_FOUND = "Order not found"


@dataclass(frozen=True)
class ApiState:
    ctx: ServiceContext
    settings: OrdersSettings
    pepper: bytes


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.orders
    return state


State = Annotated[ApiState, Depends(_state)]
OrderToken = Annotated[
    str | None,
    Header(alias="X-Order-Token", description="The order_token returned by POST /orders."),
]


async def _bounded_body(request: Request) -> None:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise InvalidOrderError(
            [
                FieldProblem(
                    ("body",),
                    f"request body is larger than {MAX_BODY_BYTES} bytes",
                    "body_too_large",
                )
            ]
        )


router = APIRouter()

_NOT_FOUND_DOC: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "Unknown order, or a missing or wrong token"}
}


@router.get("/products", response_model=ProductList, summary="Active products of the catalogue")
async def list_products(state: State) -> ProductList:
    async with state.ctx.sessions() as session:
        return ProductList(items=await service.list_products(session))


@router.post(
    "/orders",
    response_model=OrderCreatedOut,
    status_code=status.HTTP_201_CREATED,
    summary="Place an order",
    description=(
        "Validates the lines against the catalogue, computes the total server-side and stores "
        "the order as `created`. With an `Idempotency-Key`, a retry with the same body returns "
        "the first result (header `Idempotent-Replayed: true`), never a second order; the same "
        "key with another body is refused."
    ),
    responses={
        422: {
            "model": ValidationErrorOut,
            "description": "A field breaks a rule; `error.field` and `error.reason` say "
            "which and why",
        }
    },
    dependencies=[Depends(_bounded_body)],
)
async def create_order(
    body: CreateOrderIn,
    response: Response,
    state: State,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Printable ASCII, at most 255 characters; one key per order.",
        ),
    ] = None,
) -> OrderCreatedOut:
    async with state.ctx.sessions() as session, session.begin():
        result = await service.create_order(
            session,
            body,
            pepper=state.pepper,
            idempotency_key=idempotency_key,
            correlation_id=current_correlation_id() or str(uuid.uuid4()),
            now=datetime.now(UTC),
        )
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return result.order


@router.post(
    "/orders/{order_id}/checkout",
    response_model=CheckoutOut,
    summary="Get the payment page for an order",
    description=(
        "Asks payments for an invoice and moves the order to `awaiting_payment`. Calling it "
        "again returns the same invoice. Nothing changes when payments or the provider fail, so "
        "the customer can simply retry."
    ),
    responses={
        **_NOT_FOUND_DOC,
        409: {"model": ErrorOut, "description": "The order is past checkout (paid, expired...)"},
        502: {"model": ErrorOut, "description": "The payment provider refused or failed"},
        503: {"model": ErrorOut, "description": "Payments did not answer; retry later"},
    },
)
async def checkout(order_id: str, state: State, token: OrderToken = None) -> CheckoutOut:
    async with state.ctx.sessions() as session:
        plan = await service.plan_checkout(
            session,
            order_id,
            token,
            pepper=state.pepper,
            storefront_url=state.settings.storefront_url,
        )
    if plan.existing is not None:
        return plan.existing
    assert plan.request is not None
    try:
        reply = await request(
            state.ctx.broker,
            plan.request,
            CreateInvoiceReply,
            timeout=state.settings.payments_timeout_seconds,
        )
    except ServiceUnavailableError as exc:
        log.warning("payments_unavailable", order_id=order_id, error=str(exc))
        raise PaymentsUnavailableError() from exc
    async with state.ctx.sessions() as session, session.begin():
        return await service.record_invoice(session, order_id, reply, now=datetime.now(UTC))


@router.get(
    "/orders/{order_id}",
    response_model=OrderOut,
    summary="Order status for the customer",
    description="Needs the order token in `X-Order-Token` or `?token=`.",
    responses=_NOT_FOUND_DOC,
)
async def get_order(
    order_id: str,
    state: State,
    token_header: OrderToken = None,
    token: Annotated[str | None, Query(description="Alternative to X-Order-Token")] = None,
) -> OrderOut:
    async with state.ctx.sessions() as session:
        return await service.get_order(
            session, order_id, token_header or token, pepper=state.pepper
        )


# --- error bodies ----------------------------------------------------------------------------


def _error(
    status_code: int,
    detail: str,
    code: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorOut(detail=detail, error=ErrorDetail(field=field, reason=detail, code=code))
    return JSONResponse(body.model_dump(mode="json"), status_code=status_code, headers=headers)


def _validation(problems: list[FieldProblem]) -> JSONResponse:
    first = problems[0]
    body = {
        "detail": [{"loc": list(p.loc), "msg": p.msg, "type": p.type} for p in problems],
        "error": {"field": first.field, "reason": first.msg, "code": first.type},
    }
    return JSONResponse(body, status_code=422)


async def _on_request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Only loc, msg and type: the echoed input could be long or sensitive.
    problems = [
        FieldProblem(
            tuple(err.get("loc", ())),
            str(err.get("msg", "invalid")),
            str(err.get("type", "value_error")),
        )
        for err in exc.errors()
    ]
    return _validation(problems or [FieldProblem(("body",), "invalid request", "value_error")])


async def _on_invalid_order(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidOrderError)
    return _validation(list(exc.problems))


async def _on_not_found(_: Request, exc: Exception) -> JSONResponse:
    return _error(404, NOT_FOUND, "order_not_found")


async def _on_checkout_conflict(_: Request, exc: Exception) -> JSONResponse:
    return _error(409, str(exc), "checkout_not_allowed", field="status")


async def _on_payments_unavailable(_: Request, exc: Exception) -> JSONResponse:
    return _error(
        503,
        "Payments are temporarily unavailable; nothing was charged or changed. "
        "Please try again in a moment.",
        "payments_unavailable",
        headers={"Retry-After": "5"},
    )


async def _on_provider_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PaymentProviderError)
    return _error(
        502,
        f"The payment provider could not create an invoice: {exc}. "
        "Nothing was changed; please try again.",
        exc.code,
    )


async def _on_database_error(_: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, DatabaseUnavailableError) or is_connection_error(exc):
        log.warning("database_unavailable", error=repr(exc)[:300])
        return _error(
            503,
            "The service is temporarily unavailable; please try again.",
            "database_unavailable",
            headers={"Retry-After": "5"},
        )
    log.error("database_error", error=repr(exc)[:500])
    return _error(500, "Internal error; nothing was changed.", "internal_error")


def install(app: FastAPI, ctx: ServiceContext, settings: OrdersSettings) -> None:
    app.state.orders = ApiState(ctx=ctx, settings=settings, pepper=settings.token_pepper())
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(InvalidOrderError, _on_invalid_order)
    app.add_exception_handler(OrderNotFoundError, _on_not_found)
    app.add_exception_handler(CheckoutNotAllowedError, _on_checkout_conflict)
    app.add_exception_handler(PaymentsUnavailableError, _on_payments_unavailable)
    app.add_exception_handler(PaymentProviderError, _on_provider_error)
    for db_error in (SQLAlchemyError, DatabaseUnavailableError, OSError, TimeoutError):
        app.add_exception_handler(db_error, _on_database_error)
