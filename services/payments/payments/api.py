"""Internal HTTP API: read a payment and its ledger. Health, readiness and metrics come from
``shared.observability``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, FastAPI, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from shared.contracts.payments import Amount
from shared.db import DatabaseUnavailableError, is_connection_error
from shared.observability import get_logger
from shared.runtime import ServiceContext
from sqlalchemy.exc import SQLAlchemyError

from payments import repository
from payments.models import Payment, PaymentTransition

log = get_logger(__name__)

router = APIRouter(prefix="/payments", tags=["payments"])


class TransitionView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    source: str
    outcome: str
    reported_status: str | None
    from_status: str
    to_status: str
    reason: str
    provider_payment_id: str | None
    pay_amount: Amount | None
    actually_paid: Amount | None
    provider_updated_at_ms: int | None
    event_id: uuid.UUID | None
    created_at: datetime


class PaymentView(BaseModel):
    """Amounts are Decimal, serialised as JSON strings."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    order_id: str
    provider: str
    status: str
    price_amount: Amount
    price_currency: str
    invoice_id: str | None
    invoice_url: str | None
    invoice_expires_at: datetime | None
    provider_payment_id: str | None
    pay_amount: Amount | None
    actually_paid: Amount | None
    pay_currency: str | None
    outcome_amount: Amount | None
    outcome_currency: str | None
    surplus: Amount | None
    shortfall: Amount | None
    version: int
    last_error_code: str | None
    last_error: str | None
    next_check_at: datetime | None
    created_at: datetime
    updated_at: datetime
    final_at: datetime | None
    transitions: list[TransitionView]

    @classmethod
    def of(cls, payment: Payment, ledger: list[PaymentTransition]) -> PaymentView:
        fields = {
            name: getattr(payment, name)
            for name in cls.model_fields
            if name not in ("version", "transitions")
        }
        return cls(
            **fields,
            version=payment.ledger_seq,
            transitions=[TransitionView.model_validate(t) for t in ledger],
        )


def _ctx(request: Request) -> ServiceContext:
    ctx: ServiceContext = request.app.state.ctx
    return ctx


async def _view(ctx: ServiceContext, payment: Payment | None) -> PaymentView:
    if payment is None:
        raise HTTPException(status_code=404, detail="payment not found")
    async with ctx.sessions() as session:
        ledger = list(await repository.transitions(session, payment.id))
    return PaymentView.of(payment, ledger)


@router.get("/{payment_id}", response_model=PaymentView)
async def get_payment(
    request: Request,
    payment_id: Annotated[uuid.UUID, Path(description="our payment id (a UUID)")],
) -> PaymentView:
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        payment = await repository.get(session, payment_id)
    return await _view(ctx, payment)


@router.get("/by-order/{order_id}", response_model=PaymentView)
async def get_payment_by_order(
    request: Request,
    order_id: Annotated[str, Path(min_length=1, max_length=64)],
) -> PaymentView:
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        payment = await repository.get_by_order(session, order_id)
    return await _view(ctx, payment)


def install(app: FastAPI) -> None:
    app.include_router(router)

    @app.exception_handler(SQLAlchemyError)
    async def database_error(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        if is_connection_error(exc):
            return JSONResponse({"detail": "database unavailable, try again"}, status_code=503)
        log.error("database_error", error=type(exc).__name__)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.exception_handler(DatabaseUnavailableError)
    async def database_unavailable(_: Request, __: DatabaseUnavailableError) -> JSONResponse:
        return JSONResponse({"detail": "database unavailable, try again"}, status_code=503)

    @app.exception_handler(OSError)
    async def connection_refused(_: Request, exc: OSError) -> JSONResponse:
        # asyncpg raises plain OSErrors (connection refused) before SQLAlchemy wraps anything.
        log.warning("database_unreachable", error=type(exc).__name__)
        return JSONResponse({"detail": "database unavailable, try again"}, status_code=503)
