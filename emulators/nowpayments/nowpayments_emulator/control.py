"""Test-only control API under /_emulator: drive payments, inject misbehaviour, inspect IPNs.

No auth on purpose: the emulator only ever listens on a developer's or CI's loopback.
"""

from __future__ import annotations

from dataclasses import asdict
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from .coins import COINS
from .responses import emulator_of
from .scenarios import Scenario
from .service import Emulator
from .signing import js_number
from .state import (
    BehaviourPatch,
    Fault,
    Invoice,
    Payment,
    PaymentStatus,
    iso,
)

router = APIRouter(prefix="/_emulator", tags=["emulator control"])


class PlayRequest(BehaviourPatch):
    scenario: Scenario = "full"
    # Overrides the scenario's received amount (crypto, in pay_currency); send it as a string.
    actually_paid: Decimal | None = Field(default=None, ge=0)
    # Overrides the scenario's status sequence, e.g. ["waiting", "finished", "confirming"].
    statuses: list[PaymentStatus] | None = Field(default=None, min_length=1, max_length=20)

    def behaviour_patch(self) -> BehaviourPatch:
        return BehaviourPatch(**self.model_dump(include=set(BehaviourPatch.model_fields)))


class PayRequest(PlayRequest):
    pay_currency: str | None = None


class StatusPush(BehaviourPatch):
    payment_status: PaymentStatus
    actually_paid: Decimal | None = Field(default=None, ge=0)
    send_ipn: bool = True

    def behaviour_patch(self) -> BehaviourPatch:
        return BehaviourPatch(**self.model_dump(include=set(BehaviourPatch.model_fields)))


def _money(value: Decimal) -> str:
    return js_number(value)


def invoice_json(emulator: Emulator, invoice: Invoice) -> dict[str, Any]:
    return {
        "id": invoice.id,
        "invoice_url": emulator.invoice_url(invoice),
        "status": "expired" if invoice.is_expired() else "open",
        "price_amount": _money(invoice.price_amount),
        "price_currency": invoice.price_currency,
        "pay_currency": invoice.pay_currency,
        "order_id": invoice.order_id,
        "order_description": invoice.order_description,
        "ipn_callback_url": invoice.ipn_callback_url,
        "success_url": invoice.success_url,
        "cancel_url": invoice.cancel_url,
        "partially_paid_url": invoice.partially_paid_url,
        "created_at": iso(invoice.created_at),
        "expires_at": iso(invoice.expires_at),
        "payment_ids": list(invoice.payment_ids),
        "behaviour": invoice.behaviour.model_dump(exclude_none=True) if invoice.behaviour else {},
    }


def payment_json(payment: Payment) -> dict[str, Any]:
    view = payment.api_view()
    for key, value in view.items():
        if isinstance(value, Decimal):
            view[key] = _money(value)
    view["ipn_callback_url"] = payment.ipn_callback_url
    view["history"] = list(payment.history)
    view["updated_at_ms"] = payment.updated_at_ms
    return view


def _invoice(emulator: Emulator, invoice_id: int) -> Invoice:
    invoice = emulator.store.invoices.get(invoice_id)
    if invoice is None:
        raise HTTPException(404, f"invoice {invoice_id} not found")
    return invoice


def _payment(emulator: Emulator, payment_id: int) -> Payment:
    payment = emulator.store.payments.get(payment_id)
    if payment is None:
        raise HTTPException(404, f"payment {payment_id} not found")
    return payment


def _behaviour_json(
    emulator: Emulator, patch: BehaviourPatch, invoice: Invoice | None
) -> dict[str, Any]:
    effective = asdict(emulator.behaviour_for(invoice, None))
    effective["drop_statuses"] = sorted(effective["drop_statuses"])
    return {"behaviour": patch.model_dump(exclude_none=True), "effective": effective}


