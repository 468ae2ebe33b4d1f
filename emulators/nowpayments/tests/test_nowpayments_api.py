"""The /v1 REST API: shapes, auth, validation, minimums, amounts and injected faults."""

from __future__ import annotations

import re
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from nowpayments_emulator.testing import TEST_API_KEY, TEST_PUBLIC_URL, Harness, HarnessFactory

# Every test here is a coroutine; explicit so the suite also runs in strict asyncio mode.
pytestmark = pytest.mark.asyncio

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

# DESIGN.md §5: what GET /payment/{id} must carry for the reconciliation poller.
PAYMENT_FIELDS = {
    "payment_id",
    "invoice_id",
    "payment_status",
    "pay_address",
    "price_amount",
    "price_currency",
    "pay_amount",
    "actually_paid",
    "pay_currency",
    "order_id",
    "order_description",
    "purchase_id",
    "outcome_amount",
    "outcome_currency",
    "created_at",
    "updated_at",
}


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "statusCode", "code", "message"}
    assert body["status"] is False
    assert body["statusCode"] == status
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert body["message"]


async def test_status_needs_no_key(emu: Harness) -> None:
    response = await emu.client.get("/v1/status")
    assert response.status_code == 200
    assert response.json() == {"message": "OK"}


async def test_currencies_need_the_key(emu: Harness) -> None:
    assert_error(await emu.client.get("/v1/currencies"), 403, "INVALID_API_KEY")
    response = await emu.client.get("/v1/currencies", headers=emu.key)
    assert {"btc", "trx", "usdttrc20"} <= set(response.json()["currencies"])


async def test_invoice_shape(emu: Harness) -> None:
    invoice = await emu.create_invoice(
        price_amount=69.25,
        order_id="ord-42",
        order_description="Game key — Ключ",
        ipn_callback_url="https://shop.example/ipn",
        success_url="https://shop.example/ok",
        cancel_url="https://shop.example/cancel",
    )
    assert isinstance(invoice["id"], str)
    assert invoice["id"].isdigit()
    assert int(invoice["id"]) > 2**32
    assert invoice["invoice_url"] == f"{TEST_PUBLIC_URL}/invoice/{invoice['id']}"
    assert invoice["price_amount"] == "69.25"
    assert invoice["price_currency"] == "usd"
    assert invoice["pay_currency"] is None
    assert invoice["order_id"] == "ord-42"
    assert invoice["order_description"] == "Game key — Ключ"
    assert invoice["ipn_callback_url"] == "https://shop.example/ipn"
    assert invoice["success_url"] == "https://shop.example/ok"
    assert invoice["cancel_url"] == "https://shop.example/cancel"
    assert ISO_MS.match(invoice["created_at"])
    assert ISO_MS.match(invoice["updated_at"])


async def test_invoice_accepts_amount_as_string_and_uppercase_currency(emu: Harness) -> None:
    invoice = await emu.create_invoice(
        price_amount="12.50", price_currency="EUR", pay_currency="TRX"
    )
    assert invoice["price_amount"] == "12.5"
    assert invoice["price_currency"] == "eur"
    assert invoice["pay_currency"] == "trx"


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"x-api-key": ""}])
async def test_invoice_rejects_a_bad_api_key(emu: Harness, headers: dict[str, str]) -> None:
    response = await emu.client.post(
        "/v1/invoice", json={"price_amount": 10, "price_currency": "usd"}, headers=headers
    )
    assert_error(response, 403, "INVALID_API_KEY")
    assert response.json()["message"] == "Invalid api key"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"price_currency": "usd"}, 400, "INVALID_REQUEST_PARAMS"),
        ({"price_amount": 10}, 400, "INVALID_REQUEST_PARAMS"),
        ({"price_amount": "ten", "price_currency": "usd"}, 400, "INVALID_REQUEST_PARAMS"),
        ({"price_amount": -5, "price_currency": "usd"}, 400, "INVALID_REQUEST_PARAMS"),
        ({"price_amount": True, "price_currency": "usd"}, 400, "INVALID_REQUEST_PARAMS"),
        (
            {"price_amount": 10, "price_currency": "usd", "order_id": 7},
            400,
            "INVALID_REQUEST_PARAMS",
        ),
        ({"price_amount": 10, "price_currency": "xyz"}, 400, "CURRENCY_UNAVAILABLE"),
        (
            {"price_amount": 10, "price_currency": "usd", "pay_currency": "nope"},
            400,
            "CURRENCY_UNAVAILABLE",
        ),
        ({"price_amount": 0.99, "price_currency": "usd"}, 400, "AMOUNT_MINIMAL_ERROR"),
        ({"price_amount": "0.000001", "price_currency": "btc"}, 400, "AMOUNT_MINIMAL_ERROR"),
    ],
)
async def test_invoice_validation(
    emu: Harness, body: dict[str, Any], status: int, code: str
) -> None:
    response = await emu.client.post("/v1/invoice", json=body, headers=emu.key)
    assert_error(response, status, code)


