"""The NOWPayments client against scripted HTTP answers (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal

import httpx
import pytest
from payments.client import (
    Invoice,
    NowPaymentsClient,
    ProviderAmbiguousError,
    ProviderAuthError,
    ProviderNotFoundError,
    ProviderPayment,
    ProviderProtocolError,
    ProviderRejectedError,
    ProviderUnavailableError,
    epoch_ms,
    jwt_expiry,
)

KEY = "k-super-secret-123"
EMAIL = "merchant@shop.example"
PASSWORD = "pw-never-shown-42"


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


# --- the JWT for the payment list -------------------------------------------------------------

LIST = b'{"data":[' + PAYMENT + b'],"total":1}'


def make_jwt(claims: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


AUTH_REQUIRED = httpx.Response(
    401,
    json={
        "status": False,
        "statusCode": 401,
        "code": "AUTH_REQUIRED",
        "message": "Authorization header is empty (Bearer JWTtoken is required)",
    },
)


class Provider:
    """A scripted provider: POST /auth hands out the next token, the list wants the newest one."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = list(tokens)
        self.issued: list[str] = []
        self.requests: list[httpx.Request] = []
        self.list_answers: list[httpx.Response] = []
        self.auth_gate: asyncio.Event | None = None
        self.auth_started = asyncio.Event()

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if (r.method, r.url.path) == (method, path))

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/v1/auth":
            self.auth_started.set()
            if self.auth_gate is not None:
                await self.auth_gate.wait()
            assert json.loads(request.content) == {"email": EMAIL, "password": PASSWORD}
            token = self.tokens.pop(0)
            self.issued.append(token)
            return httpx.Response(200, json={"token": token})
        assert request.url.path == "/v1/payment/"
        if self.list_answers:
            return self.list_answers.pop(0)
        if request.headers.get("authorization") != f"Bearer {self.issued[-1]}":
            return AUTH_REQUIRED
        return httpx.Response(200, content=LIST)


def jwt_client(
    handler: Callable[[httpx.Request], Awaitable[httpx.Response]] | Provider,
    *,
    clock: Clock | None = None,
    email: str | None = EMAIL,
    password: str | None = PASSWORD,
    retries: int = 2,
) -> NowPaymentsClient:
    return NowPaymentsClient(
        base_url="http://provider.test/v1",
        api_key=KEY,
        email=email,
        password=password,
        read_retries=retries,
        backoff=0.001,
        backoff_max=0.002,
        jwt_lifetime=240,
        jwt_refresh_margin=30,
        clock=clock or Clock(),
        transport=httpx.MockTransport(handler),
    )


async def test_payments_for_invoice_logs_in_once_and_sends_the_bearer_token() -> None:
    clock = Clock()
    token = make_jwt({"id": "1", "iat": clock.now, "exp": clock.now + 300})
    provider = Provider([token])
    async with jwt_client(provider, clock=clock) as client:
        [payment] = await client.payments_for_invoice("5000000001")
        again = await client.payments_for_invoice("5000000001")
    assert payment.payment_id == "9007199254740993" and len(again) == 1
    assert (provider.count("POST", "/v1/auth"), client.logins) == (1, 1)  # cached
    listed = [r for r in provider.requests if r.url.path == "/v1/payment/"]
    assert [r.url.params["invoiceId"] for r in listed] == ["5000000001"] * 2
    assert all(r.headers["authorization"] == f"Bearer {token}" for r in listed)
    assert all(r.headers["x-api-key"] == KEY for r in provider.requests)


async def test_without_credentials_the_list_is_refused_before_calling_the_provider() -> None:
    provider = Provider([])
    async with jwt_client(provider, email=None, password="  ") as client:
        with pytest.raises(ProviderAuthError) as caught:
            await client.payments_for_invoice("5000000001")
    assert isinstance(caught.value, ProviderRejectedError) and not caught.value.retryable
    assert caught.value.code == "AUTH_NOT_CONFIGURED"
    assert "NOWPAYMENTS_EMAIL" in caught.value.message
    assert "NOWPAYMENTS_PASSWORD" in caught.value.message
    assert provider.requests == []


