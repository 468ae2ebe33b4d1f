"""IPN playback over real HTTP: bodies, signatures, scenarios and every kind of misbehaviour."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from decimal import Decimal
from typing import Any

import pytest
from nowpayments_emulator.config import EmulatorConfig
from nowpayments_emulator.delivery import Ipn, IpnDispatcher
from nowpayments_emulator.testing import TEST_IPN_SECRET, Harness, Received, Receiver

# Every test here is a coroutine; explicit so the suite also runs in strict asyncio mode.
pytestmark = pytest.mark.asyncio

# DESIGN.md §5 plus the rest of what the provider posts.
IPN_FIELDS = {
    "payment_id",
    "invoice_id",
    "parent_payment_id",
    "payment_status",
    "pay_address",
    "payin_extra_id",
    "price_amount",
    "price_currency",
    "pay_amount",
    "actually_paid",
    "actually_paid_at_fiat",
    "pay_currency",
    "order_id",
    "order_description",
    "purchase_id",
    "outcome_amount",
    "outcome_currency",
    "fee",
    "payment_extra_ids",
    "updated_at",
}
FEE_FIELDS = {"currency", "depositFee", "serviceFee", "withdrawalFee"}


def verify(request: Received) -> dict[str, Any]:
    """What a merchant must do: HMAC over the raw bytes first, parse only afterwards."""
    expected = hmac.new(TEST_IPN_SECRET.encode("utf-8"), request.body, hashlib.sha512).hexdigest()
    assert hmac.compare_digest(request.headers["x-nowpayments-sig"], expected)
    body: dict[str, Any] = json.loads(request.body, parse_float=Decimal)
    return body


def assert_sorted_everywhere(raw: bytes) -> None:
    def check(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        assert keys == sorted(keys), keys
        return dict(pairs)

    json.loads(raw, object_pairs_hook=check)


def statuses(requests: list[Received]) -> list[str]:
    return [json.loads(r.body)["payment_status"] for r in requests]


async def play(
    emu: Harness, receiver: Receiver, scenario: str, **fields: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    invoice = await emu.create_invoice(
        ipn_callback_url=receiver.url, order_description="Ключ / key — 🎮"
    )
    paid = await emu.pay(invoice["id"], scenario=scenario, **fields)
    await emu.idle()
    return invoice, paid


async def test_full_payment_delivers_signed_sorted_bodies_in_order(
    emu: Harness, receiver: Receiver
) -> None:
    invoice, paid = await play(emu, receiver, "full")
    requests = receiver.requests
    assert statuses(requests) == ["waiting", "confirming", "confirmed", "sending", "finished"]
    updated = []
    for request in requests:
        assert request.path == "/ipn"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"].startswith("NOWPayments")
        body = verify(request)
        assert set(body) == IPN_FIELDS
        assert set(body["fee"]) == FEE_FIELDS
        assert_sorted_everywhere(request.body)
        # Compact, unescaped unicode and slash: the provider's JSON.stringify form.
        assert b'": ' not in request.body
        assert b'", "' not in request.body
        assert "Ключ / key — 🎮".encode() in request.body
        assert body["payment_id"] == paid["payment_id"] > 2**32
        assert body["invoice_id"] == int(invoice["id"])
        assert body["parent_payment_id"] is None
        assert body["order_id"] == "order-1"
        assert body["price_amount"] == Decimal("69.25")
        assert body["pay_amount"] == Decimal("0.001")
        assert body["pay_currency"] == body["outcome_currency"] == body["fee"]["currency"] == "btc"
        updated.append(body["updated_at"])
    assert updated == sorted(updated)
    assert len(set(updated)) == len(updated)
    first, last = verify(requests[0]), verify(requests[-1])
    assert first["actually_paid"] == 0
    assert last["actually_paid"] == last["pay_amount"]
    # The real provider usually sends 0 here even when paid (EMULATOR_ACTUALLY_PAID_AT_FIAT).
    assert last["actually_paid_at_fiat"] == 0
    assert last["outcome_amount"] + last["fee"]["serviceFee"] == last["actually_paid"]


async def test_small_amounts_keep_their_javascript_text(emu: Harness, receiver: Receiver) -> None:
    invoice = await emu.create_invoice(price_amount=1, ipn_callback_url=receiver.url)
    await emu.pay(invoice["id"], scenario="full")
    await emu.idle()
    raw = receiver.requests[-1].body
    assert b'"pay_amount":0.00001444,' in raw
    # json.dumps would write 1.444e-05: re-serialising cannot reproduce the signed bytes.
    reserialised = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    assert reserialised != raw


@pytest.mark.parametrize(
    ("scenario", "expected", "paid_vs_due"),
    [
        ("underpay", ["waiting", "confirming", "partially_paid"], -1),
        ("overpay", ["waiting", "confirming", "confirmed", "sending", "finished"], 1),
        ("expire", ["waiting", "expired"], None),
        ("fail", ["waiting", "confirming", "failed"], 0),
    ],
)
async def test_scenarios_play_the_real_status_sequences(
    emu: Harness, receiver: Receiver, scenario: str, expected: list[str], paid_vs_due: int | None
) -> None:
    _, paid = await play(emu, receiver, scenario)
    assert paid["statuses"] == expected
    assert statuses(receiver.requests) == expected
    last = verify(receiver.requests[-1])
    if paid_vs_due is None:
        assert last["actually_paid"] == 0
    else:
        difference = last["actually_paid"] - last["pay_amount"]
        assert (difference > 0) - (difference < 0) == paid_vs_due
    payment = await emu.payment(paid["payment_id"])
    assert payment["payment_status"] == expected[-1]


async def test_amount_override_and_custom_status_sequence(emu: Harness, receiver: Receiver) -> None:
    _, paid = await play(
        emu, receiver, "full", actually_paid="0.0004", statuses=["waiting", "partially_paid"]
    )
    assert statuses(receiver.requests) == ["waiting", "partially_paid"]
    assert verify(receiver.requests[-1])["actually_paid"] == Decimal("0.0004")
    assert (await emu.payment(paid["payment_id"]))["actually_paid"] == 0.0004


async def test_duplicates_send_identical_bytes_n_times(emu: Harness, receiver: Receiver) -> None:
    await play(emu, receiver, "expire", duplicates=3)
    assert statuses(receiver.requests) == ["waiting"] * 3 + ["expired"] * 3
    assert len({r.body for r in receiver.requests[:3]}) == 1
    assert len({r.headers["x-nowpayments-sig"] for r in receiver.requests[3:]}) == 1


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("reverse", ["finished", "sending", "confirmed", "confirming", "waiting"]),
        ("final_first", ["finished", "waiting", "confirming", "confirmed", "sending"]),
    ],
)
async def test_out_of_order_delivery(
    emu: Harness, receiver: Receiver, order: str, expected: list[str]
) -> None:
    _, paid = await play(emu, receiver, "full", order=order)
    assert statuses(receiver.requests) == expected
    for request in receiver.requests:
        verify(request)
    assert (await emu.payment(paid["payment_id"]))["payment_status"] == "finished"


async def test_shuffle_changes_the_order_but_not_the_set(emu: Harness, receiver: Receiver) -> None:
    await play(emu, receiver, "full", order="shuffle")
    received = statuses(receiver.requests)
    in_order = ["waiting", "confirming", "confirmed", "sending", "finished"]
    assert received != in_order
    assert sorted(received) == sorted(in_order)


async def test_dropped_final_ipn_is_still_visible_through_the_api(
    emu: Harness, receiver: Receiver
) -> None:
    _, paid = await play(emu, receiver, "full", drop_final=True)
    assert statuses(receiver.requests) == ["waiting", "confirming", "confirmed", "sending"]
    payment = await emu.payment(paid["payment_id"])
    assert payment["payment_status"] == "finished"
    dropped = await emu.log(payment_id=paid["payment_id"], payment_status="finished")
    assert [entry["outcome"] for entry in dropped] == ["dropped"]


async def test_drop_statuses(emu: Harness, receiver: Receiver) -> None:
    await play(emu, receiver, "full", drop_statuses=["confirming", "confirmed"])
    assert statuses(receiver.requests) == ["waiting", "sending", "finished"]


async def test_retry_after_non_2xx_until_accepted(emu: Harness, receiver: Receiver) -> None:
    invoice = await emu.create_invoice(ipn_callback_url=receiver.url)
    paid = await emu.pay(invoice["id"], scenario="expire", drop_statuses=["waiting"])
    await emu.idle()
    receiver.requests.clear()
    receiver.answer(500, 404)
    response = await emu.client.post(
        f"/_emulator/payments/{paid['payment_id']}/status",
        json={"payment_status": "finished", "retries": 3, "retry_interval": 0.01},
    )
    assert response.json()["payment_status"] == "finished"
    await emu.idle()
    assert len(receiver.requests) == 3
    assert len({r.body for r in receiver.requests}) == 1
    attempts = await emu.log(payment_id=paid["payment_id"], payment_status="finished")
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in attempts] == [
        (1, 500, "rejected"),
        (2, 404, "rejected"),
        (3, 200, "delivered"),
    ]
    assert [a["will_retry"] for a in attempts] == [True, True, False]


async def test_retry_after_a_callback_that_answers_too_slowly(
    emu: Harness, receiver: Receiver
) -> None:
    invoice = await emu.create_invoice(ipn_callback_url=receiver.url)
    # The timeout leaves a loaded machine room for the retry's own round trip (a 0.1 s one
    # timed out twice on a busy CI host); the stall is well past it.
    receiver.answer((200, 3.0))
    paid = await emu.pay(invoice["id"], scenario="expire", callback_timeout=1.0, retries=1)
    await emu.idle()
    attempts = await emu.log(payment_id=paid["payment_id"], payment_status="waiting")
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "timeout"), (2, "delivered")]
    assert attempts[0]["duration_ms"] >= 1000


async def test_retries_give_up_after_the_configured_count(emu: Harness, receiver: Receiver) -> None:
    receiver.default_status = 503
    invoice = await emu.create_invoice(ipn_callback_url=receiver.url)
    paid = await emu.pay(invoice["id"], scenario="expire", drop_statuses=["waiting"], retries=2)
    await emu.idle()
    attempts = await emu.log(payment_id=paid["payment_id"], payment_status="expired")
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert attempts[-1]["will_retry"] is False
    assert len(receiver.requests) == 3


async def test_unreachable_callback_is_logged_as_an_error(emu: Harness) -> None:
    invoice = await emu.create_invoice(ipn_callback_url="http://127.0.0.1:9/ipn")
    paid = await emu.pay(invoice["id"], scenario="expire", retries=0)
    await emu.idle()
    attempts = await emu.log(payment_id=paid["payment_id"])
    assert {a["outcome"] for a in attempts} == {"error"}
    assert all(a["status_code"] is None for a in attempts)


async def test_no_callback_url_means_nothing_is_sent(emu: Harness) -> None:
    invoice = await emu.create_invoice()
    paid = await emu.pay(invoice["id"], scenario="expire")
    await emu.idle()
    assert {a["outcome"] for a in await emu.log(payment_id=paid["payment_id"])} == {
        "no_callback_url"
    }


async def test_global_and_invoice_behaviour_layers(emu: Harness, receiver: Receiver) -> None:
    response = await emu.client.put("/_emulator/behaviour", json={"duplicates": 2})
    assert response.json()["effective"]["duplicates"] == 2
    invoice = await emu.create_invoice(ipn_callback_url=receiver.url)
    await emu.client.put(
        f"/_emulator/invoices/{invoice['id']}/behaviour", json={"drop_statuses": ["waiting"]}
    )
    await emu.pay(invoice["id"], scenario="expire")
    await emu.idle()
    assert statuses(receiver.requests) == ["expired", "expired"]
    bad = await emu.client.put("/_emulator/behaviour", json={"duplicates": 0})
    assert bad.status_code == 422


async def test_push_any_status_even_backwards(emu: Harness, receiver: Receiver) -> None:
    _, paid = await play(emu, receiver, "full")
    receiver.requests.clear()
    pushed = await emu.client.post(
        f"/_emulator/payments/{paid['payment_id']}/status", json={"payment_status": "waiting"}
    )
    assert pushed.status_code == 200
    await emu.idle()
    assert statuses(receiver.requests) == ["waiting"]
    assert (await emu.payment(paid["payment_id"]))["payment_status"] == "waiting"


async def test_resend_repeats_the_current_state(emu: Harness, receiver: Receiver) -> None:
    _, paid = await play(emu, receiver, "full")
    last = receiver.requests[-1].body
    await emu.client.post(f"/_emulator/payments/{paid['payment_id']}/resend")
    await emu.idle()
    assert receiver.requests[-1].body == last


async def test_expire_now_expires_waiting_payments_with_an_ipn(
    emu: Harness, receiver: Receiver
) -> None:
    invoice = await emu.create_invoice(ipn_callback_url=receiver.url)
    created = await emu.client.post(
        "/v1/invoice-payment", json={"iid": invoice["id"], "pay_currency": "btc"}, headers=emu.key
    )
    payment_id = int(created.json()["payment_id"])
    response = await emu.client.post(f"/_emulator/invoices/{invoice['id']}/expire")
    assert response.json()["status"] == "expired"
    await emu.idle()
    assert statuses(receiver.requests) == ["expired"]
    assert (await emu.payment(payment_id))["payment_status"] == "expired"
    refused = await emu.client.post(f"/_emulator/invoices/{invoice['id']}/pay", json={})
    assert refused.status_code == 409


async def test_wait_idle_reports_a_timeout_while_playback_runs(
    emu: Harness, receiver: Receiver
) -> None:
    invoice = await emu.create_invoice(ipn_callback_url=receiver.url)
    # The playback must outlast the checks below even when the machine stalls between them.
    await emu.pay(invoice["id"], scenario="expire", step_delay=2.0)
    status = (await emu.client.get("/_emulator/ipn/status")).json()
    assert status["idle"] is False
    assert status["pending"] >= 1
    waited = await emu.client.post("/_emulator/ipn/wait-idle", params={"timeout": 0.05})
    assert waited.status_code == 408
    assert waited.json()["idle"] is False
    await emu.idle()
    assert (await emu.client.get("/_emulator/ipn/status")).json()["idle"] is True
    assert statuses(receiver.requests) == ["waiting", "expired"]


async def test_reset_forgets_everything(emu: Harness, receiver: Receiver) -> None:
    invoice = await emu.create_invoice(ipn_callback_url=receiver.url)
    await emu.pay(invoice["id"], step_delay=5.0)
    await emu.client.post("/_emulator/faults", json={"operation": "status"})
    response = await emu.client.post("/_emulator/reset")
    assert response.json() == {"ok": True}
    assert (await emu.client.get("/_emulator/invoices")).json() == {"invoices": []}
    assert await emu.log() == []
    assert (await emu.client.get("/_emulator/ipn/status")).json()["idle"] is True
    assert (await emu.client.get("/v1/status")).status_code == 200


async def test_control_listing_filters_by_order_id(emu: Harness) -> None:
    await emu.create_invoice(order_id="a")
    wanted = await emu.create_invoice(order_id="b")
    listing = (await emu.client.get("/_emulator/invoices", params={"order_id": "b"})).json()
    assert [i["id"] for i in listing["invoices"]] == [int(wanted["id"])]
    paid = await emu.pay(wanted["id"])
    await emu.idle()
    payments = (await emu.client.get("/_emulator/payments", params={"order_id": "b"})).json()
    assert [p["payment_id"] for p in payments["payments"]] == [paid["payment_id"]]
    assert payments["payments"][0]["history"][-1] == "finished"
    assert payments["payments"][0]["pay_amount"] == "0.001"


async def test_the_attempt_log_keeps_the_newest_entries_up_to_its_limit() -> None:
    dispatcher = IpnDispatcher(EmulatorConfig(ipn_log_limit=2), random.Random(1))
    for status in ("waiting", "confirming", "finished"):
        dispatcher.record_dropped(
            Ipn(
                payment_id=1,
                invoice_id=2,
                payment_status=status,
                url=None,
                body=b"{}",
                signature="sig",
            )
        )
    assert [(e.seq, e.payment_status) for e in dispatcher.log] == [
        (2, "confirming"),
        (3, "finished"),
    ]
