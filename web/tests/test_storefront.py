"""Storefront pages against a fake orders gateway: checkout, the order cookie, status views."""

from __future__ import annotations

import re

import httpx
import pytest

from .conftest import EMULATOR, IDEMPOTENCY_INPUT, HarnessFactory, WebHarness


async def _checkout(web: WebHarness, **fields: str) -> httpx.Response:
    html, csrf = await web.form_page("/products/game-key")
    key = IDEMPOTENCY_INPUT.search(html)
    assert key
    data = {
        "csrf_token": csrf,
        "idempotency_key": key.group(1),
        "sku": "game-key",
        "email": "buyer@example.com",
        "quantity": "2",
        **fields,
    }
    return await web.client.post("/checkout", data=data)


async def test_home_lists_products_with_escaped_text(web: WebHarness) -> None:
    response = await web.client.get("/")
    assert response.status_code == 200
    assert "Space Game — Steam key" in response.text
    assert "Editor Pro licence" in response.text
    assert 'href="/products/game-key"' in response.text
    assert "<b>great</b>" not in response.text
    assert "&lt;b&gt;great&lt;/b&gt;" in response.text


async def test_unknown_product_is_a_friendly_404(web: WebHarness) -> None:
    response = await web.client.get("/products/no-such-thing")
    assert response.status_code == 404
    assert "Product not found" in response.text


async def test_checkout_creates_order_and_redirects_to_the_payment_page(web: WebHarness) -> None:
    response = await _checkout(web)

    assert response.status_code == 303
    assert response.headers["location"] == f"{EMULATOR}/invoice/ord-0001"
    order = web.orders.orders["ord-0001"]
    assert (order.email, order.sku, order.quantity) == ("buyer@example.com", "game-key", 2)
    create = next(r for r in web.orders.requests if r[:2] == ("POST", "/orders"))
    assert len(create[2]["idempotency-key"]) >= 16
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("bl_order_ord-0001=")
    )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "SameSite=Lax" in cookie
    assert "Path=/orders/ord-0001" in cookie
    assert order.token not in cookie  # signed, and the page never sees it either


async def test_order_page_reads_the_cookie_and_never_shows_the_token(web: WebHarness) -> None:
    await _checkout(web)
    order = web.orders.orders["ord-0001"]

    page = await web.client.get("/orders/ord-0001")

    assert page.status_code == 200
    assert "Waiting for payment" in page.text
    assert 'data-state="waiting"' in page.text
    assert order.token not in page.text
    assert f'href="{EMULATOR}/invoice/ord-0001"' in page.text
    assert "b***@example.com" in page.text
    forwarded = [r for r in web.orders.requests if r[:2] == ("GET", "/orders/ord-0001")]
    assert forwarded[-1][2]["x-order-token"] == order.token
    status = await web.client.get("/orders/ord-0001/status")
    assert status.json()["state"] == "waiting"
    assert order.token not in status.text


async def test_double_submit_with_the_same_form_creates_one_order(web: WebHarness) -> None:
    html, csrf = await web.form_page("/products/game-key")
    key = IDEMPOTENCY_INPUT.search(html)
    assert key
    data = {
        "csrf_token": csrf,
        "idempotency_key": key.group(1),
        "sku": "game-key",
        "email": "buyer@example.com",
        "quantity": "1",
    }
    first = await web.client.post("/checkout", data=data)
    second = await web.client.post("/checkout", data=data)

    assert first.headers["location"] == second.headers["location"]
    assert len(web.orders.orders) == 1


async def test_each_form_render_gets_its_own_idempotency_key(web: WebHarness) -> None:
    first, _ = await web.form_page("/products/game-key")
    second, _ = await web.form_page("/products/game-key")
    keys = {IDEMPOTENCY_INPUT.search(html).group(1) for html in (first, second)}  # type: ignore[union-attr]
    assert len(keys) == 2


async def test_checkout_without_csrf_token_is_refused_and_creates_nothing(
    web: WebHarness,
) -> None:
    await web.client.get("/products/game-key")  # has the CSRF cookie, but no token is sent
    response = await web.client.post(
        "/checkout",
        data={"sku": "game-key", "email": "a@example.com", "quantity": "1"},
    )
    assert response.status_code == 403
    assert "Your form expired" in response.text
    assert web.orders.orders == {}


async def test_csrf_token_of_another_browser_is_refused(make_web: HarnessFactory) -> None:
    alice, mallory = make_web(), make_web()
    _, mallory_token = await mallory.form_page("/products/game-key")
    await alice.client.get("/products/game-key")
    alice.client.cookies.set("bl_csrf", "alice-own-seed-value")

    response = await alice.client.post(
        "/checkout",
        data={
            "csrf_token": mallory_token,
            "sku": "game-key",
            "email": "a@example.com",
            "quantity": "1",
            "idempotency_key": "0123456789abcdef0123",
        },
    )
    assert response.status_code == 403
    assert alice.orders.orders == {}


async def test_orders_field_error_is_shown_next_to_the_field(web: WebHarness) -> None:
    response = await _checkout(web, email="nobody@invalid.example")

    assert response.status_code == 422
    assert "The email domain does not accept mail" in response.text
    assert 'id="email-error"' in response.text
    assert 'aria-invalid="true"' in response.text
    assert 'value="nobody@invalid.example"' in response.text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"email": "not-an-address"}, "Enter the email address"),
        ({"quantity": "0"}, "Choose a quantity from 1 to 10"),
        ({"quantity": "11"}, "Choose a quantity from 1 to 10"),
        ({"quantity": "two"}, "Choose a quantity from 1 to 10"),
    ],
)
async def test_bad_input_is_refused_before_calling_orders(
    web: WebHarness, fields: dict[str, str], message: str
) -> None:
    response = await _checkout(web, **fields)
    assert response.status_code == 422
    assert message in response.text
    assert web.orders.orders == {}