async def test_the_other_endpoints_never_log_in() -> None:
    provider_calls: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        provider_calls.append(request)
        return httpx.Response(200, content=PAYMENT)

    async with jwt_client(handler) as client:
        await client.get_payment("9007199254740993")
    assert [r.url.path for r in provider_calls] == ["/v1/payment/9007199254740993"]
    assert "authorization" not in provider_calls[0].headers and client.logins == 0


async def test_concurrent_calls_share_one_login() -> None:
    clock = Clock()
    provider = Provider([make_jwt({"exp": clock.now + 300}), "never-issued"])
    provider.auth_gate = asyncio.Event()
    async with jwt_client(provider, clock=clock) as client:
        calls = [asyncio.create_task(client.payments_for_invoice("5000000001")) for _ in range(10)]
        await provider.auth_started.wait()  # the first login is in flight, the rest queue
        provider.auth_gate.set()
        results = await asyncio.gather(*calls)
    assert [len(r) for r in results] == [1] * 10
    assert provider.count("POST", "/v1/auth") == 1 and client.logins == 1
    assert provider.count("GET", "/v1/payment/") == 10


async def test_the_token_is_refreshed_before_its_exp() -> None:
    clock = Clock()
    first = make_jwt({"exp": clock.now + 300})
    second = make_jwt({"exp": clock.now + 600})
    provider = Provider([first, second])
    async with jwt_client(provider, clock=clock) as client:
        assert await client.login() == first
        clock.now += 269  # 31 s left: still good
        assert await client.login() == first
        clock.now += 2  # 29 s left: inside the 30 s margin
        assert await client.login() == second
        await client.payments_for_invoice("5000000001")
    assert client.logins == 2
    assert provider.requests[-1].headers["authorization"] == f"Bearer {second}"


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        make_jwt({"id": "no exp"}),
        make_jwt({"exp": 1.0}),  # long past: the provider's clock or ours is off
        make_jwt({"exp": 1_800_000_000.0 + 10 * 86400}),  # absurdly far
    ],
)
async def test_a_token_without_a_usable_exp_lives_the_configured_lifetime(token: str) -> None:
    clock = Clock()
    provider = Provider([token, "second"])
    async with jwt_client(provider, clock=clock) as client:
        await client.login()
        clock.now += 239
        assert await client.login() == token
        clock.now += 1
        assert await client.login() == "second"
    assert client.logins == 2


def test_jwt_expiry_reads_exp_without_verifying() -> None:
    assert jwt_expiry(make_jwt({"exp": 1700000300})) == 1700000300.0
    assert jwt_expiry(make_jwt({"exp": "soon"})) is None
    assert jwt_expiry("a.!!!.c") is None
    assert jwt_expiry("only-one-part") is None


async def test_a_401_refreshes_the_token_once_and_retries_once() -> None:
    clock = Clock()
    provider = Provider([make_jwt({"exp": clock.now + 300, "n": 1}), make_jwt({"n": 2})])
    provider.list_answers = [AUTH_REQUIRED]  # revoked early: the first list call is refused
    async with jwt_client(provider, clock=clock) as client:
        [payment] = await client.payments_for_invoice("5000000001")
    assert payment.payment_id == "9007199254740993"
    assert provider.count("POST", "/v1/auth") == 2
    assert provider.count("GET", "/v1/payment/") == 2
    assert provider.requests[-1].headers["authorization"] == f"Bearer {provider.issued[1]}"


async def test_a_second_401_is_an_auth_error_not_a_loop() -> None:
    provider = Provider(["t1", "t2", "t3"])
    provider.list_answers = [AUTH_REQUIRED, AUTH_REQUIRED, AUTH_REQUIRED]
    async with jwt_client(provider) as client:
        with pytest.raises(ProviderAuthError) as caught:
            await client.payments_for_invoice("5000000001")
    assert (caught.value.code, caught.value.status_code) == ("AUTH_REQUIRED", 401)
    assert "JWTtoken" in caught.value.message
    assert provider.count("POST", "/v1/auth") == 2  # one refresh
    assert provider.count("GET", "/v1/payment/") == 2  # one retry, never the GET retry budget


