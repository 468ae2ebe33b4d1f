"""What the real NOWPayments does and our emulator used to hide, through the whole system
(launcher-started processes, HTTP and signed IPNs only): a payment long after checkout, a
top-up completing an underpaid order, a second coin on the same invoice, ``finished`` with
nothing reported paid, a refund after delivery, and a status nobody documented."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from shared.testing import wait_for
from shared.testing.shop import Purchase, Shop, body_text, db, download_links, mails_to
from shared.testing.stack import Stack

pytestmark = pytest.mark.timeout(400)  # includes starting the whole stack


async def emulator(shop: Shop, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = await shop.http.post(f"{shop.emulator}/_emulator{path}", json=body or {})
    assert r.status_code in (200, 201), r.text
    data: dict[str, Any] = r.json()
    return data


async def attention(stack: Stack, order_id: str, kind: str) -> list[dict[str, Any]]:
    """The admin console's needs-attention rows of one order and kind, once projected."""

    async def rows() -> list[dict[str, Any]] | None:
        conn = await db(stack)
        try:
            found = await conn.fetch(
                "SELECT kind, detail, provider_payment_id FROM admin.attention_item "
                "WHERE order_id = $1 AND kind = $2",
                order_id,
                kind,
            )
        finally:
            await conn.close()
        return [dict(r) for r in found] or None

    result: list[dict[str, Any]] = await wait_for(
        rows, timeout=30, message=f"{kind} for {order_id} in the admin read model"
    )
    return result


async def one_link_email(stack: Stack, purchase: Purchase) -> str:
    mails = await wait_for(lambda: mails_to(stack, purchase.email), timeout=30)
    ready = [m for m in mails if "is ready" in (m.get("Subject") or "")]
    assert len(ready) == 1, [m.get("Subject") for m in mails]
    return body_text(ready[0])


async def test_a_payment_two_hours_after_checkout_is_delivered(stack: Stack, shop: Shop) -> None:
    products = await shop.products()
    purchase = await shop.buy("late@example.com", products[0]["sku"])
    await emulator(shop, "/clock", {"advance_seconds": 2 * 3600})
    await shop.pay(purchase, "full")
    await shop.wait_status(purchase, "fulfilled")
    assert download_links(await one_link_email(stack, purchase))


async def test_a_top_up_completes_an_underpaid_order(stack: Stack, shop: Shop) -> None:
    products = await shop.products()
    purchase = await shop.buy("topup@example.com", products[0]["sku"])
    first = await shop.pay(purchase, "underpay")
    await shop.wait_status(purchase, "underpaid")
    payment = (await shop.http.get(f"{shop.emulator}/_emulator/payments/{first}")).json()
    missing = str(Decimal(payment["pay_amount"]) - Decimal(payment["actually_paid"]))
    await emulator(shop, f"/payments/{first}/redeposit", {"amount": missing})
    order = await shop.wait_status(purchase, "fulfilled")
    assert [h["status"] for h in order["history"]][-3:] == ["underpaid", "paid", "fulfilled"]
    assert download_links(await one_link_email(stack, purchase))
    [flag] = await attention(stack, purchase.order_id, "child_payment")
    assert flag["provider_payment_id"] != first


async def test_a_second_coin_on_the_same_invoice_is_delivered_once(
    stack: Stack, shop: Shop
) -> None:
    products = await shop.products()
    purchase = await shop.buy("twocoins@example.com", products[0]["sku"])
    abandoned = await shop.pay(purchase, "abandon", pay_currency="btc")
    paid = await shop.pay(purchase, "full", pay_currency="eth")
    assert paid != abandoned
    await shop.wait_status(purchase, "fulfilled")
    # The abandoned coin's expiry arrives after the other was paid: nothing changes.
    await emulator(shop, f"/payments/{abandoned}/status", {"payment_status": "expired"})
    r = await shop.http.post(f"{shop.emulator}/_emulator/ipn/wait-idle", params={"timeout": 30})
    assert r.status_code == 200
    assert (await shop.order(purchase))["status"] == "fulfilled"
    assert download_links(await one_link_email(stack, purchase))


