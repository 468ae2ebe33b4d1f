"""Chromium through the whole running system: storefront → emulator → order page → dev mailbox
→ download, an underpayment, and the admin console's reprocess with its audit entry.

Every page visited is screenshotted into ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from playwright.async_api import Locator, Page, expect

from .conftest import Browsing, LiveSystem

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

LICENCE_KEY = re.compile(r"^[A-Z2-7]{5}(-[A-Z2-7]{5}){4}$", re.MULTILINE)
PRODUCT = ("pixelforge-pro-1y", "PixelForge Pro — 1-year licence")


async def until_visible(
    page: Page,
    locator: Locator,
    *,
    refresh: Callable[[], Awaitable[Any]] | None = None,
    attempts: int = 60,
) -> None:
    """Reload (or ``refresh``) until ``locator`` shows: for read models that catch up later.

    Each round waits on the condition itself (Playwright's expect), never a fixed sleep.
    """
    for _ in range(attempts):
        try:
            await expect(locator.first).to_be_visible(timeout=1_000)
            return
        except AssertionError:
            await (refresh() if refresh else page.reload())
    await expect(locator.first).to_be_visible(timeout=1_000)


async def buy(b: Browsing, live: LiveSystem, email: str, scenario: str) -> str:
    """Storefront → checkout → emulator page → pay with ``scenario``; returns the order id."""
    page = b.page
    await page.goto(f"{live.web_url}/")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Digital goods, paid in crypto")
    await b.shot("storefront")
    await page.get_by_role("link", name=f"Buy {PRODUCT[1]}").click()
    await expect(page.locator("#product-title")).to_have_text(PRODUCT[1])
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Quantity").fill("1")
    await b.shot("product-form")

    await page.locator("#checkout").click()
    await page.wait_for_url(f"{live.emulator_url}/invoice/**")
    await expect(page.locator("#pay")).to_be_visible()
    await b.shot("provider-invoice")

    await page.locator(f"#scenario-{scenario}").check()
    await page.locator("#pay").click()
    await page.wait_for_url(re.compile(re.escape(live.web_url) + r"/orders/[A-Za-z0-9-]+$"))
    order_id = page.url.rsplit("/", 1)[1]
    await expect(page.locator("#order-id")).to_have_text(order_id)
    await b.shot("order-landing")
    return order_id


async def assert_token_stays_out_of_the_page(page: Page, order_id: str) -> None:
    cookies = {c["name"]: c for c in await page.context.cookies()}
    cookie = cookies[f"bl_order_{order_id}"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == f"/orders/{order_id}"
    assert await page.evaluate("document.cookie") == ""
    assert cookie["value"] not in await page.content()


async def test_buy_pay_in_full_and_download_the_licence(
    live_system: LiveSystem, browsing: Browsing
) -> None:
    page = browsing.page
    email = f"buyer-{uuid.uuid4().hex[:8]}@example.com"
    order_id = await buy(browsing, live_system, email, "full")
    await assert_token_stays_out_of_the_page(page, order_id)

    # The page polls /orders/{id}/status by itself; no reload here.
    await expect(page.locator("#order-state-title")).to_have_text(
        "Fulfilled — check your email", timeout=90_000
    )
    await expect(page.locator("#order-status")).to_have_attribute("data-state", "fulfilled")
    await expect(page.locator("#payment-status")).to_have_text("finished")
    await expect(page.locator("#refresh-link")).to_be_hidden()
    await expect(page.locator("#retry-link")).to_be_hidden()
    await browsing.shot("order-fulfilled")

    await page.goto(f"{live_system.web_url}/dev/mailbox")
    message_link = page.locator("#mailbox tr", has_text=email).get_by_role("link")
    await until_visible(page, message_link)
    await browsing.shot("dev-mailbox")
    await message_link.first.click()
    await expect(page.locator("#mail-to")).to_contain_text(email)
    await expect(page.locator("#mail-body")).to_contain_text(order_id)
    await browsing.shot("email")

    download_link = page.locator("#mail-body a", has_text="/downloads/").first
    href = await download_link.get_attribute("href")
    assert href is not None
    assert href.startswith(f"{live_system.url('fulfillment')}/downloads/")
    async with page.expect_download() as download_info:
        await download_link.click()
    download = await download_info.value
    assert download.suggested_filename == f"{PRODUCT[0]}-licence.txt"
    content = (await download.path()).read_bytes().decode("utf-8")
    assert content.startswith("BitLoot licence\n")
    assert f"Order: {order_id}" in content
    assert f"Item: {PRODUCT[1]} ({PRODUCT[0]})" in content
    assert len(LICENCE_KEY.findall(content)) == 1
    assert browsing.csp_violations() == []


async def test_underpayment_lands_on_the_underpaid_page(
    live_system: LiveSystem, browsing: Browsing
) -> None:
    page = browsing.page
    order_id = await buy(
        browsing, live_system, f"short-{uuid.uuid4().hex[:8]}@example.com", "underpay"
    )

    await expect(page.locator("#order-status")).to_have_attribute(
        "data-state", "underpaid", timeout=60_000
    )
    await expect(page.locator("#order-state-title")).to_have_text(
        "Underpaid — the payment was less than the amount due"
    )
    await expect(page.locator("#order-state-detail")).to_contain_text("contact support")
    await expect(page.locator("#payment-status")).to_have_text("partially paid")
    await expect(page.locator("#retry-link")).to_be_hidden()
    await browsing.shot("order-underpaid")

    # Without JS the same state is rendered by the server.
    cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
    async with httpx.AsyncClient(cookies=cookies) as http:
        html = (await http.get(f"{live_system.web_url}/orders/{order_id}")).text
    assert 'data-state="underpaid"' in html
    assert browsing.csp_violations() == []


async def _paid_order(live: LiveSystem) -> str:
    """An order paid in full through the APIs (the browser part is the console here)."""
    async with httpx.AsyncClient(timeout=30) as http:
        orders = live.url("orders")
        created = await http.post(
            f"{orders}/orders",
            json={"email": "console@example.com", "items": [{"sku": PRODUCT[0], "quantity": 1}]},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        assert created.status_code == 201, created.text
        order = created.json()
        checkout = await http.post(
            f"{orders}/orders/{order['order_id']}/checkout",
            headers={"X-Order-Token": order["order_token"]},
        )
        assert checkout.status_code == 200, checkout.text
        invoice_id = checkout.json()["payment_url"].rstrip("/").rsplit("/", 1)[1]
        paid = await http.post(
            f"{live.emulator_url}/_emulator/invoices/{invoice_id}/pay", json={"scenario": "full"}
        )
        assert paid.status_code == 200, paid.text
        idle = await http.post(f"{live.emulator_url}/_emulator/ipn/wait-idle?timeout=20")
        assert idle.status_code == 200, idle.text
        return str(order["order_id"])


async def test_operator_reprocesses_a_webhook_and_sees_the_audit_entry(
    live_system: LiveSystem, browsing: Browsing
) -> None:
    page = browsing.page
    order_id = await _paid_order(live_system)
    username, password = live_system.operator

    await page.goto(f"{live_system.web_url}/admin")
    await page.wait_for_url("**/admin/login**")
    await browsing.shot("login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.locator("#sign-in").click()
    await page.wait_for_url("**/admin/payments")
    await expect(page.locator("#operator-name")).to_have_text(username)
    await browsing.shot("payments")

    # Find that payment: filter by order id, until the admin read model has it as finished.
    await page.get_by_label("Order id").fill(order_id)
    await page.locator("#apply-filters").click()
    payment_row = page.locator("#results tbody tr", has_text=order_id).filter(has_text="finished")
    await until_visible(page, payment_row)
    await expect(page.locator("#result-count")).to_have_text("Showing 1 to 1 of 1")
    await browsing.shot("payment-found")

    await payment_row.get_by_role("link", name="Webhook logs").click()
    await page.wait_for_url("**/admin/webhook-logs?external_id=*")
    finished_log = page.locator("#results tbody tr").filter(has_text="finished")
    await until_visible(page, finished_log)
    await browsing.shot("webhook-logs")
    await finished_log.first.get_by_role("link", name="Details").click()
    await expect(page.locator("#raw-body")).to_contain_text('"payment_status":"finished"')
    await expect(page.locator("#raw-body")).to_contain_text(order_id)
    await browsing.shot("webhook-detail")

    reason = f"browser test replay {uuid.uuid4().hex[:6]}"
    await page.get_by_label("Reason (recorded in the audit log)").fill(reason)
    await page.locator("#reprocess").click()
    flash = page.locator("#flash")
    await expect(flash).to_contain_text("Audit entry #")
    await expect(flash).to_have_attribute("role", "status")  # success, not an alert
    await browsing.shot("reprocessed")

    await page.get_by_role("link", name="Audit log").click()
    audit_row = page.locator("#results tbody tr", has_text=reason)
    await until_visible(page, audit_row)
    await expect(audit_row.first).to_contain_text(username)
    await expect(audit_row.first).to_contain_text("reprocess")
    await browsing.shot("audit")

    await page.locator("#logout").click()
    await page.wait_for_url("**/admin/login")
    await page.goto(f"{live_system.web_url}/admin/audit")
    await page.wait_for_url("**/admin/login?**")
    assert browsing.csp_violations() == []


async def _awaiting_order(live: LiveSystem) -> str:
    """An order with an invoice (a payment waiting for money), made through the APIs."""
    async with httpx.AsyncClient(timeout=30) as http:
        orders = live.url("orders")
        created = await http.post(
            f"{orders}/orders",
            json={"email": "settle@example.com", "items": [{"sku": PRODUCT[0], "quantity": 1}]},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        assert created.status_code == 201, created.text
        order = created.json()
        checkout = await http.post(
            f"{orders}/orders/{order['order_id']}/checkout",
            headers={"X-Order-Token": order["order_token"]},
        )
        assert checkout.status_code == 200, checkout.text
        return str(order["order_id"])


async def test_operator_settles_an_order_that_needs_attention(
    live_system: LiveSystem, browsing: Browsing
) -> None:
    """An attention item published onto the real PAYMENTS stream shows up in the console; the
    operator settles its order with a reason; the page shows the result and the audit log the
    entry. ``payments.settle`` is answered by the stack's real payments worker, which enters
    ``finished`` for the order's payment (source admin)."""
    from decimal import Decimal

    import nats
    from shared.contracts.payments import PaymentAttentionRaised

    page = browsing.page
    order_id = await _awaiting_order(live_system)
    nats_url = f"nats://127.0.0.1:{live_system.stack.ports['nats']}"
    nc = await nats.connect(nats_url)
    try:
        event = PaymentAttentionRaised(
            payment_id=uuid.uuid4(),
            order_id=order_id,
            kind="amount_discrepancy",
            key=f"browser:{uuid.uuid4().hex[:8]}",
            detail="provider says finished but 0.0001 btc is missing",
            amount=Decimal("0.0001"),
            currency="btc",
        )
        await nc.jetstream().publish(
            event.SUBJECT,
            event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": str(event.event_id)},
        )

        username, password = live_system.operator
        await page.goto(f"{live_system.web_url}/admin/needs-attention")
        await page.wait_for_url("**/admin/login**")
        await page.get_by_label("Username").fill(username)
        await page.get_by_label("Password").fill(password)
        await page.locator("#sign-in").click()
        await page.wait_for_url("**/admin/needs-attention")

        item = page.locator(f'#attention-items tr[data-order="{order_id}"]')
        await until_visible(page, item)
        await expect(item).to_contain_text("amount discrepancy")
        await expect(item).to_contain_text("0.0001 btc")
        await expect(item).to_contain_text("open")
        await expect(page.locator("#attention-count")).to_be_visible()
        await browsing.shot("needs-attention")

        forms = page.locator(f'#attention-items tr[data-order="{order_id}"] + tr.row-forms')
        await forms.get_by_text("Act on this item").click()
        await expect(forms.get_by_text("Only settle when you have confirmed")).to_be_visible()
        reason = f"browser test settle {uuid.uuid4().hex[:6]}"
        await forms.get_by_label("Reason for settling (recorded in the audit log)").fill(reason)
        await forms.get_by_label("I confirmed the money arrived").check()
        await browsing.shot("settle-form")
        await forms.get_by_role("button", name="Settle as paid").click()

        await page.wait_for_url("**/admin/needs-attention")
        flash = page.locator("#flash")
        await expect(flash).to_contain_text(f"Order {order_id} settled as paid")
        await expect(flash).to_contain_text("Audit entry #")
        await expect(flash).to_have_attribute("role", "status")
        # resolved before the redirect: the open list no longer has it
        await expect(page.locator(f'#attention-items tr[data-order="{order_id}"]')).to_have_count(0)
        await browsing.shot("settled")

        await page.goto(f"{live_system.web_url}/admin/needs-attention?state=resolved")
        resolved = page.locator(f'#attention-items tr[data-order="{order_id}"]')
        await expect(resolved.first).to_contain_text("resolved")
        await expect(resolved.first).to_contain_text(username)

        await page.get_by_role("link", name="Audit log").click()
        audit_row = page.locator("#results tbody tr", has_text=reason)
        await until_visible(page, audit_row)
        await expect(audit_row.first).to_contain_text(username)
        await expect(audit_row.first).to_contain_text("order.settle")
        await expect(audit_row.first).to_contain_text(order_id)
        await expect(audit_row.first).to_contain_text("ok")
        await browsing.shot("settle-audit")
        assert browsing.csp_violations() == []
    finally:
        await nc.close()
