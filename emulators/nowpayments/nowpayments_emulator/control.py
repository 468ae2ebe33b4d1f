"""Test-only control API under /_emulator: drive payments, inject misbehaviour, inspect IPNs.

No auth on purpose: the emulator only ever listens on a developer's or CI's loopback.
"""

from __future__ import annotations

from dataclasses import asdict
from decimal import Decimal
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .coins import COINS
from .responses import emulator_of
from .scenarios import Scenario, Step, notified_statuses
from .service import Emulator
from .signing import js_number
from .state import (
    UNKNOWN_STATUS,
    BehaviourPatch,
    Fault,
    Invoice,
    Payment,
    PaymentStatus,
    iso,
)

KNOWN_STATUSES: frozenset[str] = frozenset(get_args(PaymentStatus))

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
    # A known status; with allow_unknown_status any lowercase word up to 40 characters
    # (e.g. "status_from_the_future"), to see how the merchant copes with a new status.
    payment_status: str = Field(max_length=40)
    allow_unknown_status: bool = False
    actually_paid: Decimal | None = Field(default=None, ge=0)
    send_ipn: bool = True

    @model_validator(mode="after")
    def _status_is_allowed(self) -> StatusPush:
        if self.payment_status in KNOWN_STATUSES:
            return self
        if not self.allow_unknown_status:
            raise ValueError(
                f"unknown payment_status {self.payment_status!r}; known: {sorted(KNOWN_STATUSES)}"
                " (set allow_unknown_status to send another one)"
            )
        if not UNKNOWN_STATUS.fullmatch(self.payment_status):
            raise ValueError("an unknown payment_status must be a lowercase word (a-z, 0-9, _)")
        return self

    def behaviour_patch(self) -> BehaviourPatch:
        return BehaviourPatch(**self.model_dump(include=set(BehaviourPatch.model_fields)))


class RedepositRequest(BehaviourPatch):
    # What arrived, in pay_currency (a string keeps it exact).
    amount: Decimal = Field(gt=0)
    # Overrides the account setting (EMULATOR_REPEATED_DEPOSIT_STATUS / auto-processing).
    status: Literal["partially_paid", "finished"] | None = None
    # Another coin than the payment's = a wrong-asset deposit.
    pay_currency: str | None = None
    # Overrides the whole sequence, e.g. ["waiting", "confirming", "finished"].
    statuses: list[PaymentStatus] | None = Field(default=None, min_length=1, max_length=20)
    send_ipn: bool = True
    # price_amount / pay_amount of the child: the order's, or the deposit's own (see README).
    quote: Literal["order", "deposit"] | None = None

    def behaviour_patch(self) -> BehaviourPatch:
        return BehaviourPatch(**self.model_dump(include=set(BehaviourPatch.model_fields)))


class ClockAdvance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    advance_seconds: float = Field(ge=0, le=10 * 366 * 24 * 3600)


def _steps_json(steps: list[Step]) -> dict[str, list[str]]:
    # statuses: every status the payment walks through; notified: those that get an IPN.
    return {
        "statuses": [step.status for step in steps],
        "notified": notified_statuses(steps),
    }


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
        "is_fixed_rate": invoice.is_fixed_rate,
        "is_fee_paid_by_user": invoice.is_fee_paid_by_user,
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
    view["kind"] = payment.kind
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
        "repeated_deposit_status": config.repeated_deposit_status,
        "wrong_asset_auto_processing": config.wrong_asset_auto_processing,
        "outcome_currency": config.outcome_currency,
        "deposit_fee_rate": str(config.deposit_fee_rate),
        "withdrawal_fee_rate": str(config.withdrawal_fee_rate),
        "actually_paid_at_fiat": config.actually_paid_at_fiat,
        "ipn_retry_schedule": list(config.ipn_retry_schedule),
        "child_quote": config.child_quote,
        "coins": {
            code: {"decimals": coin.decimals, "usd_rate": str(coin.usd_rate)}
            for code, coin in COINS.items()
        },
    }


@router.post("/reset")
async def reset(request: Request) -> dict[str, bool]:
    await emulator_of(request).reset()
    return {"ok": True}


