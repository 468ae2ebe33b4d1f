"""POST /v1/auth and the JWT the payment list wants besides the api key."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from nowpayments_emulator.config import EmulatorConfig
from nowpayments_emulator.testing import Harness, HarnessFactory

pytestmark = pytest.mark.asyncio

LOGIN = {"email": "emulator@bitloot.test", "password": "emulator-password"}
MISSING = {
    "status": False,
    "statusCode": 401,
    "code": "AUTH_REQUIRED",
    "message": "Authorization header is empty (Bearer JWTtoken is required)",
}


def segment(part: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"status", "statusCode", "code", "message"}
    assert (body["status"], body["statusCode"], body["code"]) == (False, status, code)
    return body


async def login(emu: Harness, body: dict[str, Any] = LOGIN) -> httpx.Response:
    return await emu.client.post("/v1/auth", json=body)


async def list_with(emu: Harness, headers: dict[str, str]) -> httpx.Response:
    return await emu.client.get("/v1/payment/", headers=headers)


def bearer(emu: Harness, token: str) -> dict[str, str]:
    return emu.key | {"Authorization": f"Bearer {token}"}


async def test_login_returns_a_jwt_that_lives_the_configured_lifetime(emu: Harness) -> None:
    response = await login(emu)  # no api key: the provider's Authentication needs none
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"token"}
    header, payload, signature = body["token"].split(".")
    assert segment(header) == {"alg": "HS256", "typ": "JWT"}
    claims = segment(payload)
    assert claims["exp"] - claims["iat"] == 300
    assert isinstance(claims["id"], str) and claims["id"].isdigit()
    assert signature
    again = (await login(emu)).json()["token"]
    assert again != body["token"]


@pytest.mark.parametrize(
    "body",
    [
        {"email": "emulator@bitloot.test", "password": "wrong"},
        {"email": "Emulator@bitloot.test", "password": "emulator-password"},  # case-sensitive
        {"email": "someone@else.test", "password": "emulator-password"},
    ],
)
async def test_wrong_credentials_are_refused(emu: Harness, body: dict[str, str]) -> None:
    assert_envelope(await login(emu, body), 403, "ACCESS_DENIED")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"password": "emulator-password"}, '"email" is required'),
        ({"email": "emulator@bitloot.test"}, '"password" is required'),
        ({"email": 5, "password": "x"}, '"email" must be a string'),
    ],
)
async def test_login_validation(emu: Harness, body: dict[str, Any], message: str) -> None:
    assert assert_envelope(await login(emu, body), 400, "INVALID_REQUEST_PARAMS")["message"] == (
        message
    )


async def test_credentials_come_from_the_config(make_harness: HarnessFactory) -> None:
    emu = await make_harness(email="ops@shop.test", password="s3cret")
    assert_envelope(await login(emu), 403, "ACCESS_DENIED")
    assert (await login(emu, {"email": "ops@shop.test", "password": "s3cret"})).status_code == 200
    config = EmulatorConfig.from_env(
        {"NOWPAYMENTS_EMAIL": "a@b.c", "NOWPAYMENTS_PASSWORD": "p", "EMULATOR_JWT_LIFETIME": "60"}
    )
    assert (config.email, config.password, config.jwt_lifetime) == ("a@b.c", "p", 60.0)
    defaults = EmulatorConfig.from_env({})
    assert (defaults.email, defaults.password) == (LOGIN["email"], LOGIN["password"])
    assert defaults.jwt_lifetime == 300.0 and defaults.require_jwt is True
    assert EmulatorConfig.from_env({"EMULATOR_REQUIRE_JWT": "false"}).require_jwt is False
    with pytest.raises(ValueError, match="EMULATOR_REQUIRE_JWT"):
        EmulatorConfig.from_env({"EMULATOR_REQUIRE_JWT": "maybe"})


async def test_the_list_without_a_bearer_token_is_401_auth_required(emu: Harness) -> None:
    response = await list_with(emu, emu.key)
    assert response.status_code == 401
    assert response.json() == MISSING
    for header in ("Basic abc", "Bearer", "Bearer   "):
        refused = await list_with(emu, emu.key | {"Authorization": header})
        assert refused.json() == MISSING


async def test_the_list_with_a_good_token_answers(emu: Harness) -> None:
    token = (await login(emu)).json()["token"]
    response = await list_with(emu, bearer(emu, token))
    assert response.status_code == 200, response.text
    assert response.json() == {"data": [], "limit": 10, "page": 0, "pagesCount": 0, "total": 0}


async def test_the_api_key_is_checked_before_the_token(emu: Harness) -> None:
    token = (await login(emu)).json()["token"]
    response = await list_with(emu, {"Authorization": f"Bearer {token}"})
    assert_envelope(response, 403, "INVALID_API_KEY")


async def test_forged_tampered_or_foreign_tokens_are_refused(
    emu: Harness, make_harness: HarnessFactory
) -> None:
    token = (await login(emu)).json()["token"]
    header, payload, signature = token.split(".")
    claims = segment(payload) | {"exp": segment(payload)["exp"] + 3600}
    longer = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    other = await make_harness()
    foreign = (await login(other)).json()["token"]
    for bad in ("not-a-jwt", f"{header}.{longer}.{signature}", foreign, token[:-2] + "xx"):
        body = assert_envelope(await list_with(emu, bearer(emu, bad)), 401, "AUTH_REQUIRED")
        assert body["message"] == "invalid token"


async def test_a_token_expires_after_its_lifetime_on_the_emulator_clock(emu: Harness) -> None:
    token = (await login(emu)).json()["token"]
    assert (await list_with(emu, bearer(emu, token))).status_code == 200
    emu.app.state.emulator.store.clock.advance(301)
    body = assert_envelope(await list_with(emu, bearer(emu, token)), 401, "AUTH_REQUIRED")
    assert body["message"] == "jwt expired"
    fresh = (await login(emu)).json()["token"]
    assert (await list_with(emu, bearer(emu, fresh))).status_code == 200


async def test_a_sub_second_lifetime_expires_at_once(make_harness: HarnessFactory) -> None:
    emu = await make_harness(jwt_lifetime=0)
    token = (await login(emu)).json()["token"]
    assert_envelope(await list_with(emu, bearer(emu, token)), 401, "AUTH_REQUIRED")


async def test_the_control_api_expires_every_token_issued_so_far(emu: Harness) -> None:
    old = (await login(emu)).json()["token"]
    assert (await emu.client.post("/_emulator/auth/expire")).json() == {"ok": True}
    body = assert_envelope(await list_with(emu, bearer(emu, old)), 401, "AUTH_REQUIRED")
    assert body["message"] == "jwt expired"
    new = (await login(emu)).json()["token"]
    assert (await list_with(emu, bearer(emu, new))).status_code == 200


async def test_require_jwt_off_lets_the_api_key_alone_list(make_harness: HarnessFactory) -> None:
    emu = await make_harness(require_jwt=False)
    assert (await list_with(emu, emu.key)).status_code == 200


async def test_only_the_list_wants_the_token(emu: Harness) -> None:
    invoice = await emu.create_invoice()  # key alone
    paid = await emu.pay(invoice["id"])
    await emu.payment(paid["payment_id"])  # key alone
    assert (await emu.client.get("/v1/currencies", headers=emu.key)).status_code == 200


async def test_an_injected_fault_hits_the_login(emu: Harness) -> None:
    await emu.client.post("/_emulator/faults", json={"operation": "auth", "status_code": 503})
    assert_envelope(await login(emu), 503, "INTERNAL_SERVER_ERROR")
    assert (await login(emu)).status_code == 200


async def test_harness_helpers_log_in(emu: Harness) -> None:
    headers = await emu.auth_headers()
    assert headers["x-api-key"] == emu.api_key
    assert headers["Authorization"].startswith("Bearer ")
    invoice = await emu.create_invoice()
    paid = await emu.pay(invoice["id"])
    listing = await emu.list_payments(invoiceId=invoice["id"])
    assert [p["payment_id"] for p in listing["data"]] == [paid["payment_id"]]