async def test_payments_outage_shows_a_friendly_page_and_keeps_the_order(
    web: WebHarness,
) -> None:
    web.orders.payments_down = True

    response = await _checkout(web)

    assert response.status_code == 503
    assert "Payments are temporarily unavailable" in response.text
    assert "Traceback" not in response.text
    assert 'href="/orders/ord-0001"' in response.text
    # the order exists and this browser can open it to retry
    page = await web.client.get("/orders/ord-0001")
    assert page.status_code == 200
    assert 'id="pay-form"' in page.text  # no invoice yet: a "Pay now" button


async def test_pay_now_retries_checkout_after_an_outage(web: WebHarness) -> None:
    web.orders.payments_down = True
    await _checkout(web)
    web.orders.payments_down = False
    _html, csrf = await web.form_page("/orders/ord-0001")

    response = await web.client.post("/orders/ord-0001/pay", data={"csrf_token": csrf})

    assert response.status_code == 303
    assert response.headers["location"] == f"{EMULATOR}/invoice/ord-0001"


async def test_payment_url_on_an_unknown_origin_is_not_followed(web: WebHarness) -> None:
    web.orders.payment_url_base = "https://evil.example/phish/"
    response = await _checkout(web)
    assert response.status_code == 502
    assert "location" not in response.headers
    assert "evil.example" not in response.text


async def test_order_page_without_the_cookie_is_not_found(web: WebHarness) -> None:
    await _checkout(web)
    stranger = httpx.AsyncClient(transport=web.client._transport, base_url="http://testserver")
    async with stranger:
        page = await stranger.get("/orders/ord-0001")
        status = await stranger.get("/orders/ord-0001/status")
    assert page.status_code == 404
    assert "We cannot show this order in this browser" in page.text
    assert status.status_code == 404


async def test_tampered_order_cookie_is_ignored(web: WebHarness) -> None:
    await _checkout(web)
    web.client.cookies.clear()
    web.client.cookies.set(
        "bl_order_ord-0001", "secret-token-ord-0001", domain="testserver", path="/orders/ord-0001"
    )
    page = await web.client.get("/orders/ord-0001")
    assert page.status_code == 404


@pytest.mark.parametrize(
    ("status", "payment_status", "state", "final", "text"),
    [
        ("awaiting_payment", "waiting", "waiting", False, "Waiting for payment"),
        ("awaiting_payment", "confirming", "confirming", False, "Confirming your payment"),
        ("awaiting_payment", "sending", "confirming", False, "Confirming your payment"),
        ("paid", "finished", "paid", False, "Paid — preparing your download"),
        ("fulfilled", "finished", "fulfilled", True, "Fulfilled — check your email"),
        ("underpaid", "partially_paid", "underpaid", True, "Underpaid"),
        ("expired", "expired", "expired", True, "Expired"),
        ("failed", "failed", "failed", True, "Payment failed"),
    ],
)
async def test_each_order_state_has_a_clear_page_and_json(
    web: WebHarness, status: str, payment_status: str, state: str, final: bool, text: str
) -> None:
    await _checkout(web)
    order = web.orders.orders["ord-0001"]
    order.status, order.payment_status = status, payment_status
    order.history.append({"status": status, "at": "2025-01-01T10:05:00Z"})

    page = await web.client.get("/orders/ord-0001")
    data = (await web.client.get("/orders/ord-0001/status")).json()

    assert text in page.text
    assert f'data-state="{state}"' in page.text
    assert (data["state"], data["final"]) == (state, final)
    assert data["history"][-1]["status"] == status
    retry = re.search(r'<a[^>]*id="retry-link"[^>]*>', page.text)
    assert retry
    assert ("hidden" not in retry.group(0)) == (state in {"expired", "failed"})
    assert 'href="/products/game-key"' in retry.group(0)
    refresh = re.search(r'<a[^>]*id="refresh-link"[^>]*>', page.text)
    assert refresh
    assert ("hidden" in refresh.group(0)) == final


async def test_underpaid_page_states_the_policy_from_orders(web: WebHarness) -> None:
    await _checkout(web)
    order = web.orders.orders["ord-0001"]
    order.status, order.payment_status = "underpaid", "partially_paid"
    order.message = "Underpayments are not refunded automatically: please contact support."
    page = await web.client.get("/orders/ord-0001")
    assert "Underpayments are not refunded automatically" in page.text


async def test_orders_unreachable_gives_a_friendly_503(make_web: HarnessFactory) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    web = make_web(orders_transport=httpx.MockTransport(refuse))
    response = await web.client.get("/")
    assert response.status_code == 503
    assert "temporarily unavailable" in response.text
    assert "ConnectError" not in response.text


class _Switchable(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.down = inner, False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


async def test_status_json_reports_an_outage_and_a_lost_order(make_web: HarnessFactory) -> None:
    from .conftest import FakeOrders

    fake = FakeOrders()
    transport = _Switchable(httpx.ASGITransport(app=fake.app()))
    web = make_web(orders_transport=transport)
    web.orders = fake
    await _checkout(web)

    transport.down = True
    down = await web.client.get("/orders/ord-0001/status")
    assert (down.status_code, down.json()) == (503, {"error": "unavailable"})

    transport.down = False
    fake.orders.clear()
    gone = await web.client.get("/orders/ord-0001/status")
    assert gone.status_code == 404
