"""Storefront: products, checkout, and the order status page the provider sends customers back to.

The order token that orders hands out is the customer's only key to an order. It is kept in an
HttpOnly cookie scoped to that order's path and never written into a page.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse
from shared.observability import get_logger
from starlette.responses import Response

from web.clients import (
    BackendUnavailableError,
    InvalidInputError,
    NotFoundError,
    OrderView,
    Product,
)
from web.order_states import history_label, status_view
from web.pages import error_page, orders_client, render
from web.security import ORDER_COOKIE_MAX_AGE, ORDER_COOKIE_PREFIX, check_csrf, cookie_secure
from web.settings import origin_of

log = get_logger(__name__)
router = APIRouter()

ORDER_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
SKU = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9-]{16,64}$")
MAX_QUANTITY = 10
MAX_EMAIL = 254


# -- order token cookie ------------------------------------------------------------------------


def _cookie_name(order_id: str) -> str:
    return f"{ORDER_COOKIE_PREFIX}{order_id}"


def remember_order(request: Request, response: Response, order_id: str, token: str) -> None:
    signed = request.app.state.signer.sign(f"order:{order_id}", token)
    response.set_cookie(
        _cookie_name(order_id),
        signed,
        max_age=ORDER_COOKIE_MAX_AGE,
        httponly=True,
        samesite="lax",  # the provider's redirect back is a top-level GET: Lax cookies go along
        secure=cookie_secure(request),
        path=f"/orders/{order_id}",
    )


def order_token(request: Request, order_id: str) -> str | None:
    if not ORDER_ID.match(order_id):
        return None
    token = request.app.state.signer.unsign(
        f"order:{order_id}", request.cookies.get(_cookie_name(order_id)), ORDER_COOKIE_MAX_AGE
    )
    return token if isinstance(token, str) else None


# -- pages -------------------------------------------------------------------------------------


@router.get("/")
async def home(request: Request) -> Response:
    products = await orders_client(request).list_products()
    return render(request, "storefront/index.html", {"products": products})


async def _product(request: Request, sku: str) -> Product | None:
    if not SKU.match(sku):
        return None
    products = await orders_client(request).list_products()
    return next((p for p in products if p.sku == sku), None)


def _product_form(
    request: Request,
    product: Product,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "storefront/product.html",
        {
            "product": product,
            "values": {"email": "", "quantity": 1, **(values or {})},
            "errors": errors or {},
            # One key per rendered form: a double submit creates one order, a new visit another.
            "idempotency_key": str(uuid.uuid4()),
            "max_quantity": MAX_QUANTITY,
        },
        status_code=status_code,
    )


@router.get("/products/{sku}")
async def product_page(request: Request, sku: str) -> Response:
    product = await _product(request, sku)
    if product is None:
        return error_page(
            request,
            404,
            "Product not found",
            "We do not sell that product.",
            link=("/", "See all products"),
        )
    return _product_form(request, product)


def _field_of(backend_field: str | None) -> str:
    name = (backend_field or "").lower()
    if "email" in name:
        return "email"
    if "quantity" in name:
        return "quantity"
    return "form"


def _check_payment_url(request: Request, url: str) -> bool:
    allowed: tuple[str, ...] = request.app.state.settings.payment_origins
    return url.startswith(("https://", "http://")) and origin_of(url) in allowed


@router.post("/checkout")
async def checkout(request: Request) -> Response:
    form = await request.form()
    check_csrf(request, form)
    sku = str(form.get("sku", ""))
    product = await _product(request, sku)
    if product is None:
        return error_page(
            request,
            404,
            "Product not found",
            "We do not sell that product.",
            link=("/", "See all products"),
        )
    email = str(form.get("email", "")).strip()
    raw_quantity = str(form.get("quantity", "1")).strip()
    key = str(form.get("idempotency_key", ""))
    values = {"email": email, "quantity": raw_quantity}
    errors: dict[str, str] = {}
    if not email or len(email) > MAX_EMAIL or "@" not in email:
        errors["email"] = "Enter the email address the download link should go to."
    quantity = int(raw_quantity) if raw_quantity.isdigit() else 0
    if not 1 <= quantity <= MAX_QUANTITY:
        errors["quantity"] = f"Choose a quantity from 1 to {MAX_QUANTITY}."
    if not IDEMPOTENCY_KEY.match(key):
        errors["form"] = "The form was incomplete; please submit it again."
    if errors:
        return _product_form(request, product, values=values, errors=errors, status_code=422)

    orders = orders_client(request)
    try:
        order = await orders.create_order(
            email=email, sku=sku, quantity=quantity, idempotency_key=key
        )
    except InvalidInputError as exc:
        errors[_field_of(exc.field)] = exc.message
        return _product_form(request, product, values=values, errors=errors, status_code=422)

    try:
        invoice = await orders.checkout(order.order_id, order.order_token)
    except (BackendUnavailableError, InvalidInputError) as exc:
        response = error_page(
            request,
            503 if isinstance(exc, BackendUnavailableError) else 409,
            "Payments are temporarily unavailable",
            f"{exc.message} Your order {order.order_id} is saved: you can retry from its page.",
            link=(f"/orders/{order.order_id}", "Go to your order and try again"),
        )
        remember_order(request, response, order.order_id, order.order_token)
        return response

    if not _check_payment_url(request, invoice.payment_url):
        log.error("payment_url_not_allowed", order_id=order.order_id)
        response = error_page(
            request,
            502,
            "Payment page unavailable",
            "The payment provider answered with an address we do not trust. Try again later.",
            link=(f"/orders/{order.order_id}", "Go to your order"),
        )
        remember_order(request, response, order.order_id, order.order_token)
        return response
    response = RedirectResponse(invoice.payment_url, status_code=303)
    remember_order(request, response, order.order_id, order.order_token)
    return response


def _order_missing(request: Request) -> Response:
    return error_page(
        request,
        404,
        "Order not found",
        "We cannot show this order in this browser. Open it in the browser you ordered with, "
        "or follow the link in your email.",
        link=("/", "Back to the shop"),
    )


def _status_payload(order: OrderView) -> dict[str, Any]:
    view = status_view(order.status, order.payment_status, order.message)
    return {
        "order_id": order.order_id,
        "status": order.status,
        "payment_status": order.payment_status,
        **view.as_dict(),
        "history": [
            {"status": h.status, "label": history_label(h.status), "at": h.at}
            for h in order.history
        ],
    }


@router.get("/orders/{order_id}")
async def order_page(request: Request, order_id: str) -> Response:
    token = order_token(request, order_id)
    if token is None:
        return _order_missing(request)
    try:
        order = await orders_client(request).get_order(order_id, token)
    except NotFoundError:
        return _order_missing(request)
    view = status_view(order.status, order.payment_status, order.message)
    retry_sku = order.items[0].sku if order.items else None
    payment_url = (
        order.payment_url
        if order.payment_url and _check_payment_url(request, order.payment_url)
        else None
    )
    return render(
        request,
        "storefront/order.html",
        {
            "order": order,
            "view": view,
            "payment_url": payment_url,
            "retry_url": f"/products/{retry_sku}" if retry_sku else "/",
            "history": [(history_label(h.status), h) for h in order.history],
        },
    )


@router.get("/orders/{order_id}/status")
async def order_status(request: Request, order_id: str) -> Response:
    token = order_token(request, order_id)
    if token is None:
        return JSONResponse({"error": "not_found"}, status_code=404)
    try:
        order = await orders_client(request).get_order(order_id, token)
    except NotFoundError:
        return JSONResponse({"error": "not_found"}, status_code=404)
    except BackendUnavailableError:
        return JSONResponse({"error": "unavailable"}, status_code=503)
    return JSONResponse(_status_payload(order))


@router.post("/orders/{order_id}/pay")
async def pay_order(request: Request, order_id: str) -> Response:
    form = await request.form()
    check_csrf(request, form)
    token = order_token(request, order_id)
    if token is None:
        return _order_missing(request)
    try:
        invoice = await orders_client(request).checkout(order_id, token)
    except NotFoundError:
        return _order_missing(request)
    except InvalidInputError as exc:
        return error_page(
            request,
            409,
            "This order cannot be paid now",
            exc.message,
            link=(f"/orders/{order_id}", "Back to your order"),
        )
    except BackendUnavailableError as exc:
        return error_page(
            request,
            503,
            "Payments are temporarily unavailable",
            exc.message,
            link=(f"/orders/{order_id}", "Back to your order"),
        )
    if not _check_payment_url(request, invoice.payment_url):
        log.error("payment_url_not_allowed", order_id=order_id)
        return error_page(
            request,
            502,
            "Payment page unavailable",
            "The payment provider answered with an address we do not trust.",
            link=(f"/orders/{order_id}", "Back to your order"),
        )
    return RedirectResponse(invoice.payment_url, status_code=303)
