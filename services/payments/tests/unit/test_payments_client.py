"""The NOWPayments client against scripted HTTP answers (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest
from payments.client import (
    NowPaymentsClient,
    ProviderAmbiguousError,
    ProviderNotFoundError,
    ProviderProtocolError,
    ProviderRejectedError,
    ProviderUnavailableError,
)

KEY = "k-super-secret-123"


def client_for(
    handler: Callable[[httpx.Request], httpx.Response], retries: int = 2
) -> NowPaymentsClient:
    return NowPaymentsClient(
        base_url="http://provider.test/v1/",
        api_key=KEY,
        read_retries=retries,
        backoff=0.001,
        backoff_max=0.002,
        transport=httpx.MockTransport(handler),
    )


PAYMENT = (
    b'{"payment_id":9007199254740993,"invoice_id":5000000001,"payment_status":"finished",'
    b'"price_amount":25,"price_currency":"usd","pay_amount":0.00036101,'
    b'"actually_paid":0.1,"pay_currency":"btc","order_id":"o-1","outcome_amount":0.0000001,'
    b'"updated_at":"2026-01-01T00:00:00.000Z"}'
)


async def test_get_payment_keeps_big_ids_and_exact_decimals() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PAYMENT)

    async with client_for(handler) as client:
        payment = await client.get_payment("9007199254740993")
    assert seen[0].url == "http://provider.test/v1/payment/9007199254740993"
    assert seen[0].headers["x-api-key"] == KEY
    assert payment.payment_id == "9007199254740993"  # 2^53 + 1: a float would say ...992
    assert payment.invoice_id == "5000000001"
    assert payment.pay_amount == Decimal("0.00036101")
    assert payment.outcome_amount == Decimal("1E-7")
    assert isinstance(payment.actually_paid, Decimal) and payment.actually_paid == Decimal("0.1")
    report = payment.report()
    assert (report.status, report.order_id, report.price_amount) == ("finished", "o-1", 25)


async def test_reads_retry_on_5xx_and_connection_errors_then_succeed() -> None:
    answers = iter(
        [
            httpx.ConnectError("refused"),
            httpx.Response(
                502,
                json={"status": False, "statusCode": 502, "code": "BAD_GATEWAY", "message": "x"},
            ),
            httpx.Response(200, content=PAYMENT),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async with client_for(handler, retries=2) as client:
        payment = await client.get_payment("9007199254740993")
    assert payment.payment_status == "finished"


async def test_reads_give_up_after_the_retry_budget() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(
            503,
            json={
                "status": False,
                "statusCode": 503,
                "code": "SERVICE_UNAVAILABLE",
                "message": "down",
            },
        )

    async with client_for(handler, retries=2) as client:
        with pytest.raises(ProviderUnavailableError) as caught:
            await client.get_payment("1")
    assert calls == 3
    assert (caught.value.code, caught.value.message, caught.value.status_code) == (
        "SERVICE_UNAVAILABLE",
        "down",
        503,
    )
    assert caught.value.retryable


async def test_provider_errors_carry_code_and_message_and_never_the_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            403,
            json={
                "status": False,
                "statusCode": 403,
                "code": "INVALID_API_KEY",
                "message": "Invalid api key",
            },
        )

    async with client_for(handler) as client:
        with pytest.raises(ProviderRejectedError) as caught:
            await client.get_payment("1")
    error = caught.value
    assert (error.code, error.message, error.retryable) == (
        "INVALID_API_KEY",
        "Invalid api key",
        False,
    )
    assert KEY not in str(error) and KEY not in repr(error.args)


async def test_not_found_is_its_own_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            404,
            json={
                "status": False,
                "statusCode": 404,
                "code": "PAYMENT_NOT_FOUND",
                "message": "nope",
            },
        )

    async with client_for(handler) as client:
        with pytest.raises(ProviderNotFoundError):
            await client.get_payment("42")


async def test_non_json_error_bodies_still_map() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="<html>oops</html>")

    async with client_for(handler, retries=0) as client:
        with pytest.raises(ProviderUnavailableError) as caught:
            await client.get_payment("1")
    assert caught.value.code == "HTTP_500"


async def test_create_invoice_sends_decimals_as_json_numbers_and_is_not_retried_on_5xx() -> None:
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(
            500,
            json={
                "status": False,
                "statusCode": 500,
                "code": "INTERNAL_SERVER_ERROR",
                "message": "boom",
            },
        )

    async with client_for(handler, retries=3) as client:
        with pytest.raises(ProviderUnavailableError) as caught:
            await client.create_invoice(
                order_id="o-1",
                price_amount=Decimal("0.00000001"),
                price_currency="btc",
                ipn_callback_url="http://hooks.test/ipn",
                order_description="Ключ – game",
            )
    assert len(bodies) == 1  # the provider may have created it: never blindly again
    assert caught.value.code == "INTERNAL_SERVER_ERROR"
    sent = bodies[0].decode()
    assert '"price_amount":0.00000001' in sent  # a number, plain notation, exact
    assert json.loads(sent, parse_float=Decimal)["order_description"] == "Ключ – game"


async def test_create_invoice_is_retried_when_the_connection_never_opened() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused")
        return httpx.Response(
            200,
            json={
                "id": "5000000007",
                "invoice_url": "http://p/i/7",
                "order_id": "o-1",
                "price_amount": "25",
            },
        )

    async with client_for(handler) as client:
        invoice = await client.create_invoice(
            order_id="o-1",
            price_amount=Decimal(25),
            price_currency="usd",
            ipn_callback_url="http://h",
        )
    assert (calls, invoice.id, invoice.price_amount) == (2, "5000000007", Decimal(25))


async def test_create_invoice_timeout_after_sending_is_ambiguous_and_not_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ReadTimeout("no answer")

    async with client_for(handler) as client:
        with pytest.raises(ProviderAmbiguousError) as caught:
            await client.create_invoice(
                order_id="o-1",
                price_amount=Decimal(25),
                price_currency="usd",
                ipn_callback_url="http://h",
            )
    assert calls == 1 and caught.value.retryable


async def test_unreadable_success_is_a_protocol_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"invoice_url": "http://p/i/7"})  # no id

    async with client_for(handler) as client:
        with pytest.raises(ProviderProtocolError) as caught:
            await client.create_invoice(
                order_id="o-1",
                price_amount=Decimal(25),
                price_currency="usd",
                ipn_callback_url="http://h",
            )
    assert "id" in caught.value.message


async def test_payment_ids_must_be_digits() -> None:
    def handler(request: httpx.Request) -> httpx.Response:  # pragma: no cover - never called
        raise AssertionError("no request for a bad id")

    async with client_for(handler) as client:
        with pytest.raises(ProviderRejectedError):
            await client.get_payment("../invoice")


async def test_payments_for_invoice_reads_the_list() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["invoiceId"] == "5000000001"
        return httpx.Response(200, content=b'{"data":[' + PAYMENT + b'],"total":1}')

    async with client_for(handler) as client:
        [payment] = await client.payments_for_invoice("5000000001")
    assert payment.payment_id == "9007199254740993"