async def test_invoice_rejects_a_body_that_is_not_a_json_object(emu: Harness) -> None:
    for content in (b"not json", b"[1, 2]"):
        response = await emu.client.post(
            "/v1/invoice",
            content=content,
            headers={**emu.key, "content-type": "application/json"},
        )
        assert_error(response, 400, "INVALID_REQUEST_PARAMS")


async def test_minimum_is_inclusive_and_valued_in_usd(make_harness: HarnessFactory) -> None:
    emu = await make_harness(min_price_usd=Decimal("5"))
    await emu.create_invoice(price_amount=5)
    # 4.70 EUR is worth 5.076 USD at the emulator's fixed rate; 4.60 EUR is not enough.
    await emu.create_invoice(price_amount="4.70", price_currency="eur")
    response = await emu.client.post(
        "/v1/invoice", json={"price_amount": "4.60", "price_currency": "eur"}, headers=emu.key
    )
    assert_error(response, 400, "AMOUNT_MINIMAL_ERROR")


@pytest.mark.parametrize(
    ("price", "coin", "pay_amount"),
    [
        ("69.25", "btc", "0.001"),
        ("10", "trx", "80"),
        ("1.23", "eth", "0.00035143"),
        ("10", "usdttrc20", "10"),
        ("1", "btc", "0.00001444"),
    ],
)
async def test_create_payment_amounts_use_fixed_rates_and_coin_decimals(
    emu: Harness, price: str, coin: str, pay_amount: str
) -> None:

    response = await emu.client.post(
        "/v1/payment",
        json={"price_amount": price, "price_currency": "usd", "pay_currency": coin},
        headers=emu.key,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    # The provider returns the new payment id as a string; GET returns it as an integer.
    assert isinstance(created["payment_id"], str)
    assert created["payment_status"] == "waiting"
    assert created["pay_currency"] == coin
    # Amounts are JS numbers on the wire; their text is the exact quantised amount.
    assert f'"pay_amount":{pay_amount},' in response.text
    payment = await emu.payment(int(created["payment_id"]))
    assert payment["payment_id"] == int(created["payment_id"])


async def test_get_payment_shape(emu: Harness) -> None:
    invoice = await emu.create_invoice(order_description="desc")
    paid = await emu.pay(invoice["id"], scenario="full")
    await emu.idle()
    payment = await emu.payment(paid["payment_id"])
    assert set(payment) >= PAYMENT_FIELDS
    assert isinstance(payment["payment_id"], int)
    assert payment["payment_id"] > 2**32
    assert payment["invoice_id"] == int(invoice["id"])
    assert payment["payment_status"] == "finished"
    assert payment["order_id"] == "order-1"
    assert payment["order_description"] == "desc"
    assert payment["price_currency"] == "usd"
    assert payment["pay_currency"] == "btc"
    assert payment["outcome_currency"] == "btc"
    assert Decimal(str(payment["actually_paid"])) == Decimal(str(payment["pay_amount"]))
    assert Decimal(str(payment["outcome_amount"])) < Decimal(str(payment["actually_paid"]))
    assert ISO_MS.match(payment["created_at"])
    assert ISO_MS.match(payment["updated_at"])


async def test_get_payment_errors(emu: Harness) -> None:
    assert_error(await emu.client.get("/v1/payment/123"), 403, "INVALID_API_KEY")
    assert_error(
        await emu.client.get("/v1/payment/5999999999", headers=emu.key), 404, "PAYMENT_NOT_FOUND"
    )
    assert_error(
        await emu.client.get("/v1/payment/abc", headers=emu.key), 400, "INVALID_REQUEST_PARAMS"
    )


async def test_list_payments_by_invoice(emu: Harness) -> None:
    invoice = await emu.create_invoice()
    other = await emu.create_invoice()
    first = await emu.pay(invoice["id"], scenario="fail")
    await emu.pay(other["id"])
    await emu.idle()
    listing = await emu.list_payments(invoiceId=invoice["id"])
    assert listing["total"] == 1
    assert [p["payment_id"] for p in listing["data"]] == [first["payment_id"]]
    bad = await emu.client.get(
        "/v1/payment/", params={"limit": 0}, headers=await emu.auth_headers()
    )
    assert_error(bad, 400, "INVALID_REQUEST_PARAMS")


async def test_invoice_payment_opens_a_payment_for_the_invoice(emu: Harness) -> None:
    invoice = await emu.create_invoice()
    response = await emu.client.post(
        "/v1/invoice-payment", json={"iid": invoice["id"], "pay_currency": "ltc"}, headers=emu.key
    )
    assert response.status_code == 201, response.text
    payment = await emu.payment(int(response.json()["payment_id"]))
    assert payment["invoice_id"] == int(invoice["id"])
    assert payment["pay_currency"] == "ltc"
    assert payment["payment_status"] == "waiting"
    missing = await emu.client.post(
        "/v1/invoice-payment", json={"iid": 1, "pay_currency": "ltc"}, headers=emu.key
    )
    assert_error(missing, 404, "INVOICE_NOT_FOUND")


async def test_injected_faults_fail_the_next_calls_then_recover(emu: Harness) -> None:
    response = await emu.client.post(
        "/_emulator/faults", json={"operation": "create_invoice", "count": 2}
    )
    assert response.json()["faults"][0]["count"] == 2
    body = {"price_amount": 10, "price_currency": "usd"}
    for _ in range(2):
        failed = await emu.client.post("/v1/invoice", json=body, headers=emu.key)
        assert_error(failed, 500, "INTERNAL_SERVER_ERROR")
    # Faults are per operation: other calls were never affected.
    assert (await emu.client.get("/v1/status")).status_code == 200
    ok = await emu.client.post("/v1/invoice", json=body, headers=emu.key)
    assert ok.status_code == 201
    assert (await emu.client.get("/_emulator/faults")).json() == {"faults": []}


async def test_get_payment_fault_with_custom_status_and_clear(emu: Harness) -> None:
    invoice = await emu.create_invoice()
    paid = await emu.pay(invoice["id"])
    await emu.client.post(
        "/_emulator/faults",
        json={"operation": "get_payment", "count": 5, "status_code": 503, "code": "UNAVAILABLE"},
    )
    failed = await emu.client.get(f"/v1/payment/{paid['payment_id']}", headers=emu.key)
    assert_error(failed, 503, "UNAVAILABLE")
    await emu.client.delete("/_emulator/faults")
    await emu.payment(paid["payment_id"])


async def test_slow_but_healthy_fault_delays_then_answers(emu: Harness) -> None:
    await emu.client.post(
        "/_emulator/faults", json={"operation": "status", "status_code": None, "delay": 2.0}
    )
    started = time.monotonic()
    slow = await emu.client.get("/v1/status")
    assert time.monotonic() - started >= 2.0
    assert slow.json() == {"message": "OK"}
    assert (await emu.client.get("/_emulator/faults")).json() == {"faults": []}  # used up
    started = time.monotonic()
    assert (await emu.client.get("/v1/status")).status_code == 200
    assert time.monotonic() - started < 1.5  # not delayed again (a bound far from any stall)


async def test_harness_sends_the_configured_key(emu: Harness) -> None:
    assert emu.key == {"x-api-key": TEST_API_KEY}