@router.get("/config")
async def get_config(request: Request) -> dict[str, Any]:
    config = emulator_of(request).config
    # Secrets stay out: the merchant's config is where they belong.
    return {
        "public_url": config.public_url,
        "step_delay": config.step_delay,
        "ipn_retries": config.ipn_retries,
        "ipn_retry_interval": config.ipn_retry_interval,
        "callback_timeout": config.callback_timeout,
        "invoice_lifetime": config.invoice_lifetime,
        "min_price_usd": str(config.min_price_usd),
        "default_ipn_callback_url": config.default_ipn_callback_url,
        "coins": {
            code: {"decimals": coin.decimals, "usd_rate": str(coin.usd_rate)}
            for code, coin in COINS.items()
        },
    }


@router.post("/reset")
async def reset(request: Request) -> dict[str, bool]:
    await emulator_of(request).reset()
    return {"ok": True}


@router.get("/invoices")
async def list_invoices(
    request: Request, order_id: Annotated[str | None, Query(max_length=2048)] = None
) -> dict[str, Any]:
    emulator = emulator_of(request)
    invoices = [
        invoice_json(emulator, invoice)
        for invoice in emulator.store.invoices.values()
        if order_id is None or invoice.order_id == order_id
    ]
    return {"invoices": invoices}


@router.get("/invoices/{invoice_id}")
async def get_invoice(invoice_id: int, request: Request) -> dict[str, Any]:
    emulator = emulator_of(request)
    return invoice_json(emulator, _invoice(emulator, invoice_id))


@router.post("/invoices/{invoice_id}/pay")
async def pay_invoice(invoice_id: int, body: PayRequest, request: Request) -> dict[str, Any]:
    emulator = emulator_of(request)
    invoice = _invoice(emulator, invoice_id)
    if invoice.is_expired():
        raise HTTPException(409, f"invoice {invoice_id} has expired")
    code = (body.pay_currency or invoice.pay_currency or "btc").lower()
    coin = COINS.get(code)
    if coin is None:
        raise HTTPException(422, f"unknown pay_currency {code!r}; known: {sorted(COINS)}")
    payment = emulator.open_payment(invoice, coin)
    statuses = emulator.play(
        payment,
        body.scenario,
        request=body.behaviour_patch(),
        actually_paid=body.actually_paid,
        statuses=body.statuses,
    )
    return {
        "payment_id": payment.payment_id,
        "invoice_id": invoice.id,
        "statuses": statuses,
        "pay_currency": payment.pay_currency,
        "pay_amount": _money(payment.pay_amount),
        "pay_address": payment.pay_address,
    }


@router.post("/invoices/{invoice_id}/expire")
async def expire_invoice(invoice_id: int, request: Request) -> dict[str, Any]:
    emulator = emulator_of(request)
    invoice = _invoice(emulator, invoice_id)
    emulator.expire_invoice(invoice)
    return invoice_json(emulator, invoice)


@router.api_route("/invoices/{invoice_id}/behaviour", methods=["PUT", "POST"])
async def set_invoice_behaviour(
    invoice_id: int, body: BehaviourPatch, request: Request
) -> dict[str, Any]:
    emulator = emulator_of(request)
    invoice = _invoice(emulator, invoice_id)
    invoice.behaviour = body
    return _behaviour_json(emulator, body, invoice)


