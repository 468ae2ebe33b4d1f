"""The hosted invoice page: stable form controls, redirects per outcome, IPNs behind them."""

from __future__ import annotations

import json
import re

import pytest
from nowpayments_emulator.testing import Harness, HarnessFactory, Receiver

# Every test here is a coroutine; explicit so the suite also runs in strict asyncio mode.
pytestmark = pytest.mark.asyncio

SHOP = "https://shop.example"


async def shop_invoice(emu: Harness, receiver: Receiver, **fields: object) -> str:
    invoice = await emu.create_invoice(
        ipn_callback_url=receiver.url,
        success_url=f"{SHOP}/success",
        cancel_url=f"{SHOP}/cancel",
        order_description="Game <key> & more",
        **fields,
    )
    invoice_id: str = invoice["id"]
    return invoice_id


async def test_page_has_stable_accessible_controls(emu: Harness, receiver: Receiver) -> None:
    invoice_id = await shop_invoice(emu, receiver)
    response = await emu.client.get(f"/invoice/{invoice_id}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert '<html lang="en">' in page
    assert '<select id="coin" name="pay_currency"' in page
    assert '<label for="coin">' in page
    assert re.search(r'<option value="btc" selected>Bitcoin \(BTC\) — 0\.001</option>', page)
    for scenario in ("full", "underpay", "overpay", "expire", "fail"):
        assert f'id="scenario-{scenario}" name="scenario" value="{scenario}"' in page
        assert f'<label for="scenario-{scenario}">' in page
    assert '<button type="submit" id="pay">Pay</button>' in page
    assert f'action="/invoice/{invoice_id}"' in page
    # Merchant text is escaped, never injected.
    assert "Game &lt;key&gt; &amp; more" in page


async def test_invoice_url_from_the_api_serves_the_page(emu: Harness) -> None:
    invoice = await emu.create_invoice()
    path = invoice["invoice_url"].removeprefix(str(emu.client.base_url).rstrip("/"))
    assert (await emu.client.get(path)).status_code == 200
    legacy = await emu.client.get("/payment/", params={"iid": invoice["id"]})
    assert legacy.status_code == 307
    assert legacy.headers["location"] == f"/invoice/{invoice['id']}"


@pytest.mark.parametrize(
    ("scenario", "coin", "location", "final"),
    [
        ("full", "btc", f"{SHOP}/success", "finished"),
        ("overpay", "eth", f"{SHOP}/success", "finished"),
        ("underpay", "trx", f"{SHOP}/success", "partially_paid"),
        ("expire", "ltc", f"{SHOP}/cancel", "expired"),
        ("fail", "usdttrc20", f"{SHOP}/cancel", "failed"),
    ],
)
async def test_paying_redirects_and_plays_the_ipns(
    emu: Harness, receiver: Receiver, scenario: str, coin: str, location: str, final: str
) -> None:
    invoice_id = await shop_invoice(emu, receiver)
    response = await emu.client.post(
        f"/invoice/{invoice_id}", data={"pay_currency": coin, "scenario": scenario}
    )
    assert response.status_code == 303
    assert response.headers["location"] == location
    await emu.idle()
    bodies = [json.loads(r.body) for r in receiver.requests]
    assert bodies[-1]["payment_status"] == final
    assert {b["pay_currency"] for b in bodies} == {coin}
    assert {b["invoice_id"] for b in bodies} == {int(invoice_id)}


async def test_partially_paid_prefers_its_own_url(emu: Harness, receiver: Receiver) -> None:
    invoice_id = await shop_invoice(emu, receiver, partially_paid_url=f"{SHOP}/partial")
    response = await emu.client.post(
        f"/invoice/{invoice_id}", data={"pay_currency": "btc", "scenario": "underpay"}
    )
    assert response.headers["location"] == f"{SHOP}/partial"
    await emu.idle()


async def test_without_return_urls_the_status_page_follows_the_payment(emu: Harness) -> None:
    invoice = await emu.create_invoice()
    response = await emu.client.post(
        f"/invoice/{invoice['id']}", data={"pay_currency": "btc", "scenario": "full"}
    )
    assert response.headers["location"] == f"/invoice/{invoice['id']}/status"
    await emu.idle()
    page = (await emu.client.get(response.headers["location"])).text
    assert '<dd id="payment-status">finished</dd>' in page
    assert 'http-equiv="refresh"' not in page
    # Coming back to a paid invoice shows its status instead of a second form.
    again = await emu.client.get(f"/invoice/{invoice['id']}")
    assert again.status_code == 303
    assert again.headers["location"] == f"/invoice/{invoice['id']}/status"


async def test_status_page_refreshes_while_processing(emu: Harness) -> None:
    invoice = await emu.create_invoice()
    await emu.client.put(f"/_emulator/invoices/{invoice['id']}/behaviour", json={"step_delay": 5})
    await emu.client.post(
        f"/invoice/{invoice['id']}", data={"pay_currency": "btc", "scenario": "full"}
    )
    page = (await emu.client.get(f"/invoice/{invoice['id']}/status")).text
    assert 'http-equiv="refresh"' in page
    assert "Payment processing" in page
    await emu.client.post("/_emulator/reset")


async def test_invoice_behaviour_applies_to_browser_payments(
    emu: Harness, receiver: Receiver
) -> None:
    invoice_id = await shop_invoice(emu, receiver)
    await emu.client.put(
        f"/_emulator/invoices/{invoice_id}/behaviour", json={"duplicates": 2, "drop_final": True}
    )
    await emu.client.post(
        f"/invoice/{invoice_id}", data={"pay_currency": "btc", "scenario": "expire"}
    )
    await emu.idle()
    assert [json.loads(r.body)["payment_status"] for r in receiver.requests] == ["waiting"] * 2


async def test_fixed_coin_invoice_offers_only_that_coin(emu: Harness, receiver: Receiver) -> None:
    invoice_id = await shop_invoice(emu, receiver, pay_currency="trx")
    page = (await emu.client.get(f"/invoice/{invoice_id}")).text
    assert re.findall(r'<option value="(\w+)"', page) == ["trx"]
    refused = await emu.client.post(
        f"/invoice/{invoice_id}", data={"pay_currency": "btc", "scenario": "full"}
    )
    assert refused.status_code == 400
    assert 'role="alert"' in refused.text


async def test_bad_form_input_re_renders_with_an_error(emu: Harness) -> None:
    invoice = await emu.create_invoice()
    response = await emu.client.post(
        f"/invoice/{invoice['id']}", data={"pay_currency": "btc", "scenario": "steal"}
    )
    assert response.status_code == 400
    assert 'id="form-error"' in response.text
    assert (await emu.client.get("/_emulator/payments")).json() == {"payments": []}


async def test_expired_invoice_shows_no_form(
    make_harness: HarnessFactory, receiver: Receiver
) -> None:

    emu = await make_harness(invoice_lifetime=0.0)
    invoice_id = await shop_invoice(emu, receiver)
    page = await emu.client.get(f"/invoice/{invoice_id}")
    assert page.status_code == 410
    assert 'id="pay"' not in page.text
    assert f'href="{SHOP}/cancel"' in page.text
    posted = await emu.client.post(f"/invoice/{invoice_id}", data={"scenario": "full"})
    assert posted.status_code == 410


async def test_unknown_invoice_is_a_404_page(emu: Harness) -> None:
    for path in ("/invoice/123", "/invoice/abc", "/payment/?iid=x"):
        assert (await emu.client.get(path)).status_code == 404
