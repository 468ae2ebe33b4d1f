"""The hosted invoice page a customer is sent to (invoice_url), with a form to play a payment.

Form controls keep stable ids for browser tests: select#coin (name pay_currency), radios named
"scenario" (#scenario-<name>, one per scenario) and button#pay. While a payment is still waiting,
the status page offers a#choose-another-coin: the customer goes back and opens a second payment
on the same invoice in another coin, as on the provider's page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.templating import Jinja2Templates

from .coins import COINS, pay_amount_for
from .responses import emulator_of
from .scenarios import SCENARIOS, Scenario, final_status, is_final
from .service import Emulator
from .signing import js_number
from .state import Invoice, Payment, iso

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

_MAX_FORM = 4096


def _message(
    request: Request,
    heading: str,
    message: str,
    status_code: int,
    link_url: str | None = None,
    link_text: str = "Return to the shop",
) -> Response:
    return templates.TemplateResponse(
        request,
        "message.html",
        {"heading": heading, "message": message, "link_url": link_url, "link_text": link_text},
        status_code=status_code,
    )


def _lookup(emulator: Emulator, invoice_id: str) -> Invoice | None:
    if not invoice_id.isdigit() or len(invoice_id) > 19:
        return None
    return emulator.store.invoices.get(int(invoice_id))


def _latest_payment(emulator: Emulator, invoice: Invoice) -> Payment | None:
    # The customer's latest choice of coin; repeated and wrong-asset deposits are not choices.
    emulator.sweep_expired()
    for payment_id in reversed(invoice.payment_ids):
        payment = emulator.store.payments[payment_id]
        if payment.parent_payment_id is None:
            return payment
    return None


def _blocks_new_payment(payment: Payment | None, *, another_coin: bool = False) -> bool:
    # A failed, expired or cancelled attempt lets the customer try again, and so does going back
    # from a payment still waiting for coins; anything else is in progress or paid.
    if payment is None or payment.payment_status in ("failed", "expired", "cancelled"):
        return False
    return not (another_coin and payment.payment_status == "waiting")


def _return_url(invoice: Invoice, status: str) -> str | None:
    if status == "finished":
        return invoice.success_url
    if status == "partially_paid":
        return invoice.partially_paid_url or invoice.success_url
    if status in ("failed", "expired", "refunded", "cancelled"):
        return invoice.cancel_url
    return None


def _status_path(invoice: Invoice) -> str:
    return f"/invoice/{invoice.id}/status"


def _invoice_form(
    request: Request,
    emulator: Emulator,
    invoice: Invoice,
    *,
    error: str | None = None,
    selected_coin: str | None = None,
    selected_scenario: str = "full",
    status_code: int = 200,
) -> Response:
    coins = [
        {
            "code": coin.code,
            "name": coin.name,
            "amount": js_number(pay_amount_for(invoice.price_amount, invoice.price_currency, coin)),
        }
        for coin in COINS.values()
        # An invoice created with pay_currency is fixed to that coin, as on the provider.
        if invoice.pay_currency in (None, coin.code)
    ]
    return templates.TemplateResponse(
        request,
        "invoice.html",
        {
            "invoice": invoice,
            "price_amount": js_number(invoice.price_amount),
            "expires_at": iso(invoice.expires_at),
            "coins": coins,
            "selected_coin": selected_coin or invoice.pay_currency or "btc",
            "scenarios": SCENARIOS,
            "selected_scenario": selected_scenario,
            "error": error,
        },
        status_code=status_code,
    )


@router.get("/payment/")
async def provider_style_link(
    request: Request, iid: Annotated[str, Query(max_length=19)] = ""
) -> Response:
    # The provider's own links look like /payment/?iid=…; accept them too.
    if not iid.isdigit():
        return _message(request, "Invoice not found", "There is no invoice with this id.", 404)
    return RedirectResponse(f"/invoice/{iid}", status_code=307)


@router.get("/invoice/{invoice_id}")
async def invoice_page(
    invoice_id: str,
    request: Request,
    another_coin: Annotated[str, Query(max_length=8)] = "",
) -> Response:
    emulator = emulator_of(request)
    invoice = _lookup(emulator, invoice_id)
    if invoice is None:
        return _message(request, "Invoice not found", "There is no invoice with this id.", 404)
    if _blocks_new_payment(_latest_payment(emulator, invoice), another_coin=another_coin == "1"):
        return RedirectResponse(_status_path(invoice), status_code=303)
    if invoice.is_expired():
        return _message(
            request,
            "Invoice expired",
            "This invoice has expired; ask the shop for a new one.",
            410,
            invoice.cancel_url,
        )
    return _invoice_form(request, emulator, invoice)


@router.post("/invoice/{invoice_id}")
async def submit_payment(invoice_id: str, request: Request) -> Response:
    emulator = emulator_of(request)
    invoice = _lookup(emulator, invoice_id)
    if invoice is None:
        return _message(request, "Invoice not found", "There is no invoice with this id.", 404)
    # Submitting the form again while the last payment waits = choosing another coin.
    if _blocks_new_payment(_latest_payment(emulator, invoice), another_coin=True):
        return RedirectResponse(_status_path(invoice), status_code=303)
    if invoice.is_expired():
        return _message(
            request, "Invoice expired", "This invoice has expired.", 410, invoice.cancel_url
        )
    raw = await request.body()
    # Parsed by hand to stay free of python-multipart; the form is urlencoded and tiny.
    form = parse_qs(raw[:_MAX_FORM].decode("utf-8", "replace"))
    coin_code = (form.get("pay_currency") or form.get("coin") or [invoice.pay_currency or ""])[0]
    scenario = (form.get("scenario") or ["full"])[0]
    coin = COINS.get(coin_code.lower())
    if coin is None or invoice.pay_currency not in (None, coin.code):
        return _invoice_form(
            request,
            emulator,
            invoice,
            error="Choose a coin to pay with.",
            selected_scenario=scenario if scenario in SCENARIOS else "full",
            status_code=400,
        )
    if scenario not in SCENARIOS:
        return _invoice_form(
            request,
            emulator,
            invoice,
            error="Choose what the customer should do.",
            selected_coin=coin.code,
            status_code=400,
        )
    chosen = cast(Scenario, scenario)
    payment = emulator.open_payment(invoice, coin)
    emulator.play(payment, chosen)
    # Like the real page, send the customer back at once; the IPNs follow in the background.
    target = _return_url(invoice, final_status(chosen)) or _status_path(invoice)
    return RedirectResponse(target, status_code=303)


@router.get("/invoice/{invoice_id}/status")
async def payment_status_page(invoice_id: str, request: Request) -> Response:
    emulator = emulator_of(request)
    invoice = _lookup(emulator, invoice_id)
    if invoice is None:
        return _message(request, "Invoice not found", "There is no invoice with this id.", 404)
    payment = _latest_payment(emulator, invoice)
    if payment is None:
        return RedirectResponse(f"/invoice/{invoice.id}", status_code=303)
    final = is_final(payment.payment_status)
    return templates.TemplateResponse(
        request,
        "status.html",
        {
            "invoice": invoice,
            "payment": payment,
            "final": final,
            "pay_amount": js_number(payment.pay_amount),
            "actually_paid": js_number(payment.actually_paid),
            "link_url": _return_url(invoice, payment.payment_status),
            "another_coin_url": f"/invoice/{invoice.id}?another_coin=1"
            if payment.payment_status == "waiting" and not invoice.is_expired()
            else None,
        },
    )