async def test_a_refused_login_is_an_auth_error_and_lists_nothing() -> None:
    requests: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(
            403,
            json={
                "status": False,
                "statusCode": 403,
                "code": "ACCESS_DENIED",
                "message": "Access denied",
            },
        )

    async with jwt_client(handler) as client:
        with pytest.raises(ProviderAuthError) as caught:
            await client.payments_for_invoice("5000000001")
    assert (caught.value.code, caught.value.status_code) == ("ACCESS_DENIED", 403)
    assert [r.url.path for r in requests] == ["/v1/auth"]  # not retried, no list call
    assert PASSWORD not in str(caught.value)


async def test_a_login_answer_without_a_token_is_a_protocol_error() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"jwt": "elsewhere"})

    async with jwt_client(handler) as client:
        with pytest.raises(ProviderProtocolError):
            await client.login()


async def test_the_login_rides_out_a_provider_hiccup() -> None:
    answers = [httpx.Response(502, json={"code": "BAD_GATEWAY", "message": "x"})]

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth" and answers:
            return answers.pop(0)
        if request.url.path == "/v1/auth":
            return httpx.Response(200, json={"token": "t"})
        return httpx.Response(200, content=LIST)

    async with jwt_client(handler) as client:
        assert len(await client.payments_for_invoice("5000000001")) == 1
    assert client.logins == 1


def test_credentials_never_show_in_the_clients_repr() -> None:
    client = jwt_client(Provider([]), password=f"  {PASSWORD}\n")
    assert client.has_credentials
    assert PASSWORD not in repr(vars(client))


async def test_the_api_key_is_sent_trimmed() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"message": "OK"})

    async with NowPaymentsClient(
        base_url="http://provider.test/v1",
        api_key=f" {KEY}\n",
        transport=httpx.MockTransport(handler),
    ) as client:
        assert await client.status()
    assert seen[0].headers["x-api-key"] == KEY


async def test_invoice_ids_must_be_digits() -> None:
    provider = Provider(["t"])
    async with jwt_client(provider) as client:
        with pytest.raises(ProviderRejectedError):
            await client.payments_for_invoice("1&limit=500")
    assert provider.requests == []


# --- every 4xx: one call, a clear error --------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "INVALID_REQUEST_PARAMS", ProviderRejectedError),
        (401, "AUTH_REQUIRED", ProviderAuthError),
        (403, "INVALID_API_KEY", ProviderAuthError),
        (404, "PAYMENT_NOT_FOUND", ProviderNotFoundError),
        (409, "CONFLICT", ProviderRejectedError),
        (422, "UNPROCESSABLE", ProviderRejectedError),
    ],
)
async def test_a_4xx_on_a_get_is_never_retried_and_says_why(
    status: int, code: str, kind: type[Exception]
) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(
            status,
            json={"status": False, "statusCode": status, "code": code, "message": f"m{status}"},
        )

    async with client_for(handler, retries=5) as client:
        with pytest.raises(ProviderRejectedError) as caught:
            await client.get_payment("1")
    assert calls == 1
    assert type(caught.value) is kind
    error = caught.value
    assert (error.code, error.message, error.status_code, error.retryable) == (
        code,
        f"m{status}",
        status,
        False,
    )


async def test_429_is_retried_like_a_5xx() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(429, json={"code": "TOO_MANY_REQUESTS", "message": "slow"})
        return httpx.Response(200, content=PAYMENT)

    async with client_for(handler, retries=2) as client:
        await client.get_payment("1")
    assert calls == 2


async def test_the_wrong_api_key_is_an_auth_error() -> None:
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
        with pytest.raises(ProviderAuthError) as caught:
            await client.create_invoice(
                order_id="o-1",
                price_amount=Decimal(25),
                price_currency="usd",
                ipn_callback_url="http://h",
            )
    assert caught.value.code == "INVALID_API_KEY"


