"""The payment lifecycle as the real provider runs it: child payments, clock, lifetimes, shapes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from nowpayments_emulator.config import EmulatorConfig
from nowpayments_emulator.signing import dumps_js
from nowpayments_emulator.testing import (
    TEST_IPN_SECRET,
    Harness,
    HarnessFactory,
    Received,
    Receiver,
)

# Every test here is a coroutine; explicit so the suite also runs in strict asyncio mode.
pytestmark = pytest.mark.asyncio

SHOP = "https://shop.example"
DAY = 24 * 3600.0


def signature_of(raw: bytes) -> str:
    return hmac.new(TEST_IPN_SECRET.encode("utf-8"), raw, hashlib.sha512).hexdigest()


def body_of(request: Received) -> dict[str, Any]:
    """Raw-bytes HMAC first (the current shape is sent exactly as signed), then parse."""
    assert hmac.compare_digest(request.headers["x-nowpayments-sig"], signature_of(request.body))
    parsed: dict[str, Any] = json.loads(request.body, parse_float=Decimal)
    return parsed


def bodies_for(receiver: Receiver, payment_id: int) -> list[dict[str, Any]]:
    return [b for b in map(body_of, receiver.requests) if b["payment_id"] == payment_id]


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def wait_until(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Await a condition the emulator exposes only through its API (bounded, not a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def paid_payment(
    emu: Harness, receiver: Receiver, scenario: str = "full", **fields: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    invoice = await emu.create_invoice(ipn_callback_url=receiver.url)
    paid = await emu.pay(invoice["id"], scenario=scenario, **fields)
    await emu.idle()
    return invoice, paid


# -- repeated and wrong-asset deposits ------------------------------------------------------


async def test_repeated_deposit_is_a_child_payment_on_the_same_address(
    emu: Harness, receiver: Receiver
) -> None:
    invoice, paid = await paid_payment(emu, receiver, "underpay")
    parent_before = await emu.payment(paid["payment_id"])
    child = await emu.redeposit(paid["payment_id"], "0.0001")
    await emu.idle()
    assert child["kind"] == "repeated_deposit"
    assert child["payment_id"] != paid["payment_id"]
    assert child["parent_payment_id"] == paid["payment_id"]
    assert child["statuses"] == child["notified"] == ["confirming", "partially_paid"]
    ipns = bodies_for(receiver, child["payment_id"])
    assert [b["payment_status"] for b in ipns] == ["confirming", "partially_paid"]
    parent = await emu.payment(paid["payment_id"])
    for body in ipns:
        assert body["parent_payment_id"] == paid["payment_id"]
        assert body["invoice_id"] == int(invoice["id"])
        assert body["purchase_id"] == parent["purchase_id"]
        assert body["order_id"] == "order-1"
        assert body["pay_address"] == parent["pay_address"]
        # Repeated deposits are always in the same asset as the original payment.
        assert body["pay_currency"] == "btc"
        assert body["actually_paid"] == Decimal("0.0001")
        # By default the child quotes the order's amounts (EMULATOR_CHILD_QUOTE=order).
        assert body["pay_amount"] == Decimal("0.001")
        assert body["price_amount"] == Decimal("69.25")
    # The truth carries the link too; the original points nowhere and stays as it was.
    truth = await emu.payment(child["payment_id"])
    assert truth["parent_payment_id"] == paid["payment_id"]
    assert truth["payment_status"] == "partially_paid"
    assert parent["parent_payment_id"] is None
    assert parent == parent_before


async def test_repeated_deposit_status_follows_the_account_setting(
    make_harness: HarnessFactory, receiver: Receiver
) -> None:
    emu = await make_harness(repeated_deposit_status="finished")
    _, paid = await paid_payment(emu, receiver)
    child = await emu.redeposit(paid["payment_id"], "0.0005")
    await emu.idle()
    assert bodies_for(receiver, child["payment_id"])[-1]["payment_status"] == "finished"
    # The request beats the setting.
    other = await emu.redeposit(paid["payment_id"], "0.0005", status="partially_paid")
    await emu.idle()
    assert bodies_for(receiver, other["payment_id"])[-1]["payment_status"] == "partially_paid"


async def test_a_child_can_quote_the_deposit_itself(
    make_harness: HarnessFactory, receiver: Receiver
) -> None:
    emu = await make_harness(child_quote="deposit")
    _, paid = await paid_payment(emu, receiver, "underpay")
    child = await emu.redeposit(paid["payment_id"], "0.0002")
    await emu.idle()
    last = bodies_for(receiver, child["payment_id"])[-1]
    assert last["pay_amount"] == last["actually_paid"] == Decimal("0.0002")
    assert last["price_amount"] == Decimal("13.85")  # 0.0002 btc at the current rate
    # The request beats the setting.
    other = await emu.redeposit(paid["payment_id"], "0.0002", quote="order")
    await emu.idle()
    assert bodies_for(receiver, other["payment_id"])[-1]["pay_amount"] == Decimal("0.001")


async def test_wrong_asset_deposit_waits_for_manual_resolution_by_default(
    emu: Harness, receiver: Receiver
) -> None:
    _, paid = await paid_payment(emu, receiver, pay_currency="eth")
    child = await emu.redeposit(paid["payment_id"], "25", pay_currency="usdterc20")
    await emu.idle()
    assert child["kind"] == "wrong_asset"
    ipns = bodies_for(receiver, child["payment_id"])
    assert [b["payment_status"] for b in ipns] == ["confirming"]
    assert ipns[0]["pay_currency"] == "usdterc20"
    assert ipns[0]["parent_payment_id"] == paid["payment_id"]
    assert ipns[0]["pay_address"] == (await emu.payment(paid["payment_id"]))["pay_address"]
    # The merchant resolves it by hand in the dashboard: a pushed status.
    await emu.push_status(child["payment_id"], "finished")
    await emu.idle()
    assert bodies_for(receiver, child["payment_id"])[-1]["payment_status"] == "finished"


async def test_wrong_asset_auto_processing_finishes_it(
    make_harness: HarnessFactory, receiver: Receiver
) -> None:
    emu = await make_harness(wrong_asset_auto_processing=True)
    _, paid = await paid_payment(emu, receiver, pay_currency="eth")
    child = await emu.redeposit(paid["payment_id"], "25", pay_currency="usdterc20")
    await emu.idle()
    assert [b["payment_status"] for b in bodies_for(receiver, child["payment_id"])] == [
        "confirming",
        "finished",
    ]


async def test_redeposit_rules(emu: Harness, receiver: Receiver) -> None:
    invoice = await emu.create_invoice(ipn_callback_url=receiver.url)
    waiting = await emu.pay(invoice["id"], scenario="abandon")
    await emu.idle()
    refused = await emu.client.post(
        f"/_emulator/payments/{waiting['payment_id']}/redeposit", json={"amount": "0.1"}
    )
    assert refused.status_code == 409
    _, paid = await paid_payment(emu, receiver)
    for body in ({"amount": "0.1", "pay_currency": "nope"}, {"amount": "0"}, {}):
        answer = await emu.client.post(
            f"/_emulator/payments/{paid['payment_id']}/redeposit", json=body
        )
        assert answer.status_code == 422, body
    first = await emu.redeposit(paid["payment_id"], "0.0001", send_ipn=False)
    # A deposit on top of a re-deposit still points at the original payment.
    second = await emu.redeposit(first["payment_id"], "0.0001")
    await emu.idle()
    assert second["parent_payment_id"] == paid["payment_id"]
    assert bodies_for(receiver, first["payment_id"]) == []
    assert (await emu.payment(first["payment_id"]))["payment_status"] == "partially_paid"
    dropped = await emu.log(payment_id=first["payment_id"])
    assert {entry["outcome"] for entry in dropped} == {"dropped"}


# -- several payments on one invoice ---------------------------------------------------------


async def test_paying_again_while_waiting_opens_a_second_payment(
    emu: Harness, receiver: Receiver
) -> None:
    invoice = await emu.create_invoice(ipn_callback_url=receiver.url)
    first = await emu.pay(invoice["id"], scenario="abandon", pay_currency="btc")
    second = await emu.pay(invoice["id"], scenario="full", pay_currency="eth")
    await emu.idle()
    assert first["payment_id"] != second["payment_id"]
    assert (await emu.payment(first["payment_id"]))["payment_status"] == "waiting"
    assert (await emu.payment(second["payment_id"]))["payment_status"] == "finished"
    listing = await emu.client.get(f"/_emulator/invoices/{invoice['id']}")
    assert listing.json()["payment_ids"] == [first["payment_id"], second["payment_id"]]
    provider_list = await emu.list_payments(invoiceId=invoice["id"])
    assert {p["payment_id"] for p in provider_list["data"]} == {
        first["payment_id"],
        second["payment_id"],
    }
    assert {p["pay_currency"] for p in provider_list["data"]} == {"btc", "eth"}


async def test_hosted_page_lets_the_customer_choose_another_coin(
    emu: Harness, receiver: Receiver
) -> None:
    invoice = await emu.create_invoice(ipn_callback_url=receiver.url, success_url=f"{SHOP}/ok")
    iid = invoice["id"]
    form = await emu.client.get(f"/invoice/{iid}")
    assert 'id="scenario-abandon"' in form.text
    left = await emu.client.post(
        f"/invoice/{iid}", data={"pay_currency": "btc", "scenario": "abandon"}
    )
    assert left.status_code == 303
    assert left.headers["location"] == f"/invoice/{iid}/status"
    await emu.idle()
    status = await emu.client.get(f"/invoice/{iid}/status")
    assert '<dd id="payment-status">waiting</dd>' in status.text
    assert f'<a id="choose-another-coin" href="/invoice/{iid}?another_coin=1">' in status.text
    # Without asking for another coin, the invoice shows the payment in progress.
    assert (await emu.client.get(f"/invoice/{iid}")).status_code == 303
    again = await emu.client.get(f"/invoice/{iid}", params={"another_coin": "1"})
    assert again.status_code == 200
    assert 'id="pay-form"' in again.text
    paid = await emu.client.post(
        f"/invoice/{iid}", data={"pay_currency": "eth", "scenario": "full"}
    )
    assert paid.headers["location"] == f"{SHOP}/ok"
    await emu.idle()
    payments = (await emu.client.get("/_emulator/payments", params={"invoice_id": iid})).json()
    assert [(p["pay_currency"], p["payment_status"]) for p in payments["payments"]] == [
        ("btc", "waiting"),
        ("eth", "finished"),
    ]
    # Once paid, there is no way back to another coin.
    final = await emu.client.get(f"/invoice/{iid}/status")
    assert "choose-another-coin" not in final.text


# -- scenarios ------------------------------------------------------------------------------


async def test_jump_sends_only_waiting_and_finished(emu: Harness, receiver: Receiver) -> None:
    _, paid = await paid_payment(emu, receiver, "jump")
    assert paid["notified"] == ["waiting", "finished"]
    assert [b["payment_status"] for b in bodies_for(receiver, paid["payment_id"])] == [
        "waiting",
        "finished",
    ]
    # The provider still walked through the middle: GET and the history show where it is.
    state = await emu.control_payment(paid["payment_id"])
    assert state["history"] == ["waiting", "confirming", "confirmed", "sending", "finished"]


async def test_finished_with_nothing_reported_paid(emu: Harness, receiver: Receiver) -> None:
    _, paid = await paid_payment(emu, receiver, "finished_zero_paid")
    last = bodies_for(receiver, paid["payment_id"])[-1]
    assert last["payment_status"] == "finished"
    assert last["actually_paid"] == 0
    assert last["outcome_amount"] > 0
    assert last["actually_paid_at_fiat"] == 0


async def test_refund_comes_after_a_full_payment(emu: Harness, receiver: Receiver) -> None:
    _, paid = await paid_payment(emu, receiver, "refund")
    seen = [b["payment_status"] for b in bodies_for(receiver, paid["payment_id"])]
    assert seen[-2:] == ["finished", "refunded"]
    assert (await emu.payment(paid["payment_id"]))["payment_status"] == "refunded"


async def test_cancelled_by_the_merchant(emu: Harness, receiver: Receiver) -> None:
    invoice = await emu.create_invoice(ipn_callback_url=receiver.url, cancel_url=f"{SHOP}/no")
    answer = await emu.client.post(
        f"/invoice/{invoice['id']}", data={"pay_currency": "ltc", "scenario": "cancelled"}
    )
    assert answer.headers["location"] == f"{SHOP}/no"
    await emu.idle()
    assert [json.loads(r.body)["payment_status"] for r in receiver.requests] == [
        "waiting",
        "cancelled",
    ]


async def test_unknown_status_needs_the_flag_and_a_lowercase_word(
    emu: Harness, receiver: Receiver
) -> None:
    _, paid = await paid_payment(emu, receiver, "abandon")
    path = f"/_emulator/payments/{paid['payment_id']}/status"
    refused = await emu.client.post(path, json={"payment_status": "status_from_the_future"})
    assert refused.status_code == 422
    for bad in ("Status From The Future", "x" * 41, "drop table"):
        answer = await emu.client.post(
            path, json={"payment_status": bad, "allow_unknown_status": True}
        )
        assert answer.status_code == 422, bad
    pushed = await emu.push_status(
        paid["payment_id"], "status_from_the_future", allow_unknown_status=True
    )
    await emu.idle()
    assert pushed["payment_status"] == "status_from_the_future"
    assert bodies_for(receiver, paid["payment_id"])[-1]["payment_status"] == (
        "status_from_the_future"
    )
    logged = await emu.log(payment_status="status_from_the_future")
    assert len(logged) == 1


# -- clock and lifetimes --------------------------------------------------------------------


async def test_clock_moves_timestamps_and_resets(emu: Harness) -> None:
    start = await emu.clock()
    assert start["offset_seconds"] == 0
    moved = await emu.advance_clock(3 * 3600)
    assert moved["offset_seconds"] == 3 * 3600
    assert parse_iso(moved["now"]) - parse_iso(start["now"]) >= timedelta(hours=3)
    invoice = await emu.create_invoice()
    assert parse_iso(invoice["created_at"]) >= parse_iso(start["now"]) + timedelta(hours=3)
    assert (await emu.client.post("/_emulator/reset")).status_code == 200
    assert (await emu.clock())["offset_seconds"] == 0
    refused = await emu.client.post("/_emulator/clock", json={"advance_seconds": -1})
    assert refused.status_code == 422


async def test_floating_rate_payment_waits_seven_days_then_expires(
    emu: Harness, receiver: Receiver
) -> None:
    invoice = await emu.create_invoice(ipn_callback_url=receiver.url)
    paid = await emu.pay(invoice["id"], scenario="abandon")
    await emu.idle()
    truth = await emu.payment(paid["payment_id"])
    assert truth["is_fixed_rate"] is False
    assert truth["is_fee_paid_by_user"] is False
    lifetime = parse_iso(truth["valid_until"]) - parse_iso(truth["created_at"])
    assert lifetime == timedelta(days=7)
    assert truth["expiration_estimate_date"] == truth["valid_until"]
    assert (await emu.advance_clock(6 * DAY))["expired_payment_ids"] == []
    assert (await emu.payment(paid["payment_id"]))["payment_status"] == "waiting"
    moved = await emu.advance_clock(DAY)
    assert moved["expired_payment_ids"] == [paid["payment_id"]]
    await emu.idle()
    assert (await emu.payment(paid["payment_id"]))["payment_status"] == "expired"
    assert [b["payment_status"] for b in bodies_for(receiver, paid["payment_id"])] == [
        "waiting",
        "expired",
    ]


async def test_fixed_rate_and_fee_paid_by_user_expire_after_twenty_minutes(
    emu: Harness, receiver: Receiver
) -> None:
    fixed = await emu.create_invoice(ipn_callback_url=receiver.url, is_fixed_rate=True)
    a = await emu.pay(fixed["id"], scenario="abandon")
    response = await emu.client.post(
        "/v1/payment",
        json={
            "price_amount": 20,
            "price_currency": "usd",
            "pay_currency": "trx",
            "ipn_callback_url": receiver.url,
            "is_fee_paid_by_user": True,
        },
        headers=emu.key,
    )
    assert response.status_code == 201
    created = response.json()
    # "The fee paid by user payment can be only fixed rate."
    assert created["is_fixed_rate"] is True
    assert created["is_fee_paid_by_user"] is True
    lifetime = parse_iso(created["valid_until"]) - parse_iso(created["created_at"])
    assert lifetime == timedelta(minutes=20)
    b = int(created["payment_id"])
    await emu.idle()
    assert (await emu.advance_clock(19 * 60))["expired_payment_ids"] == []
    expired = (await emu.advance_clock(61))["expired_payment_ids"]
    assert sorted(expired) == sorted([a["payment_id"], b])
    await emu.idle()
    assert bodies_for(receiver, b)[-1]["payment_status"] == "expired"
    assert (await emu.payment(a["payment_id"]))["is_fixed_rate"] is True


async def test_a_floating_invoice_can_be_paid_two_hours_after_checkout(
    emu: Harness, receiver: Receiver
) -> None:
    invoice = await emu.create_invoice(ipn_callback_url=receiver.url)
    await emu.advance_clock(2 * 3600)
    assert (await emu.client.get(f"/invoice/{invoice['id']}")).status_code == 200
    paid = await emu.pay(invoice["id"], scenario="full")
    await emu.idle()
    assert (await emu.payment(paid["payment_id"]))["payment_status"] == "finished"
    # The invoice's own page closes with the deposit window (7 days), documented in the README.
    await emu.advance_clock(7 * DAY)
    state = (await emu.client.get(f"/_emulator/invoices/{invoice['id']}")).json()
    assert state["status"] == "expired"


# -- IPN shapes, money fields, retries ------------------------------------------------------


async def test_legacy_shape_is_signed_over_the_sorted_form_only(
    emu: Harness, receiver: Receiver
) -> None:
    _, paid = await paid_payment(emu, receiver, "jump", ipn_shape="legacy")
    assert len(receiver.requests) == 2
    for request in receiver.requests:
        raw = request.body
        # A merchant checking the raw bytes fails: the bytes are not the signed text.
        assert request.headers["x-nowpayments-sig"] != signature_of(raw)
        pairs: list[tuple[str, Any]] = json.loads(
            raw, parse_float=Decimal, object_pairs_hook=lambda p: p
        )
        keys = [key for key, _ in pairs]
        assert keys != sorted(keys)
        assert keys[:4] == ["payment_id", "parent_payment_id", "invoice_id", "payment_status"]
        body = dict(pairs)
        assert "fee" not in body
        assert isinstance(body["updated_at"], str)
        parse_iso(body["updated_at"])
        # Re-serialising canonically (sorted keys, JS number text) finds the signature.
        canonical = dumps_js(body, sort_keys=True).encode("utf-8")
        assert request.headers["x-nowpayments-sig"] == signature_of(canonical)
        assert body["payment_id"] == paid["payment_id"]


async def test_outcome_currency_and_fees_like_a_real_account(
    make_harness: HarnessFactory, receiver: Receiver
) -> None:
    emu = await make_harness(
        outcome_currency="usdttrc20",
        deposit_fee_rate=Decimal("0.01"),
        withdrawal_fee_rate=Decimal("0.002"),
    )
    _, paid = await paid_payment(emu, receiver)
    last = bodies_for(receiver, paid["payment_id"])[-1]
    assert last["pay_currency"] == "btc"
    assert last["outcome_currency"] == last["fee"]["currency"] == "usdttrc20"
    fee = last["fee"]
    assert fee["depositFee"] == Decimal("0.6925")
    assert fee["withdrawalFee"] == Decimal("0.1385")
    assert fee["serviceFee"] == Decimal("0.34625")
    # 0.001 btc = 69.25 usdt, less every fee.
    assert last["outcome_amount"] == Decimal("69.25") - sum(
        (fee["depositFee"], fee["withdrawalFee"], fee["serviceFee"]), Decimal(0)
    )
    truth = await emu.payment(paid["payment_id"])
    assert truth["outcome_currency"] == "usdttrc20"


async def test_actually_paid_at_fiat_can_carry_the_value(
    make_harness: HarnessFactory, receiver: Receiver
) -> None:
    emu = await make_harness(actually_paid_at_fiat="value")
    _, paid = await paid_payment(emu, receiver)
    assert bodies_for(receiver, paid["payment_id"])[-1]["actually_paid_at_fiat"] == Decimal("69.25")


async def test_retry_schedule_in_minutes_runs_on_the_clock(
    make_harness: HarnessFactory, receiver: Receiver
) -> None:
    emu = await make_harness(ipn_retry_schedule=(60.0, 300.0))
    receiver.answer(500, 500)
    invoice = await emu.create_invoice(ipn_callback_url=receiver.url)
    paid = await emu.pay(invoice["id"], statuses=["finished"])

    async def attempts(count: int) -> bool:
        return len(await emu.log(payment_id=paid["payment_id"])) >= count

    await wait_until(lambda: attempts(1))
    first = (await emu.log())[0]
    assert first["outcome"] == "rejected"
    assert first["will_retry"] is True
    status = (await emu.client.get("/_emulator/ipn/status")).json()
    assert status["idle"] is False
    assert len(receiver.requests) == 1
    await emu.advance_clock(60)
    await wait_until(lambda: attempts(2))
    await emu.advance_clock(300)
    await emu.idle()
    log = await emu.log(payment_id=paid["payment_id"])
    assert [(e["attempt"], e["outcome"]) for e in log] == [
        (1, "rejected"),
        (2, "rejected"),
        (3, "delivered"),
    ]
    assert log[-1]["will_retry"] is False


async def test_retry_schedule_as_a_behaviour_patch(emu: Harness, receiver: Receiver) -> None:
    receiver.answer(503)
    await emu.set_behaviour(retry_schedule=[900])
    invoice = await emu.create_invoice(ipn_callback_url=receiver.url)
    paid = await emu.pay(invoice["id"], statuses=["finished"])

    async def attempts(count: int) -> bool:
        return len(await emu.log(payment_id=paid["payment_id"])) >= count

    await wait_until(lambda: attempts(1))
    await emu.advance_clock(900)
    await emu.idle()
    assert [e["outcome"] for e in await emu.log(payment_id=paid["payment_id"])] == [
        "rejected",
        "delivered",
    ]


async def test_lifecycle_settings_from_the_environment() -> None:
    config = EmulatorConfig.from_env(
        {
            "EMULATOR_REPEATED_DEPOSIT_STATUS": "finished",
            "EMULATOR_WRONG_ASSET_AUTO_PROCESSING": "true",
            "EMULATOR_OUTCOME_CURRENCY": "USDTTRC20",
            "EMULATOR_DEPOSIT_FEE_RATE": "0.01",
            "EMULATOR_WITHDRAWAL_FEE_RATE": "0.002",
            "EMULATOR_ACTUALLY_PAID_AT_FIAT": "value",
            "EMULATOR_IPN_RETRY_SCHEDULE": "60, 300,900",
            "EMULATOR_CHILD_QUOTE": "deposit",
        }
    )
    assert config.repeated_deposit_status == "finished"
    assert config.wrong_asset_auto_processing is True
    assert config.outcome_currency == "usdttrc20"
    assert config.deposit_fee_rate == Decimal("0.01")
    assert config.withdrawal_fee_rate == Decimal("0.002")
    assert config.actually_paid_at_fiat == "value"
    assert config.ipn_retry_schedule == (60.0, 300.0, 900.0)
    assert config.child_quote == "deposit"
    defaults = EmulatorConfig.from_env({})
    assert defaults.repeated_deposit_status == "partially_paid"
    assert defaults.wrong_asset_auto_processing is False
    assert defaults.outcome_currency is None
    assert defaults.actually_paid_at_fiat == "zero"
    assert defaults.ipn_retry_schedule == ()
    assert defaults.child_quote == "order"
    for name, value in (
        ("EMULATOR_REPEATED_DEPOSIT_STATUS", "waiting"),
        ("EMULATOR_IPN_RETRY_SCHEDULE", "60,soon"),
        ("EMULATOR_IPN_RETRY_SCHEDULE", "-5"),
        ("EMULATOR_ACTUALLY_PAID_AT_FIAT", "sometimes"),
        ("EMULATOR_CHILD_QUOTE", "both"),
    ):
        with pytest.raises(ValueError, match=name):
            EmulatorConfig.from_env({name: value})