def _clock_json(emulator: Emulator, expired: list[int] | None = None) -> dict[str, Any]:
    return {
        "now": iso(emulator.clock.now()),
        "now_ms": emulator.clock.ms(),
        "offset_seconds": emulator.clock.offset,
        "expired_payment_ids": expired or [],
    }


@router.get("/clock")
async def get_clock(request: Request) -> dict[str, Any]:
    emulator = emulator_of(request)
    return _clock_json(emulator, emulator.sweep_expired())


@router.post("/clock")
async def advance_clock(body: ClockAdvance, request: Request) -> dict[str, Any]:
    """Move the emulator's time on; payments past their lifetime expire (with an IPN) now."""
    emulator = emulator_of(request)
    return _clock_json(emulator, emulator.advance_clock(body.advance_seconds))


@router.get("/invoices")
async def list_invoices(
    request: Request, order_id: Annotated[str | None, Query(max_length=2048)] = None
) -> dict[str, Any]:
    emulator = emulator_of(request)
    emulator.sweep_expired()
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
    # Paying again while an earlier payment still waits opens another payment on the invoice
    # (the customer went back and picked another coin); the first one waits on until it expires.
    payment = emulator.open_payment(invoice, coin)
    steps = emulator.play(
        payment,
        body.scenario,
        request=body.behaviour_patch(),
        actually_paid=body.actually_paid,
        statuses=body.statuses,
    )
    return {
        "payment_id": payment.payment_id,
        "invoice_id": invoice.id,
        **_steps_json(steps),
        "pay_currency": payment.pay_currency,
        "pay_amount": _money(payment.pay_amount),
        "pay_address": payment.pay_address,
        "valid_until": iso(payment.valid_until),
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
    emulator.sweep_expired()
    payments = [
        payment_json(payment)
        for payment in emulator.store.payments.values()
        if (invoice_id is None or payment.invoice_id == invoice_id)
        and (order_id is None or payment.order_id == order_id)
    ]
    return {"payments": payments}


@router.get("/payments/{payment_id}")
async def get_payment(payment_id: int, request: Request) -> dict[str, Any]:
    emulator = emulator_of(request)
    emulator.sweep_expired()
    return payment_json(_payment(emulator, payment_id))


@router.post("/payments/{payment_id}/play")
async def play_payment(payment_id: int, body: PlayRequest, request: Request) -> dict[str, Any]:
    emulator = emulator_of(request)
    payment = _payment(emulator, payment_id)
    steps = emulator.play(
        payment,
        body.scenario,
        request=body.behaviour_patch(),
        actually_paid=body.actually_paid,
        statuses=body.statuses,
    )
    return {"payment_id": payment.payment_id, **_steps_json(steps)}


@router.post("/payments/{payment_id}/redeposit")
async def redeposit(payment_id: int, body: RedepositRequest, request: Request) -> dict[str, Any]:
    """Coins sent again to the payment's address: a child payment with parent_payment_id."""
    emulator = emulator_of(request)
    payment = _payment(emulator, payment_id)
    if emulator.root_of(payment).payment_status == "waiting":
        raise HTTPException(
            409,
            f"payment {payment_id} is still waiting: its first deposit is the payment itself"
            " (use /play or /status)",
        )
    coin = None
    if body.pay_currency is not None:
        coin = COINS.get(body.pay_currency.lower())
        if coin is None:
            raise HTTPException(
                422, f"unknown pay_currency {body.pay_currency!r}; known: {sorted(COINS)}"
            )
    child, steps = emulator.redeposit(
        payment,
        body.amount,
        coin=coin,
        status=body.status,
        statuses=body.statuses,
        request=body.behaviour_patch(),
        send_ipn=body.send_ipn,
        quote=body.quote,
    )
    return {
        "payment_id": child.payment_id,
        "parent_payment_id": child.parent_payment_id,
        "invoice_id": child.invoice_id,
        "purchase_id": child.purchase_id,
        "kind": child.kind,
        **_steps_json(steps),
        "pay_currency": child.pay_currency,
        "pay_address": child.pay_address,
        "actually_paid": _money(child.actually_paid),
    }


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
    payment_status: Annotated[str | None, Query(max_length=40)] = None,
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