# --- timestamps, rate type, expiry and parent payments ----------------------------------------

MS = 1608649558290  # 2020-12-22T15:05:58.290Z


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020-12-22T15:05:58.290Z", MS),
        ("2020-12-22T15:05:58Z", MS - 290),
        ("2020-12-22T15:05:58.290+00:00", MS),
        ("2020-12-22T17:05:58.290+02:00", MS),
        ("2020-12-22T15:05:58.290", MS),  # no zone: UTC
        ("2020-12-22T15:05:58.29Z", MS),
        ("2020-12-22T15:05:58.290123Z", MS),
        (MS, MS),
        (str(MS), MS),
        (f" {MS} ", MS),
        (Decimal(MS), MS),
        (1608649558, MS - 290),  # epoch seconds
        ("1608649558.29", MS),
        (None, None),
        ("", None),
        ("yesterday", None),
        (True, None),
        (-5, None),
    ],
)
def test_provider_timestamps_become_epoch_ms(value: object, expected: int | None) -> None:
    assert epoch_ms(value) == expected


def test_get_payment_answers_keep_updated_at_as_epoch_ms() -> None:
    payment = ProviderPayment.model_validate(json.loads(PAYMENT))
    assert payment.report().updated_at_ms == 1767225600000  # 2026-01-01T00:00:00.000Z
    ipn_like = ProviderPayment.model_validate(
        {"payment_id": 1, "payment_status": "waiting", "updated_at": 1767225600123}
    )
    assert ipn_like.report().updated_at_ms == 1767225600123


@pytest.mark.parametrize(
    ("fields", "fixed"),
    [
        ({"is_fixed_rate": True}, True),
        ({"is_fixed_rate": "true"}, True),
        ({"is_fixed_rate": "false", "is_fee_paid_by_user": "TRUE"}, True),
        ({"is_fee_paid_by_user": True}, True),
        ({"is_fixed_rate": False, "is_fee_paid_by_user": "false"}, False),
        ({"is_fixed_rate": "false"}, False),
        ({}, None),
        ({"is_fixed_rate": "maybe"}, None),
    ],
)
def test_rate_type_from_either_flag(fields: dict[str, object], fixed: bool | None) -> None:
    body = {"payment_id": 1, "payment_status": "waiting"} | fields
    assert ProviderPayment.model_validate(body).report().fixed_rate is fixed
    invoice = Invoice.model_validate({"id": 5, "invoice_url": "http://p/i/5"} | fields)
    assert invoice.fixed_rate is fixed


def test_report_carries_parent_purchase_and_expiry() -> None:
    body = loads(
        b'{"payment_id":5077125051,"parent_payment_id":5077125050,"purchase_id":"4944856743",'
        b'"payment_status":"partially_paid","is_fixed_rate":"true",'
        b'"expiration_estimate_date":"2020-12-22T15:25:58.290Z","updated_at":1608649558290}'
    )
    report = ProviderPayment.model_validate(body).report()
    assert (report.payment_id, report.parent_payment_id, report.purchase_id) == (
        "5077125051",
        "5077125050",
        "4944856743",
    )
    assert report.fixed_rate is True
    assert report.expires_at_ms == MS + 20 * 60 * 1000
    assert report.updated_at_ms == MS
    valid_until = ProviderPayment.model_validate(
        {"payment_id": 1, "payment_status": "waiting", "valid_until": "2020-12-29T15:05:58.290Z"}
    )
    assert valid_until.report().expires_at_ms == MS + 7 * 86400 * 1000
    bare = ProviderPayment.model_validate({"payment_id": 1, "payment_status": "waiting"}).report()
    assert (bare.parent_payment_id, bare.purchase_id, bare.expires_at_ms) == (None, None, None)


def loads(raw: bytes) -> object:
    return json.loads(raw, parse_float=Decimal)
