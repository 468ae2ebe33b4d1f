"""Read models fed through the real consumers on real NATS, read back through the API."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from admin.projections import project_payment
from shared.contracts import subjects
from shared.contracts.fulfillment import EmailSent, GrantsRevoked, OrderDelivered
from shared.contracts.orders import OrderPaid
from shared.contracts.webhooks import IpnRejected
from shared.messaging import DeadLetter, Delivery
from shared.testing import wait_for

from ..conftest import (
    T0,
    AdminApi,
    Publisher,
    auth,
    consumers_drained,
    ipn_received,
    minutes,
    order_created,
    payment_event,
)


async def _get(api: AdminApi, headers: dict[str, str], url: str, **params: Any) -> dict:
    response = await api.client.get(url, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _wait_total(api: AdminApi, headers: dict[str, str], url: str, total: int) -> dict:
    async def reached() -> dict | None:
        page = await _get(api, headers, url, limit=100)
        return page if page["total"] == total else None

    return await wait_for(reached, timeout=15, message=f"{url} total == {total}")


async def test_payments_filters_pagination_and_newest_first(
    admin_api: AdminApi, admin_worker, publish: Publisher
):
    h = auth(await admin_api.user("viewer"))
    ids = [uuid.UUID(int=i + 1) for i in range(25)]
    for i, pid in enumerate(ids):
        await publish.event(
            payment_event(
                pid,
                version=1,
                status="finished" if i % 5 == 0 else "waiting",
                previous="created",
                order_id=f"ord-{i}",
                at=T0 + minutes(i),
                provider_payment_id=f"50{i:03d}",
                invoice_id=f"45{i:03d}",
                actually_paid=Decimal("0.00012300"),
            )
        )
    await _wait_total(admin_api, h, "/admin/payments", 25)

    first = await _get(admin_api, h, "/admin/payments")
    assert (first["total"], first["limit"], first["offset"]) == (25, 20, 0)
    assert [p["payment_id"] for p in first["items"]] == [str(p) for p in reversed(ids)][:20]
    assert first["items"][0]["actually_paid"] == "0.00012300"  # Decimal text, never a float
    assert first["items"][0]["price_amount"] == "19.99"
    last = await _get(admin_api, h, "/admin/payments", limit=10, offset=20)
    assert [p["order_id"] for p in last["items"]] == [f"ord-{i}" for i in range(4, -1, -1)]
    beyond = await _get(admin_api, h, "/admin/payments", offset=500)
    assert beyond["items"] == [] and beyond["total"] == 25

    finished = await _get(admin_api, h, "/admin/payments", status="finished")
    assert finished["total"] == 5
    assert [p["order_id"] for p in finished["items"]] == [
        "ord-20",
        "ord-15",
        "ord-10",
        "ord-5",
        "ord-0",
    ]
    assert (await _get(admin_api, h, "/admin/payments", order_id="ord-7"))["total"] == 1
    by_provider = await _get(admin_api, h, "/admin/payments", provider_payment_id="50003")
    assert [p["order_id"] for p in by_provider["items"]] == ["ord-3"]
    assert (await _get(admin_api, h, "/admin/payments", invoice_id="45004"))["total"] == 1
    window = await _get(
        admin_api,
        h,
        "/admin/payments",
        created_from=(T0 + minutes(10)).isoformat(),
        created_to=(T0 + minutes(12)).isoformat(),
    )
    assert [p["order_id"] for p in window["items"]] == ["ord-12", "ord-11", "ord-10"]
    naive = await _get(admin_api, h, "/admin/payments", created_from="2026-01-10T12:24:00")
    assert naive["total"] == 1  # no offset means UTC

    for params, field in (
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "paid-ish"}, "status"),
        ({"created_from": "yesterday"}, "created_from"),
    ):
        bad = await admin_api.client.get("/admin/payments", params=params, headers=h)
        assert bad.status_code == 422, params
        assert bad.json()["detail"][0]["loc"][-1] == field
    reversed_range = await admin_api.client.get(
        "/admin/payments",
        headers=h,
        params={"created_from": T0.isoformat(), "created_to": (T0 - minutes(1)).isoformat()},
    )
    assert reversed_range.status_code == 422
    assert reversed_range.json()["detail"][0]["loc"] == ["created_from"]

    detail = await _get(admin_api, h, f"/admin/payments/{ids[3]}")
    assert [t["status"] for t in detail["transitions"]] == ["waiting"]


async def test_same_event_twice_gives_one_row(
    admin_api: AdminApi, admin_worker, publish: Publisher
):
    h = auth(await admin_api.user("viewer"))
    pid = uuid.uuid4()
    payment = payment_event(pid, version=1, status="waiting", previous="created")
    order = order_created("ord-dup")
    ipn = ipn_received(7)
    for event in (payment, order, ipn):
        # distinct Nats-Msg-Id: JetStream's duplicate window does not hide the copy from us
        await publish.event(event, msg_id=f"{event.event_id}-1")
        await publish.event(event, msg_id=f"{event.event_id}-2")
    watched = [subjects.PAYMENT_STATUS_CHANGED, subjects.ORDER_CREATED, subjects.IPN_RECEIVED]
    await wait_for(lambda: consumers_drained(admin_api.settings.nats_url, watched), timeout=15)

    assert (await _get(admin_api, h, "/admin/payments"))["total"] == 1
    assert len((await _get(admin_api, h, f"/admin/payments/{pid}"))["transitions"]) == 1
    assert (await _get(admin_api, h, "/admin/orders"))["total"] == 1
    assert len((await _get(admin_api, h, "/admin/orders/ord-dup"))["events"]) == 1
    logs = await _get(admin_api, h, "/admin/webhook-logs")
    assert logs["total"] == 1
    assert (logs["items"][0]["received_count"], logs["items"][0]["replay_count"]) == (1, 0)


async def test_projections_are_idempotent_without_the_inbox(admin_api: AdminApi):
    """Rebuild replays without the inbox guard: the upserts alone must hold."""
    event = payment_event(uuid.uuid4(), version=2, status="confirming")
    delivery = Delivery(subject=event.SUBJECT, attempt=1, stream_sequence=1)
    for _ in range(2):
        async with admin_api.ctx.sessions() as session, session.begin():
            await project_payment(session, event, delivery)
    h = auth(await admin_api.user("viewer"))
    payments = await _get(admin_api, h, "/admin/payments")
    assert payments["total"] == 1
    detail = await _get(admin_api, h, f"/admin/payments/{event.payment_id}")
    assert [t["version"] for t in detail["transitions"]] == [2]


async def test_out_of_order_events_newest_version_wins(
    admin_api: AdminApi, admin_worker, publish: Publisher
):
    h = auth(await admin_api.user("viewer"))
    pid = uuid.uuid4()
    # v3 arrives first, then the older v2 and v1; v1 alone knows only the invoice id
    await publish.event(
        payment_event(
            pid,
            version=3,
            status="finished",
            previous="confirming",
            at=T0 + minutes(3),
            invoice_id=None,
            order_id="ord-ooo",
            actually_paid=Decimal("0.0005"),
        )
    )
    await publish.event(
        payment_event(
            pid,
            version=2,
            status="confirming",
            previous="waiting",
            at=T0 + minutes(2),
            invoice_id=None,
            order_id="ord-ooo",
        )
    )
    await publish.event(
        payment_event(
            pid,
            version=1,
            status="waiting",
            previous="created",
            at=T0 + minutes(1),
            provider_payment_id=None,
            order_id="ord-ooo",
            invoice_id="4522625843",
        )
    )
    detail = await wait_for(
        lambda: _transitions_at_least(admin_api, h, pid, 3), timeout=15, message="3 transitions"
    )
    assert (detail["status"], detail["version"], detail["is_final"]) == ("finished", 3, True)
    assert detail["actually_paid"] == "0.0005"
    assert (detail["provider_payment_id"], detail["invoice_id"]) == ("5077125051", "4522625843")
    assert detail["created_at"].startswith("2026-01-10T12:01:00")  # from the oldest event
    assert [t["status"] for t in detail["transitions"]] == ["waiting", "confirming", "finished"]

    # orders: paid (v2) before created (v1)
    created = order_created("ord-ooo", at=T0)
    paid = OrderPaid(
        order_id="ord-ooo",
        status="paid",
        version=2,
        email=created.email,
        total=created.total,
        currency="usd",
        items=created.items,
        payment_id=str(pid),
        occurred_at=T0 + minutes(5),
    )
    await publish.event(paid)
    await wait_for(lambda: _get(admin_api, h, "/admin/orders"), timeout=5)
    await publish.event(created)
    order = await wait_for(
        lambda: _order_events_at_least(admin_api, h, "ord-ooo", 2),
        timeout=15,
        message="2 order events",
    )
    assert (order["status"], order["version"], order["payment_id"]) == ("paid", 2, str(pid))
    assert order["created_at"].startswith("2026-01-10T12:00:00")
    assert order["items"][0]["sku"] == "KEY-1"
    assert [e["event_type"] for e in order["events"]] == ["order_created", "order_paid"]
    assert [p["payment_id"] for p in order["payments"]] == [str(pid)]


async def _transitions_at_least(api: AdminApi, h: dict, pid: uuid.UUID, n: int) -> dict | None:
    response = await api.client.get(f"/admin/payments/{pid}", headers=h)
    if response.status_code != 200 or len(response.json()["transitions"]) < n:
        return None
    return response.json()


async def _order_events_at_least(api: AdminApi, h: dict, order_id: str, n: int) -> dict | None:
    response = await api.client.get(f"/admin/orders/{order_id}", headers=h)
    if response.status_code != 200 or len(response.json()["events"]) < n:
        return None
    return response.json()


async def test_orders_filters_and_detail_with_fulfillment(
    admin_api: AdminApi, admin_worker, publish: Publisher
):
    h = auth(await admin_api.user("viewer"))
    for i in range(6):
        await publish.event(
            order_created(
                f"ord-{i}", at=T0 + minutes(i), email="Alice@Example.com" if i % 2 else f"b{i}@x.io"
            )
        )
    await publish.event(
        OrderPaid(
            order_id="ord-4",
            status="paid",
            version=2,
            email="b4@x.io",
            total=Decimal("19.99"),
            currency="usd",
            items=[],
            occurred_at=T0 + minutes(30),
        )
    )
    await publish.event(
        OrderDelivered(
            order_id="ord-4",
            delivery_id="dlv-1",
            item_count=1,
            link_expires_at=T0 + timedelta(days=1),
            occurred_at=T0 + minutes(31),
        )
    )
    await publish.event(
        EmailSent(
            order_id="ord-4",
            template="delivery",
            status="sent",
            attempts=1,
            recipient_masked="b***@x.io",
            occurred_at=T0 + minutes(31),
        )
    )
    await publish.event(
        GrantsRevoked(
            order_id="ord-4",
            revoked=1,
            operator_id="op-1",
            reason="chargeback",
            occurred_at=T0 + minutes(40),
        )
    )
    await _wait_total(admin_api, h, "/admin/orders", 6)
    await _wait_total(admin_api, h, "/admin/deliveries", 1)

    orders = await _get(admin_api, h, "/admin/orders", limit=4)
    assert [o["order_id"] for o in orders["items"]] == ["ord-5", "ord-4", "ord-3", "ord-2"]
    assert orders["total"] == 6
    by_email = await _get(admin_api, h, "/admin/orders", email="alice@example.COM")
    assert [o["order_id"] for o in by_email["items"]] == ["ord-5", "ord-3", "ord-1"]
    assert [
        o["order_id"]
        for o in (await wait_for(lambda: _status_page(admin_api, h, "paid"), timeout=10))["items"]
    ] == ["ord-4"]
    bad = await admin_api.client.get("/admin/orders", params={"status": "shipped"}, headers=h)
    assert bad.status_code == 422

    async def revocation_seen() -> dict | None:
        detail = await _get(admin_api, h, "/admin/orders/ord-4")
        return detail if detail["revocations"] and detail["emails"] else None

    detail = await wait_for(revocation_seen, timeout=15)
    assert detail["deliveries"][0]["delivery_id"] == "dlv-1"
    assert detail["emails"][0]["recipient_masked"] == "b***@x.io"
    assert detail["revocations"][0]["reason"] == "chargeback"
    assert (await admin_api.client.get("/admin/orders/nope", headers=h)).status_code == 404


async def _status_page(api: AdminApi, h: dict, status: str) -> dict | None:
    page = await _get(api, h, "/admin/orders", status=status)
    return page if page["total"] else None


async def test_webhook_logs_accepted_and_rejected(
    admin_api: AdminApi, admin_worker, publish: Publisher
):
    h = auth(await admin_api.user("viewer"))
    first = ipn_received(1, status="waiting", at=T0)
    second = ipn_received(2, status="finished", at=T0 + minutes(2))
    other = ipn_received(
        3, status="finished", at=T0 + minutes(4), payment_id="999", invoice_id="888"
    )
    for event in (first, second, other):
        await publish.event(event)
    await publish.event(
        IpnRejected(
            failure_id=11,
            reason="bad signature",
            source_ip="192.0.2.1",
            received_at=T0 + minutes(1),
            body_excerpt='{"payment_id"',
            occurred_at=T0 + minutes(1),
        )
    )
    flood = IpnRejected(
        failure_id=None,
        reason="flood cap",
        received_at=T0 + minutes(5),
        dropped_since_last=40,
        occurred_at=T0 + minutes(5),
    )
    await publish.event(flood)
    # the payment transition caused by the second callback
    pid = uuid.uuid4()
    await publish.event(
        payment_event(
            pid, version=2, status="finished", at=T0 + minutes(2), causation_id=str(second.event_id)
        )
    )
    await publish.event(
        payment_event(
            pid,
            version=1,
            status="waiting",
            previous="created",
            at=T0,
            causation_id=str(first.event_id),
        )
    )
    page = await _wait_total(admin_api, h, "/admin/webhook-logs", 5)

    assert [w["id"] for w in page["items"]] == [f"r-{flood.event_id}", "a-3", "a-2", "r-11", "a-1"]
    assert page["items"][1]["external_id"] == "999" and page["items"][1]["event_type"] == "finished"
    rejected = await _get(admin_api, h, "/admin/webhook-logs", accepted="false")
    assert [w["id"] for w in rejected["items"]] == [f"r-{flood.event_id}", "r-11"]
    assert rejected["items"][1]["reason"] == "bad signature"
    accepted = await _get(admin_api, h, "/admin/webhook-logs", accepted="true", limit=2)
    assert ([w["id"] for w in accepted["items"]], accepted["total"]) == (["a-3", "a-2"], 3)
    by_invoice = await _get(admin_api, h, "/admin/webhook-logs", external_id="4522625843")
    assert [w["id"] for w in by_invoice["items"]] == ["a-2", "a-1"]
    by_payment = await _get(admin_api, h, "/admin/webhook-logs", external_id="999")
    assert [w["id"] for w in by_payment["items"]] == ["a-3"]
    finished = await _get(admin_api, h, "/admin/webhook-logs", event_type="finished")
    assert [w["id"] for w in finished["items"]] == ["a-3", "a-2"]
    window = await _get(
        admin_api,
        h,
        "/admin/webhook-logs",
        received_from=(T0 + minutes(1)).isoformat(),
        received_to=(T0 + minutes(4)).isoformat(),
    )
    assert [w["id"] for w in window["items"]] == ["a-3", "a-2", "r-11"]
    assert (await _get(admin_api, h, "/admin/webhook-logs", provider="other"))["total"] == 0

    async def caused() -> dict | None:
        detail = await _get(admin_api, h, "/admin/webhook-logs/a-2")
        return detail if len(detail["caused"]["transitions"]) == 2 else None

    detail = await wait_for(caused, timeout=15)
    assert detail["raw_body"] == second.raw_body
    assert detail["headers"]["x-nowpayments-sig"] == "ab12"
    assert detail["headers"]["authorization"] == "[redacted]"
    assert detail["received_count"] == 1 and detail["can_reprocess"] is True
    assert detail["payload"]["payment_status"] == "finished"
    flags = {t["status"]: t["caused_by_this"] for t in detail["caused"]["transitions"]}
    assert flags == {"finished": True, "waiting": False}
    assert [p["event_id"] for p in detail["caused"]["publications"]] == [str(second.event_id)]
    assert detail["caused"]["payments"][0]["payment_id"] == str(pid)

    flood_detail = await _get(admin_api, h, f"/admin/webhook-logs/r-{flood.event_id}")
    assert (flood_detail["dropped_since_last"], flood_detail["can_reprocess"]) == (40, False)
    assert (await _get(admin_api, h, "/admin/webhook-logs/r-11"))["body_excerpt"] == '{"payment_id"'
    assert (await admin_api.client.get("/admin/webhook-logs/a-99", headers=h)).status_code == 404
    bad = await admin_api.client.get("/admin/webhook-logs/17", headers=h)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["id"]

    # a replay of log 2 is counted as a replay, not as another delivery from the provider
    await publish.event(
        ipn_received(
            2,
            status="finished",
            at=T0 + minutes(2),
            replay=True,
            replayed_by="op-1",
            replay_reason="stuck",
        )
    )

    async def replayed() -> dict | None:
        d = await _get(admin_api, h, "/admin/webhook-logs/a-2")
        return d if d["replay_count"] == 1 else None

    detail = await wait_for(replayed, timeout=15)
    assert detail["received_count"] == 1
    assert [p["replay"] for p in detail["caused"]["publications"]] == [False, True]


async def test_dead_letters_are_listed_once(admin_api: AdminApi, admin_worker, publish: Publisher):
    h = auth(await admin_api.user("viewer"))
    letter = DeadLetter(
        consumer="payments-ipn",
        original_subject=subjects.IPN_RECEIVED,
        stream_sequence=42,
        deliveries=5,
        error="boom",
        event_id=None,
        body="{}",
        dead_lettered_at=T0,
    )
    body = letter.model_dump_json().encode()
    run = uuid.uuid4().hex  # message ids unique per run: JetStream remembers them for minutes
    await publish.raw("deadletter.payments-ipn", body, f"dl-a-{run}")
    await publish.raw("deadletter.payments-ipn", body, f"dl-b-{run}")  # parked twice
    # and one poison message that admin's own consumer dead-letters at once
    await publish.raw(subjects.PAYMENT_STATUS_CHANGED, b'{"not": "an event"}', f"poison-{run}")

    page = await _wait_total(admin_api, h, "/admin/dead-letters", 2)
    assert {d["consumer"] for d in page["items"]} == {
        "payments-ipn",
        "admin-payments-status_changed-v1",
    }
    newest = page["items"][0]
    assert newest["consumer"] == "admin-payments-status_changed-v1"
    assert "invalid body" in newest["error"] and newest["body"] == '{"not": "an event"}'
    assert page["items"][1]["id"] == "payments-ipn:42"
    only = await _get(admin_api, h, "/admin/dead-letters", consumer="payments-ipn")
    assert only["total"] == 1
    await wait_for(
        lambda: consumers_drained(admin_api.settings.nats_url, ["deadletter.>"]), timeout=10
    )
    assert (await _get(admin_api, h, "/admin/dead-letters"))["total"] == 2


@pytest.mark.parametrize("limit", [0, 101])
async def test_every_list_rejects_out_of_range_limits(admin_api: AdminApi, limit: int):
    h = auth(await admin_api.user("viewer"))
    for url in (
        "/admin/payments",
        "/admin/orders",
        "/admin/webhook-logs",
        "/admin/dead-letters",
        "/admin/audit",
        "/admin/deliveries",
    ):
        response = await admin_api.client.get(url, params={"limit": limit}, headers=h)
        assert response.status_code == 422, url
        assert response.json()["detail"][0]["loc"] == ["query", "limit"]
        ok = await admin_api.client.get(url, params={"limit": 100}, headers=h)
        assert ok.status_code == 200 and ok.json()["limit"] == 100
