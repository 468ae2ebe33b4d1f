"""Checkout endpoints, the payment list's filters, the sandbox `case`, and provider-shaped errors
(unknown routes, url validation, 201 on creation)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from nowpayments_emulator.coins import COINS
from nowpayments_emulator.testing import Harness, Receiver

pytestmark = pytest.mark.asyncio

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def number(value: object) -> Decimal:
    return Decimal(str(value))


def assert_envelope(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "statusCode", "code", "message"}
    assert (body["status"], body["statusCode"], body["code"]) == (False, status, code)
    message: str = body["message"]
    return message


async def get(emu: Harness, path: str, **params: Any) -> httpx.Response:
    return await emu.client.get(path, params=params, headers=emu.key)


async def create_payment(emu: Harness, **fields: Any) -> httpx.Response:
    body = {"price_amount": 69.25, "price_currency": "usd", "pay_currency": "btc"} | fields
    return await emu.client.post("/v1/payment", json=body, headers=emu.key)


# --- min-amount / estimate / coin lists -------------------------------------------------------


async def test_min_amount_is_the_usd_minimum_rounded_up_in_the_coin(emu: Harness) -> None:
    response = await get(emu, "/v1/min-amount", currency_from="btc", currency_to="btc")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"currency_from", "currency_to", "min_amount"}
    assert (body["currency_from"], body["currency_to"]) == ("btc", "btc")
    assert number(body["min_amount"]) == Decimal("0.00001445")  # 1 / 69250, rounded up
    with_fiat = (
        await get(emu, "/v1/min-amount", currency_from="BTC", fiat_equivalent="usd")
    ).json()
    assert with_fiat["currency_to"] == "btc"  # no payout coin configured: the pay coin itself
    assert number(with_fiat["fiat_equivalent"]) == Decimal("1.0006625")
    eur = (await get(emu, "/v1/min-amount", currency_from="eur")).json()
    assert number(eur["min_amount"]) == Decimal("0.92592593")


async def test_a_payment_of_the_minimum_is_accepted_and_just_below_is_not(emu: Harness) -> None:
    body = (await get(emu, "/v1/min-amount", currency_from="ltc")).json()
    minimum = number(body["min_amount"])
    accepted = await create_payment(
        emu, price_amount=str(minimum), price_currency="ltc", pay_currency="ltc"
    )
    assert accepted.status_code == 201, accepted.text
    below = await create_payment(
        emu, price_amount=str(minimum - Decimal("0.00000001")), price_currency="ltc"
    )
    assert_envelope(below, 400, "AMOUNT_MINIMAL_ERROR")


async def test_min_amount_errors(emu: Harness) -> None:
    message = assert_envelope(await get(emu, "/v1/min-amount"), 400, "INVALID_REQUEST_PARAMS")
    assert message == '"currency_from" is required'
    unknown = await get(emu, "/v1/min-amount", currency_from="xyz")
    assert_envelope(unknown, 400, "CURRENCY_UNAVAILABLE")
    crypto_fiat = await get(emu, "/v1/min-amount", currency_from="btc", fiat_equivalent="eth")
    assert_envelope(crypto_fiat, 400, "INVALID_REQUEST_PARAMS")
    assert_envelope(
        await emu.client.get("/v1/min-amount", params={"currency_from": "btc"}),
        403,
        "INVALID_API_KEY",
    )


async def test_estimate_matches_what_a_payment_charges(emu: Harness) -> None:
    response = await get(
        emu, "/v1/estimate", amount="3999.5000", currency_from="usd", currency_to="btc"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["currency_from", "amount_from", "currency_to", "estimated_amount"]
    assert body["currency_from"] == "usd" and body["currency_to"] == "btc"
    assert body["amount_from"] == 3999.5
    assert number(body["estimated_amount"]) == Decimal("0.05775451")
    payment = (await create_payment(emu, price_amount=3999.5)).json()
    assert number(payment["pay_amount"]) == number(body["estimated_amount"])
    crypto_pair = (
        await get(emu, "/v1/estimate", amount="1", currency_from="btc", currency_to="eth")
    ).json()
    assert number(crypto_pair["estimated_amount"]) == Decimal("19.78571429")
    whole = await get(emu, "/v1/estimate", amount="100", currency_from="eur", currency_to="usd")
    assert b'"amount_from":100,' in whole.content
    assert number(whole.json()["estimated_amount"]) == Decimal("108")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"currency_from": "usd", "currency_to": "btc"}, '"amount" is required'),
        ({"amount": "ten", "currency_from": "usd", "currency_to": "btc"}, '"amount" must be'),
        ({"amount": "-1", "currency_from": "usd", "currency_to": "btc"}, '"amount" must be'),
        ({"amount": "5", "currency_to": "btc"}, '"currency_from" is required'),
    ],
)
async def test_estimate_validation(emu: Harness, params: dict[str, str], message: str) -> None:
    text = assert_envelope(await get(emu, "/v1/estimate", **params), 400, "INVALID_REQUEST_PARAMS")
    assert text.startswith(message)


async def test_full_currencies_describe_every_coin_and_their_regex_matches_addresses(
    emu: Harness,
) -> None:
    response = await get(emu, "/v1/full-currencies")
    assert response.status_code == 200, response.text
    listed = response.json()["currencies"]
    assert [c["code"] for c in listed] == [code.upper() for code in COINS]
    for entry in listed:
        assert {"id", "name", "enable", "wallet_regex", "network", "cg_id", "logo_url"} <= set(
            entry
        )
        coin = COINS[entry["code"].lower()]
        assert entry["network"] == coin.network and entry["network_precision"] == coin.decimals
        payment = (await create_payment(emu, price_amount=20, pay_currency=coin.code)).json()
        assert re.fullmatch(entry["wallet_regex"], payment["pay_address"]), entry
    btc = next(c for c in listed if c["code"] == "BTC")
    assert btc["cg_id"] == "bitcoin" and btc["enable"] is True


async def test_merchant_coins_lists_the_checked_coins(emu: Harness) -> None:
    coins = (await get(emu, "/v1/merchant/coins")).json()
    assert coins == {"selectedCurrencies": [code.upper() for code in COINS]}
    every = (await get(emu, "/v1/currencies")).json()["currencies"]
    assert [code.lower() for code in coins["selectedCurrencies"]] == every


async def test_update_merchant_estimate_returns_the_payment_estimate(emu: Harness) -> None:
    payment = (await create_payment(emu)).json()
    path = f"/v1/payment/{payment['payment_id']}/update-merchant-estimate"
    response = await emu.client.post(path, headers=emu.key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["id", "token_id", "pay_amount", "expiration_estimate_date"]
    assert body["id"] == payment["payment_id"]
    assert body["token_id"].isdigit()
    assert number(body["pay_amount"]) == number(payment["pay_amount"])
    assert ISO_MS.match(body["expiration_estimate_date"])
    expires = datetime.fromisoformat(body["expiration_estimate_date"])
    assert expires > datetime.fromisoformat(payment["created_at"])
    # Before the estimate expires the same estimate comes back.
    assert (await emu.client.post(path, headers=emu.key)).json() == body
    missing = await emu.client.post(
        "/v1/payment/5999999999/update-merchant-estimate", headers=emu.key
    )
    assert_envelope(missing, 404, "PAYMENT_NOT_FOUND")
    assert_envelope(await emu.client.post(path), 403, "INVALID_API_KEY")


# --- the payment list -------------------------------------------------------------------------


async def make_listing(emu: Harness) -> list[dict[str, Any]]:
    """Three payments two days apart, with prices 30, 10, 20 usd."""
    created = []
    for price in (30, 10, 20):
        created.append((await create_payment(emu, price_amount=price)).json())
        emu.app.state.emulator.store.clock.advance(2 * 86400)
    return created


async def test_list_sorts_orders_and_pages_as_documented(emu: Harness) -> None:
    created = await make_listing(emu)
    ids = [int(p["payment_id"]) for p in created]
    default = await emu.list_payments()
    assert [p["payment_id"] for p in default["data"]] == ids  # created_at, asc
    assert (default["limit"], default["page"], default["pagesCount"], default["total"]) == (
        10,
        0,
        1,
        3,
    )
    by_price = await emu.list_payments(sortBy="price_amount", orderBy="desc")
    assert [p["price_amount"] for p in by_price["data"]] == [30, 20, 10]
    page = await emu.list_payments(limit=2, page=1, orderBy="desc")
    assert [p["payment_id"] for p in page["data"]] == [ids[0]]
    assert (page["limit"], page["page"], page["pagesCount"], page["total"]) == (2, 1, 2, 3)


async def test_list_filters_by_dates_and_invoice(emu: Harness) -> None:
    created = await make_listing(emu)
    first, second = (datetime.fromisoformat(p["created_at"]) for p in created[:2])
    day = (second.date()).isoformat()  # YYYY-MM-DD = that day at midnight UTC
    after = await emu.list_payments(dateFrom=day)
    assert [p["payment_id"] for p in after["data"]] == [int(p["payment_id"]) for p in created[1:]]
    iso_to = (first + timedelta(seconds=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    before = await emu.list_payments(dateTo=iso_to)
    assert [p["payment_id"] for p in before["data"]] == [int(created[0]["payment_id"])]
    window = await emu.list_payments(dateFrom=day, dateTo=day)
    assert window["total"] == 0
    invoice = await emu.create_invoice()
    paid = await emu.pay(invoice["id"])
    only = await emu.list_payments(invoiceId=invoice["id"])
    assert [p["payment_id"] for p in only["data"]] == [paid["payment_id"]]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": 501}, '"limit" must be less than or equal to 500'),
        ({"limit": 0}, '"limit" must be greater than or equal to 1'),
        ({"limit": "ten"}, '"limit" must be a number'),
        ({"page": -1}, '"page" must be greater than or equal to 0'),
        ({"orderBy": "up"}, '"orderBy" must be one of [asc, desc]'),
        ({"sortBy": "secret"}, '"sortBy" must be one of [created_at, payment_id'),
        ({"dateFrom": "yesterday"}, '"dateFrom" must be a valid date'),
        ({"dateTo": "2024-13-40"}, '"dateTo" must be a valid date'),
        ({"invoiceId": "abc"}, '"invoiceId" must be a number'),
    ],
)
async def test_list_validation(emu: Harness, params: dict[str, Any], message: str) -> None:
    response = await emu.client.get("/v1/payment/", params=params, headers=await emu.auth_headers())
    assert assert_envelope(response, 400, "INVALID_REQUEST_PARAMS").startswith(message)


# --- the sandbox's `case` ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "final"),
    [("success", "finished"), ("partially_paid", "partially_paid"), ("failed", "failed")],
)
async def test_sandbox_case_plays_its_flow_and_sends_ipns(
    emu: Harness, receiver: Receiver, case: str, final: str
) -> None:
    response = await create_payment(emu, case=case, ipn_callback_url=receiver.url)
    assert response.status_code == 201, response.text
    assert response.json()["payment_status"] == "waiting"
    await emu.idle()
    payment = await emu.payment(int(response.json()["payment_id"]))
    assert payment["payment_status"] == final
    statuses = [json.loads(r.body)["payment_status"] for r in receiver.requests]
    assert statuses[0] == "waiting" and statuses[-1] == final
    if final == "partially_paid":
        assert number(payment["actually_paid"]) < number(payment["pay_amount"])


async def test_without_case_the_payment_waits(emu: Harness) -> None:
    response = await create_payment(emu)
    await emu.idle()
    assert (await emu.payment(int(response.json()["payment_id"])))["payment_status"] == "waiting"


async def test_an_unknown_case_is_refused(emu: Harness) -> None:
    message = assert_envelope(
        await create_payment(emu, case="explode"), 400, "INVALID_REQUEST_PARAMS"
    )
    assert message == '"case" must be one of [success, partially_paid, failed]'
    assert emu.app.state.emulator.store.payments == {}


# --- provider-shaped errors and statuses ------------------------------------------------------


async def test_invoice_creation_answers_201(emu: Harness) -> None:
    body = {"price_amount": 10, "price_currency": "usd"}
    response = await emu.client.post("/v1/invoice", json=body, headers=emu.key)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("field", ["ipn_callback_url", "success_url", "cancel_url"])
@pytest.mark.parametrize(
    "url", ["not a url", "shop.example/ipn", "http://", "http://exa mple.com/", "http://h:x/"]
)
async def test_a_url_that_is_not_a_uri_is_refused(emu: Harness, field: str, url: str) -> None:
    body = {"price_amount": 10, "price_currency": "usd", field: url}
    response = await emu.client.post("/v1/invoice", json=body, headers=emu.key)
    assert assert_envelope(response, 400, "INVALID_REQUEST_PARAMS") == (
        f'"{field}" must be a valid uri'
    )
    assert emu.app.state.emulator.store.invoices == {}


async def test_the_payment_callback_url_is_validated_too(emu: Harness) -> None:
    refused = await create_payment(emu, ipn_callback_url="nowhere")
    assert assert_envelope(refused, 400, "INVALID_REQUEST_PARAMS") == (
        '"ipn_callback_url" must be a valid uri'
    )
    good = "https://shop.example:8443/ipn?order=1&x=%20#frag"
    accepted = await create_payment(emu, ipn_callback_url=good)
    assert accepted.status_code == 201 and accepted.json()["ipn_callback_url"] == good


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/nothing-here", 404, "NOT_FOUND"),
        ("GET", "/nothing-here", 404, "NOT_FOUND"),
        ("DELETE", "/v1/status", 405, "METHOD_NOT_ALLOWED"),
    ],
)
async def test_unknown_routes_answer_in_the_provider_envelope(
    emu: Harness, method: str, path: str, status: int, code: str
) -> None:
    response = await emu.client.request(method, path, headers=emu.key)
    assert assert_envelope(response, status, code) == f"Cannot {method} {path}"


async def test_the_control_api_keeps_fastapi_errors(emu: Harness) -> None:
    response = await emu.client.get("/_emulator/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
