"""POST /orders/{id}/checkout against a fake payments responder on real NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from orders.domain import OrderStatus
from shared.contracts.payments import CreateInvoiceReply, CreateInvoiceRequest
from shared.messaging.broker import flush, make_broker
from shared.messaging.rpc import register_responder


class FakePayments:
    """Answers payments.create_invoice like the payments worker; counts what it was asked."""

    def __init__(self) -> None:
        self.requests: list[CreateInvoiceRequest] = []
        self.fail_with: tuple[str, str] | None = None

    async def handle(self, req: CreateInvoiceRequest) -> CreateInvoiceReply:
        self.requests.append(req)
        if self.fail_with:
            code, message = self.fail_with
            return CreateInvoiceReply(
                ok=False, error_code=code, error_message=message, retryable=True
            )
        return CreateInvoiceReply(
            ok=True,
            payment_id="7b0c7f3e-5b36-4c5e-9e0a-3d3c1d1f0a11",
            invoice_id="4522625843",
            invoice_url=f"https://pay.example/invoice/{req.order_id}",
            price_amount=req.price_amount,
            price_currency=req.price_currency,
            status="waiting",
        )


@pytest.fixture
async def fake_payments(clean_infra) -> AsyncIterator[FakePayments]:
    fake = FakePayments()
    broker = make_broker(clean_infra.nats_url, name="fake-payments")
    register_responder(broker, CreateInvoiceRequest, fake.handle, queue="payments")
    await broker.start()
    await flush(broker)  # the subscription is live before the test sends its request
    try:
        yield fake
    finally:
        await broker.stop()


def _token(order: dict) -> dict[str, str]:
    return {"X-Order-Token": order["order_token"]}


async def test_checkout_creates_invoice_and_waits_for_payment(
    orders_api, place_order, fake_payments, probe
):
    order = await place_order()
    response = await orders_api.post(f"/orders/{order['order_id']}/checkout", headers=_token(order))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "order_id": order["order_id"],
        "payment_url": f"https://pay.example/invoice/{order['order_id']}",
        "amount": "19.98",
        "currency": "usd",
        "status": "awaiting_payment",
        "invoice_id": "4522625843",
    }
    [sent] = fake_payments.requests
    assert sent.order_id == order["order_id"]
    assert sent.price_amount == Decimal("19.98") and sent.price_currency == "usd"
    assert sent.success_url == sent.cancel_url == f"http://shop.test/orders/{order['order_id']}"
    assert "2 x Game Key" in sent.description
    row = await probe.order(order["order_id"])
    assert row.status == OrderStatus.AWAITING_PAYMENT
    assert row.version == 2 and row.awaiting_since is not None
    assert sent.correlation_id == row.correlation_id

    view = (await orders_api.get(f"/orders/{order['order_id']}", headers=_token(order))).json()
    assert view["status"] == "awaiting_payment"
    assert view["message"] == "Waiting for your payment"
    assert view["payment_url"] == response.json()["payment_url"]
    assert [h["status"] for h in view["history"]] == ["created", "awaiting_payment"]


async def test_second_checkout_returns_the_same_invoice_without_asking_again(
    orders_api, place_order, fake_payments, probe
):
    order = await place_order()
    url = f"/orders/{order['order_id']}/checkout"
    first = await orders_api.post(url, headers=_token(order))
    second = await orders_api.post(url, headers=_token(order))
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert len(fake_payments.requests) == 1
    assert (await probe.order(order["order_id"])).version == 2


async def test_provider_error_is_502_and_changes_nothing(
    orders_api, place_order, fake_payments, probe
):
    order = await place_order()
    fake_payments.fail_with = ("INVALID_API_KEY", "Invalid api key")
    response = await orders_api.post(f"/orders/{order['order_id']}/checkout", headers=_token(order))
    assert response.status_code == 502
    body = response.json()
    assert "could not create an invoice" in body["detail"]
    assert "Invalid api key" in body["detail"]
    assert body["error"]["code"] == "INVALID_API_KEY"
    row = await probe.order(order["order_id"])
    assert (row.status, row.version, row.payment_url) == ("created", 1, None)

    fake_payments.fail_with = None  # the provider recovers: the retry goes through
    retry = await orders_api.post(f"/orders/{order['order_id']}/checkout", headers=_token(order))
    assert retry.status_code == 200
    assert retry.json()["status"] == "awaiting_payment"


async def test_payments_unreachable_is_503_and_changes_nothing(orders_api, place_order, probe):
    order = await place_order()  # no responder registered: nobody answers
    response = await orders_api.post(f"/orders/{order['order_id']}/checkout", headers=_token(order))
    assert response.status_code == 503
    assert "temporarily unavailable" in response.json()["detail"]
    assert response.headers["Retry-After"] == "5"
    row = await probe.order(order["order_id"])
    assert (row.status, row.version, row.payment_url) == ("created", 1, None)
    assert await probe.outbox_subjects() == ["orders.order_created.v1"]


async def test_checkout_needs_the_token(orders_api, place_order, fake_payments):
    order = await place_order()
    response = await orders_api.post(
        f"/orders/{order['order_id']}/checkout", headers={"X-Order-Token": "wrong"}
    )
    assert response.status_code == 404
    missing = await orders_api.post(f"/orders/{order['order_id']}/checkout")
    assert missing.status_code == 404
    assert fake_payments.requests == []


@pytest.mark.parametrize("status", ["paid", "expired", "failed", "fulfilled", "underpaid"])
async def test_checkout_after_the_order_moved_on_is_409(
    orders_api, place_order, fake_payments, probe, status
):
    order = await place_order()
    await probe.execute(
        'UPDATE orders."order" SET status = :s WHERE id = CAST(:id AS uuid)',
        s=status,
        id=order["order_id"],
    )
    response = await orders_api.post(f"/orders/{order['order_id']}/checkout", headers=_token(order))
    assert response.status_code == 409
    assert f"the order is {status}" in response.json()["detail"]
    assert fake_payments.requests == []
