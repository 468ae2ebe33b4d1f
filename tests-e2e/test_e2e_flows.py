"""The customer's paths through the real system, over HTTP only."""

from __future__ import annotations

import httpx
import pytest
from shared.testing import wait_for
from shared.testing.shop import Shop, body_text, download_links, mails_to
from shared.testing.stack import Stack

pytestmark = pytest.mark.timeout(400)  # includes starting the whole stack


async def test_happy_path_order_pay_fulfilled_one_email_with_a_working_link(
    stack: Stack, shop: Shop
) -> None:
    products = await shop.products()
    assert products, "the demo catalogue is seeded"
    purchase = await shop.buy("happy@example.com", products[0]["sku"], quantity=2)
    assert (await shop.order(purchase))["status"] == "awaiting_payment"

    await shop.pay(purchase, "full")
    order = await shop.wait_status(purchase, "fulfilled")
    assert [h["status"] for h in order["history"]][-2:] == ["paid", "fulfilled"]

    mails = await wait_for(lambda: mails_to(stack, "happy@example.com"), timeout=30)
    assert len(mails) == 1
    text = body_text(mails[0])
    links = download_links(text)
    assert links, text
    async with httpx.AsyncClient(follow_redirects=False, timeout=10) as client:
        first = await client.get(links[0])
        if first.status_code == 200:  # a page listing one link per item
            inner = download_links(first.text) or [links[0].rstrip("/") + "/1"]
            first = await client.get(inner[0])
        assert first.status_code in (302, 303, 307), first.text[:500]
        stored = await client.get(first.headers["location"])
        assert stored.status_code == 200
        licence = stored.text
    assert licence.strip()
    # The key is in the file behind the link, never in the email itself.
    assert licence.strip().splitlines()[-1] not in text


async def test_underpaid_order_gets_the_underpaid_notice(stack: Stack, shop: Shop) -> None:
    products = await shop.products()
    purchase = await shop.buy("under@example.com", products[0]["sku"])
    await shop.pay(purchase, "underpay")
    order = await shop.wait_status(purchase, "underpaid")
    assert "refund" in order["message"].lower() or "support" in order["message"].lower()
    mails = await wait_for(lambda: mails_to(stack, "under@example.com"), timeout=30)
    assert "underpaid" in (mails[0].get("Subject") or "").lower()
    assert download_links(body_text(mails[0])) == []


async def test_missed_final_ipn_is_settled_by_the_reconciliation_poller(
    stack: Stack, shop: Shop
) -> None:
    products = await shop.products()
    purchase = await shop.buy("missed@example.com", products[1 % len(products)]["sku"])
    await shop.pay(purchase, "full", drop_final=True)
    r = await shop.http.post(f"{shop.emulator}/_emulator/ipn/wait-idle", params={"timeout": 30})
    assert r.status_code == 200
    log = (
        await shop.http.get(
            f"{shop.emulator}/_emulator/ipn-log", params={"invoice_id": purchase.invoice_id}
        )
    ).json()["entries"]
    finished = [e for e in log if e["payment_status"] == "finished"]
    assert finished and all(e["outcome"] == "dropped" for e in finished)

    order = await shop.wait_status(purchase, "fulfilled", timeout=90)
    assert order["payment_status"] == "finished"
    mails = await wait_for(lambda: mails_to(stack, "missed@example.com"), timeout=30)
    assert len(mails) == 1