async def test_finished_with_nothing_reported_paid_is_delivered_and_flagged(
    stack: Stack, shop: Shop
) -> None:
    products = await shop.products()
    purchase = await shop.buy("zero@example.com", products[0]["sku"])
    await shop.pay(purchase, "finished_zero_paid")
    await shop.wait_status(purchase, "fulfilled")
    assert download_links(await one_link_email(stack, purchase))
    [flag] = await attention(stack, purchase.order_id, "amount_discrepancy")
    assert "actually_paid 0" in flag["detail"]


async def test_a_refund_after_delivery_revokes_the_download(stack: Stack, shop: Shop) -> None:
    products = await shop.products()
    purchase = await shop.buy("refund@example.com", products[0]["sku"])
    payment = await shop.pay(purchase, "jump")
    await shop.wait_status(purchase, "fulfilled")
    links = download_links(await one_link_email(stack, purchase))
    await emulator(shop, f"/payments/{payment}/status", {"payment_status": "refunded"})
    order = await shop.wait_status(purchase, "refunded")
    assert "refunded" in order["message"].lower()
    mails = await wait_for(
        lambda: (
            [m for m in mails_to(stack, purchase.email) if "refund" in body_text(m).lower()] or None
        ),
        timeout=30,
    )
    assert len(mails) == 1 and download_links(body_text(mails[0])) == []
    async with httpx.AsyncClient(follow_redirects=False, timeout=10) as client:
        r = await client.get(links[0])
    assert r.status_code in (403, 404, 410), r.status_code
    await attention(stack, purchase.order_id, "refunded")


async def test_an_unknown_status_is_recorded_for_an_operator(stack: Stack, shop: Shop) -> None:
    products = await shop.products()
    purchase = await shop.buy("unknown@example.com", products[0]["sku"])
    payment = await shop.pay(purchase, "abandon")
    await emulator(
        shop,
        f"/payments/{payment}/status",
        {"payment_status": "status_from_the_future", "allow_unknown_status": True},
    )
    [flag] = await attention(stack, purchase.order_id, "unknown_status")
    assert "status_from_the_future" in flag["detail"]
    assert (await shop.order(purchase))["status"] == "awaiting_payment"


async def test_a_payment_whose_ipns_all_got_lost_is_found_with_the_jwt_list(
    stack: Stack, shop: Shop
) -> None:
    # No IPN at all, so no provider payment id: only GET /v1/payment/?invoiceId= can find it,
    # and the emulator (like the real API) answers it only with a Bearer token.
    products = await shop.products()
    purchase = await shop.buy("silent@example.com", products[0]["sku"])
    statuses = ["waiting", "confirming", "confirmed", "sending", "finished"]
    await shop.pay(purchase, "full", drop_statuses=statuses)
    r = await shop.http.get(
        f"{shop.emulator}/v1/payment/", params={"invoiceId": purchase.invoice_id}
    )
    assert r.status_code in (401, 403), r.text  # a key alone is not enough
    await shop.wait_status(purchase, "fulfilled", timeout=120)
    assert download_links(await one_link_email(stack, purchase))


async def test_ipns_in_the_older_documented_shape_are_accepted(stack: Stack, shop: Shop) -> None:
    # ISO updated_at, keys in the provider's own order, no fee object; signed over the sorted
    # form, so the gateway must verify a canonical re-serialisation, not only the raw bytes.
    products = await shop.products()
    purchase = await shop.buy("legacy@example.com", products[0]["sku"])
    await shop.pay(purchase, "full", ipn_shape="legacy")
    await shop.wait_status(purchase, "fulfilled")
    log = (
        await shop.http.get(
            f"{shop.emulator}/_emulator/ipn-log", params={"invoice_id": purchase.invoice_id}
        )
    ).json()["entries"]
    assert log and all(e["outcome"] == "delivered" for e in log), log
    assert all('"fee"' not in e["body"] for e in log)
