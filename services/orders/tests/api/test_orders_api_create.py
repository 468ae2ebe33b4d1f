"""POST /orders and GET /products: validation, pricing, idempotency, the token."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from shared.contracts import subjects

GOOD = {"email": "player@example.com", "items": [{"sku": "game-key", "quantity": 2}]}


async def test_products_lists_active_items_with_decimal_prices(orders_api):
    response = await orders_api.get("/products")
    assert response.status_code == 200
    items = response.json()["items"]
    by_sku = {p["sku"]: p for p in items}
    assert set(by_sku) == {"game-key", "office-licence", "euro-pack"}  # retired-key hidden
    assert by_sku["game-key"] == {
        "sku": "game-key",
        "title": "Game Key",
        "description": "Game Key for tests",
        "price": "9.99",
        "currency": "usd",
    }
    assert by_sku["office-licence"]["price"] == "14.50"


async def test_create_order_prices_server_side_and_publishes_order_created(orders_api, probe):
    body = {
        "email": "Player@Example.com",
        "items": [
            {"sku": "game-key", "quantity": 2},
            {"sku": "office-licence", "quantity": 1},
            # a client-sent price is ignored: the catalogue decides
        ],
    }
    body["items"][0]["unit_price"] = "0.01"
    response = await orders_api.post("/orders", json=body)
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "created"
    assert order["total"] == "34.48"  # 2 x 9.99 + 14.50, in Decimal
    assert order["currency"] == "usd"
    assert order["items"] == [
        {
            "sku": "game-key",
            "title": "Game Key",
            "quantity": 2,
            "unit_price": "9.99",
            "line_total": "19.98",
        },
        {
            "sku": "office-licence",
            "title": "Office Licence",
            "quantity": 1,
            "unit_price": "14.50",
            "line_total": "14.50",
        },
    ]
    assert len(order["order_token"]) >= 43
    uuid.UUID(order["order_id"])
    events = await probe.outbox_events(subjects.ORDER_CREATED)
    assert len(events) == 1
    created = events[0]
    assert created["order_id"] == order["order_id"]
    assert created["version"] == 1 and created["status"] == "created"
    assert created["total"] == "34.48"
    assert created["email"] == "Player@example.com"  # domain part normalised by the validator
    assert [line["sku"] for line in created["items"]] == ["game-key", "office-licence"]


def _items(n: int) -> list[dict[str, Any]]:
    return [{"sku": "game-key", "quantity": 1}] + [
        {"sku": f"sku-{i}", "quantity": 1} for i in range(1, n)
    ]


INVALID = [
    pytest.param({"items": GOOD["items"]}, "email", "Field required", id="email-missing"),
    pytest.param(
        {**GOOD, "email": "not-an-email"}, "email", "not a valid email", id="email-syntax"
    ),
    pytest.param(
        {**GOOD, "email": "a@b@example.com"}, "email", "not a valid email", id="email-two-at"
    ),
    pytest.param(
        {**GOOD, "items": [{"sku": "game-key", "quantity": 0}]},
        "items[0].quantity",
        "greater than or equal to 1",
        id="quantity-zero",
    ),
    pytest.param(
        {**GOOD, "items": [{"sku": "game-key", "quantity": 11}]},
        "items[0].quantity",
        "less than or equal to 10",
        id="quantity-eleven",
    ),
    pytest.param(
        {**GOOD, "items": [{"sku": "game-key", "quantity": "2"}]},
        "items[0].quantity",
        "valid integer",
        id="quantity-string",
    ),
    pytest.param(
        {**GOOD, "items": [{"sku": "game-key", "quantity": 1.5}]},
        "items[0].quantity",
        "valid integer",
        id="quantity-fraction",
    ),
    pytest.param(
        {**GOOD, "items": [{"sku": "game-key"}]},
        "items[0].quantity",
        "Field required",
        id="quantity-missing",
    ),
    pytest.param(
        {**GOOD, "items": [{"sku": "no-such-thing", "quantity": 1}]},
        "items[0].sku",
        "unknown sku 'no-such-thing'",
        id="sku-unknown",
    ),
    pytest.param(
        {**GOOD, "items": [{"sku": "retired-key", "quantity": 1}]},
        "items[0].sku",
        "no longer sold",
        id="sku-inactive",
    ),
    pytest.param(
        {**GOOD, "items": [{"sku": "", "quantity": 1}]},
        "items[0].sku",
        "at least 1 character",
        id="sku-empty",
    ),
    pytest.param(
        {**GOOD, "items": [{"sku": "x" * 65, "quantity": 1}]},
        "items[0].sku",
        "at most 64 characters",
        id="sku-too-long",
    ),
    pytest.param({**GOOD, "items": []}, "items", "at least 1 item", id="items-empty"),
    pytest.param({**GOOD, "items": _items(21)}, "items", "at most 20 items", id="items-21-lines"),
    pytest.param(
        {
            **GOOD,
            "items": [{"sku": "game-key", "quantity": 1}, {"sku": "euro-pack", "quantity": 1}],
        },
        "items",
        "share a currency",
        id="mixed-currency",
    ),
    pytest.param(
        {**GOOD, "items": [{"sku": "game-key", "quantity": 1}, {"sku": "game-key", "quantity": 2}]},
        "items[1].sku",
        "already appears in line 0",
        id="duplicate-sku",
    ),
    pytest.param({**GOOD, "items": "game-key"}, "items", "valid list", id="items-not-list"),
]


@pytest.mark.parametrize(("body", "field", "reason"), INVALID)
async def test_invalid_order_is_refused_naming_field_and_reason(
    orders_api, probe, body, field, reason
):
    response = await orders_api.post("/orders", json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["error"]["field"] == field
    assert reason in error["error"]["reason"]
    assert any(reason in d["msg"] for d in error["detail"])
    assert all({"loc", "msg", "type"} <= set(d) for d in error["detail"])
    assert await probe.count_orders() == 0
    assert await probe.outbox_subjects() == []


async def test_every_bad_line_is_reported_at_once(orders_api):
    body = {
        **GOOD,
        "items": [{"sku": "nope", "quantity": 1}, {"sku": "retired-key", "quantity": 1}],
    }
    response = await orders_api.post("/orders", json=body)
    assert response.status_code == 422
    locs = [d["loc"] for d in response.json()["detail"]]
    assert locs == [["body", "items", 0, "sku"], ["body", "items", 1, "sku"]]


async def test_malformed_json_and_oversized_bodies_are_422(orders_api, probe):
    response = await orders_api.post(
        "/orders", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["reason"]

    huge = {**GOOD, "padding": "x" * 40_000}
    response = await orders_api.post("/orders", json=huge)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "body_too_large"
    assert await probe.count_orders() == 0


@pytest.mark.parametrize("key", ["", "k" * 256, "has space", "naïve"])
async def test_invalid_idempotency_key_is_refused(orders_api, probe, key):
    response = await orders_api.post(
        "/orders", json=GOOD, headers={"Idempotency-Key": key.encode("utf-8")}
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "Idempotency-Key"
    assert await probe.count_orders() == 0


async def test_idempotent_retry_returns_the_first_result(orders_api, probe):
    headers = {"Idempotency-Key": "checkout-7f3a"}
    first = await orders_api.post("/orders", json=GOOD, headers=headers)
    second = await orders_api.post("/orders", json=GOOD, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()  # token included: the retry can still open the order
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await probe.count_orders() == 1
    order = first.json()
    opened = await orders_api.get(
        f"/orders/{order['order_id']}", headers={"X-Order-Token": second.json()["order_token"]}
    )
    assert opened.status_code == 200


async def test_concurrent_identical_requests_with_one_key_make_one_order(orders_api, probe):
    headers = {"Idempotency-Key": "double-click-1"}
    responses = await asyncio.gather(
        *(orders_api.post("/orders", json=GOOD, headers=headers) for _ in range(8))
    )
    assert [r.status_code for r in responses] == [201] * 8
    bodies = [r.json() for r in responses]
    assert all(b == bodies[0] for b in bodies)
    assert sum(1 for r in responses if "Idempotent-Replayed" not in r.headers) == 1
    assert await probe.count_orders() == 1
    assert await probe.outbox_subjects() == [subjects.ORDER_CREATED]


async def test_same_key_with_another_body_is_refused_and_changes_nothing(orders_api, probe):
    headers = {"Idempotency-Key": "reused-key"}
    first = await orders_api.post("/orders", json=GOOD, headers=headers)
    assert first.status_code == 201
    other = {**GOOD, "items": [{"sku": "game-key", "quantity": 3}]}
    response = await orders_api.post("/orders", json=other, headers=headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "Idempotency-Key"
    assert "different request body" in error["reason"]
    assert await probe.count_orders() == 1


async def test_different_keys_make_different_orders(orders_api, probe):
    a = await orders_api.post("/orders", json=GOOD, headers={"Idempotency-Key": "a"})
    b = await orders_api.post("/orders", json=GOOD, headers={"Idempotency-Key": "b"})
    assert a.json()["order_id"] != b.json()["order_id"]
    assert a.json()["order_token"] != b.json()["order_token"]
    assert await probe.count_orders() == 2


async def test_twin_that_passed_the_lookup_waits_for_the_first_and_replays(
    orders_api, probe, monkeypatch
):
    """Deterministic race: the twin reaches the key claim while the first is still open."""
    from orders import repository

    original = repository.claim_idempotency_key
    twin_entered = asyncio.Event()
    outcomes: list[bool] = []
    twin: list[asyncio.Task] = []
    headers = {"Idempotency-Key": "race-1"}

    async def claim(session, **kwargs):
        if not twin:  # the first request: start its twin before our transaction commits
            twin.append(asyncio.create_task(orders_api.post("/orders", json=GOOD, headers=headers)))
            claimed = await original(session, **kwargs)
            await twin_entered.wait()
        else:
            twin_entered.set()
            claimed = await original(session, **kwargs)  # blocks until the first commits
        outcomes.append(claimed)
        return claimed

    monkeypatch.setattr(repository, "claim_idempotency_key", claim)
    first = await orders_api.post("/orders", json=GOOD, headers=headers)
    second = await twin[0]
    assert outcomes == [True, False]
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert await probe.count_orders() == 1
