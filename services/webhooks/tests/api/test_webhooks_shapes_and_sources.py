"""Older IPN shapes end to end, the optional sender allow-list, and what start-up refuses with
the real provider — the api in-process against the real PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import webhooks_testkit as kit
from shared.contracts.webhooks import IpnReceived, IpnRejected
from shared.settings import SecretNotConfiguredError
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from webhooks.main import build, create_api, create_worker
from webhooks.settings import WebhooksSettings

PROVIDER_IPS = "51.89.194.21, 51.75.77.69, 138.201.172.58, 65.21.158.36, 2001:db8:1::/48"
SANDBOX = "https://api-sandbox.nowpayments.io/v1"
UPDATED_MS = 1698697946468


async def outbox(db, subject: str) -> list[dict]:
    rows = await db.fetch(
        "SELECT payload FROM webhooks.outbox WHERE subject = $1 ORDER BY id", subject
    )
    return [json.loads(r["payload"]) for r in rows]


def signed_by_provider(body: dict[str, Any]) -> str:
    """The documented recipe, done here: HMAC-SHA512 over the keys-sorted JSON.stringify."""
    signed = kit.js_stringify(body).encode("utf-8")
    return hmac.new(kit.SECRET.encode(), signed, hashlib.sha512).hexdigest()


def legacy_ipn(payment_id: int) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(UPDATED_MS / 1000, UTC).isoformat(timespec="milliseconds")
    return {  # insertion order as it arrived; no fee; ISO updated_at
        "payment_id": payment_id,
        "invoice_id": 6417549628,
        "payment_status": "partially_paid",
        "price_amount": 5,
        "price_currency": "usd",
        "pay_amount": 69.242455,
        "actually_paid": 12.5,
        "pay_currency": "trx",
        "order_id": "ord_legacy",
        "updated_at": stamp.replace("+00:00", "Z"),
        "outcome_amount": 0.000002,
        "outcome_currency": "usdttrc20",
    }


async def test_legacy_shape_is_accepted_and_its_current_twin_is_a_duplicate(gateway, db):
    body = legacy_ipn(5261148850)
    raw = kit.js_stringify(body, sort=False).encode()
    response = await kit.post(gateway.client, raw, signed_by_provider(body))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "accepted"}
    [row] = await db.fetch("SELECT * FROM webhooks.webhook_log")
    assert row["verified_by"] == "canonical/current"
    assert row["raw_body"] == raw  # stored exactly as it came
    assert row["provider_updated_at"] == UPDATED_MS
    [event] = [IpnReceived.model_validate(e) for e in await outbox(db, IpnReceived.SUBJECT)]
    assert event.provider_updated_at == UPDATED_MS
    assert event.payload["updated_at"] == body["updated_at"]

    # The same IPN in today's shape (sorted, epoch ms, a fee object) is the same delivery.
    current = {**body, "updated_at": UPDATED_MS, "fee": {"currency": "trx", "depositFee": 0.1}}
    again = await kit.post_signed(gateway.client, current)
    assert again.json() == {"status": "duplicate"}
    assert len(await outbox(db, IpnReceived.SUBJECT)) == 1


async def test_tampered_legacy_body_is_refused_and_stores_nothing(gateway, db):
    body = legacy_ipn(5261148851)
    raw = kit.js_stringify(body, sort=False).encode().replace(b"12.5", b"125")
    response = await kit.post(gateway.client, raw, signed_by_provider(body))
    assert (response.status_code, response.json()["error"]) == (400, "invalid_signature")
    assert await db.fetch("SELECT 1 FROM webhooks.webhook_log") == []


@pytest.fixture
async def allow_listed(webhooks_infra) -> AsyncIterator[Any]:
    settings = kit.make_settings(webhooks_infra, ipn_allowed_ips=PROVIDER_IPS)
    ctx = build(settings)
    app = create_api(ctx)
    yield app
    await app.state.store.close()
    await ctx.close()


def client_from(app: Any, peer: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://webhooks.test")


async def test_sender_not_on_the_allow_list_is_403_recorded_and_changes_nothing(allow_listed, db):
    async with client_from(allow_listed, "203.0.113.7") as client:
        response = await kit.post_signed(
            client,
            kit.ipn(),
            headers={"x-forwarded-for": "51.89.194.21"},  # not trusted
        )
    assert response.status_code == 403
    problem = response.json()
    assert problem["error"] == "source_not_allowed"
    assert "203.0.113.7" in problem["detail"] and "NOWPAYMENTS_IPN_ALLOWED_IPS" in problem["detail"]
    assert await db.fetch("SELECT 1 FROM webhooks.webhook_log") == []
    assert await outbox(db, IpnReceived.SUBJECT) == []
    [failure] = await db.fetch("SELECT * FROM webhooks.webhook_failure")
    assert (failure["reason"], failure["source_ip"]) == ("source_not_allowed", "203.0.113.7")
    [rejected] = await outbox(db, IpnRejected.SUBJECT)
    assert IpnRejected.model_validate(rejected).reason == "source_not_allowed"
    async with client_from(allow_listed, "127.0.0.1") as client:
        metrics = (await client.get("/metrics")).text
    assert 'webhooks_ipn_rejected_total{reason="source_not_allowed"}' in metrics


@pytest.mark.parametrize("peer", ["138.201.172.58", "::ffff:65.21.158.36", "2001:db8:1::7"])
async def test_listed_senders_are_verified_as_usual(allow_listed, db, peer):
    async with client_from(allow_listed, peer) as client:
        assert (await kit.post_signed(client, kit.ipn())).json() == {"status": "accepted"}
        # On the list is not a pass: the signature is still checked.
        raw = kit.encode(kit.ipn())
        forged = await kit.post(client, raw, kit.sign(raw, "not-the-secret"))
        assert forged.status_code == 400


async def test_forwarded_for_counts_only_behind_a_trusted_proxy(allow_listed, db):
    """uvicorn's proxy-headers handling (FORWARDED_ALLOW_IPS) decides the client address;
    the gateway checks what it decided."""
    proxy = "10.0.0.5"
    header = {"x-forwarded-for": "51.75.77.69"}
    trusted = ProxyHeadersMiddleware(allow_listed, trusted_hosts=proxy)
    async with client_from(trusted, proxy) as client:
        assert (await kit.post_signed(client, kit.ipn(), headers=header)).status_code == 200
    untrusted = ProxyHeadersMiddleware(allow_listed, trusted_hosts="127.0.0.1")
    async with client_from(untrusted, proxy) as client:
        assert (await kit.post_signed(client, kit.ipn(), headers=header)).status_code == 403
    [row] = await db.fetch("SELECT source_ip FROM webhooks.webhook_log")
    assert row["source_ip"] == "51.75.77.69"


async def test_without_an_allow_list_anyone_may_deliver(gateway):
    assert (await kit.post_signed(gateway.client, kit.ipn())).status_code == 200


def test_a_bad_allow_list_entry_stops_start_up_naming_it(infra):
    with pytest.raises(ValueError, match=re.escape("NOWPAYMENTS_IPN_ALLOWED_IPS: '51.89.194.x'")):
        kit.make_settings(infra, ipn_allowed_ips="51.89.194.21,51.89.194.x")


def test_real_provider_without_the_ipn_secret_refuses_to_start(infra):
    for secret in (None, "", "replace-me"):
        settings = kit.make_settings(infra, nowpayments_base=SANDBOX, ipn_secret=secret)
        with pytest.raises(SecretNotConfiguredError, match="NOWPAYMENTS_IPN_SECRET") as info:
            create_worker(build(settings))
        assert "replace-me" not in str(info.value)
        with pytest.raises(SecretNotConfiguredError, match="NOWPAYMENTS_IPN_SECRET"):
            create_api(build(settings))
    # With the emulator the worker (replays only) starts without it, as before.
    create_worker(build(kit.make_settings(infra, ipn_secret=None)))


def test_secret_with_a_trailing_newline_signs_like_the_trimmed_one(monkeypatch):
    monkeypatch.setenv("NOWPAYMENTS_IPN_SECRET", kit.SECRET + "\n")
    monkeypatch.setenv("NOWPAYMENTS_IPN_SECRET_PREVIOUS", f"  {kit.PREVIOUS_SECRET}\r\n")
    keys = WebhooksSettings().ipn_keys()
    assert keys == (kit.SECRET.encode(), kit.PREVIOUS_SECRET.encode())


async def test_secret_from_a_file_verifies_real_deliveries(webhooks_infra, db):
    settings = kit.make_settings(webhooks_infra, ipn_secret=kit.SECRET + "\n")
    ctx = build(settings)
    app = create_api(ctx)
    try:
        async with client_from(app, "203.0.113.7") as client:
            response = await kit.post_signed(client, kit.ipn())
        assert response.json() == {"status": "accepted"}
    finally:
        await app.state.store.close()
        await ctx.close()