@router.get("/payments")
async def list_payments(
    request: Request,
    invoice_id: int | None = None,
    order_id: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    emulator = emulator_of(request)
    payments = [
        payment_json(payment)
        for payment in emulator.store.payments.values()
        if (invoice_id is None or payment.invoice_id == invoice_id)
        and (order_id is None or payment.order_id == order_id)
    ]
    return {"payments": payments}


@router.get("/payments/{payment_id}")
async def get_payment(payment_id: int, request: Request) -> dict[str, Any]:
    return payment_json(_payment(emulator_of(request), payment_id))


@router.post("/payments/{payment_id}/play")
async def play_payment(payment_id: int, body: PlayRequest, request: Request) -> dict[str, Any]:
    emulator = emulator_of(request)
    payment = _payment(emulator, payment_id)
    statuses = emulator.play(
        payment,
        body.scenario,
        request=body.behaviour_patch(),
        actually_paid=body.actually_paid,
        statuses=body.statuses,
    )
    return {"payment_id": payment.payment_id, "statuses": statuses}


@router.post("/payments/{payment_id}/status")
async def push_status(payment_id: int, body: StatusPush, request: Request) -> dict[str, Any]:
    emulator = emulator_of(request)
    payment = _payment(emulator, payment_id)
    emulator.push_status(
        payment,
        body.payment_status,
        actually_paid=body.actually_paid,
        request=body.behaviour_patch(),
        send_ipn=body.send_ipn,
    )
    return payment_json(payment)


@router.post("/payments/{payment_id}/resend")
async def resend(
    payment_id: int, request: Request, body: BehaviourPatch | None = None
) -> dict[str, Any]:
    """Deliver the payment's current state again, unchanged (same body, same signature)."""
    emulator = emulator_of(request)
    payment = _payment(emulator, payment_id)
    invoice = emulator.store.invoices.get(payment.invoice_id) if payment.invoice_id else None
    emulator.dispatcher.push(payment, emulator.behaviour_for(invoice, body), send_ipn=True)
    return payment_json(payment)


@router.get("/behaviour")
async def get_behaviour(request: Request) -> dict[str, Any]:
    emulator = emulator_of(request)
    return _behaviour_json(emulator, emulator.store.behaviour, None)


@router.api_route("/behaviour", methods=["PUT", "POST"])
async def set_behaviour(body: BehaviourPatch, request: Request) -> dict[str, Any]:
    emulator = emulator_of(request)
    emulator.store.behaviour = body
    return _behaviour_json(emulator, body, None)


@router.get("/faults")
async def list_faults(request: Request) -> dict[str, Any]:
    return {"faults": [fault.model_dump() for fault in emulator_of(request).store.faults]}


@router.post("/faults")
async def add_fault(body: Fault, request: Request) -> dict[str, Any]:
    store = emulator_of(request).store
    store.faults.append(body)
    return {"faults": [fault.model_dump() for fault in store.faults]}


@router.delete("/faults")
async def clear_faults(request: Request) -> dict[str, Any]:
    emulator_of(request).store.faults.clear()
    return {"faults": []}


@router.get("/ipn-log")
async def ipn_log(
    request: Request,
    payment_id: int | None = None,
    invoice_id: int | None = None,
    payment_status: PaymentStatus | None = None,
) -> dict[str, Any]:
    entries = [
        entry.to_json()
        for entry in emulator_of(request).dispatcher.log
        if (payment_id is None or entry.payment_id == payment_id)
        and (invoice_id is None or entry.invoice_id == invoice_id)
        and (payment_status is None or entry.payment_status == payment_status)
    ]
    return {"entries": entries}


def _ipn_state(emulator: Emulator, idle: bool) -> dict[str, Any]:
    return {
        "idle": idle,
        "pending": emulator.dispatcher.pending,
        "attempts": len(emulator.dispatcher.log),
    }


@router.get("/ipn/status")
async def ipn_status(request: Request) -> dict[str, Any]:
    emulator = emulator_of(request)
    return _ipn_state(emulator, emulator.dispatcher.pending == 0)


@router.post("/ipn/wait-idle", response_model=None)
async def wait_idle(
    request: Request, within: Annotated[float, Query(alias="timeout", gt=0, le=300)] = 10.0
) -> dict[str, Any] | JSONResponse:
    """Block until every playback and retry is done, so tests await a condition, not a sleep."""
    emulator = emulator_of(request)
    idle = await emulator.dispatcher.wait_idle(within)
    if not idle:
        return JSONResponse(_ipn_state(emulator, False), status_code=408)
    return _ipn_state(emulator, True)
