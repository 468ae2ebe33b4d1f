"""Payments that need attention: the projection on real NATS, the list and its gauge, the
acknowledge, and settle / attach against a fake payments responder (exactly once per key)."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import nats
import pytest
from admin.models import AttentionDecision, AuditLog
from admin.projections import project_order, project_payment
from admin.rebuild import rebuild
from shared.contracts import subjects
from shared.contracts.orders import OrderUnderpaid
from shared.contracts.payments import (
    AttachPaymentRequest,
    PaymentActionReply,
    PaymentAttentionRaised,
    SettlePaymentRequest,
)
from shared.messaging import DeadLetter, Delivery
from shared.testing import wait_for
from sqlalchemy import select

from ..conftest import (
    T0,
    AdminApi,
    Publisher,
    auth,
    consumers_drained,
    minutes,
    order_created,
    payment_event,
)

PID = uuid.UUID("6f1c0000-0000-4000-8000-000000000001")


def attention(
    order_id: str = "ord-a",
    *,
    kind: str = "late_money",
    key: str | None = None,
    payment_id: uuid.UUID = PID,
    at_minute: int = 0,
    **extra: Any,
) -> PaymentAttentionRaised:
    return PaymentAttentionRaised(
        payment_id=payment_id,
        order_id=order_id,
        kind=kind,
        key=key or f"{kind}:{at_minute}",
        detail=extra.pop("detail", f"{kind} on {order_id}"),
        occurred_at=T0 + minutes(at_minute),
        **extra,
    )


async def _seed_order(api: AdminApi, order_id: str) -> None:
    created = order_created(order_id)
    async with api.ctx.sessions() as session, session.begin():
        await project_order(session, created, Delivery(created.SUBJECT, 1, 1))


async def _page(api: AdminApi, h: dict[str, str], **params: Any) -> dict[str, Any]:
    response = await api.client.get("/admin/needs-attention", params=params, headers=h)
    assert response.status_code == 200, response.text
    return response.json()


async def _drained(api: AdminApi) -> None:
    await wait_for(
        lambda: consumers_drained(api.settings.nats_url, [subjects.PAYMENT_ATTENTION_RAISED]),
        timeout=15,
        message="attention projected",
    )


async def _decisions(api: AdminApi) -> list[AttentionDecision]:
    async with api.ctx.sessions() as session:
        return list((await session.scalars(select(AttentionDecision))).all())


async def test_attention_events_are_projected_once_per_payment_and_key(
    admin_api: AdminApi, admin_worker, publish: Publisher
):
    h = auth(await admin_api.user("viewer"))
    await _seed_order(admin_api, "ord-a")
    late = attention(
        kind="late_money",
        key="late:5077",
        at_minute=1,
        provider_payment_id="5077",
        parent_payment_id="5000",
        provider_status="finished",
        payment_status="expired",
        amount=Decimal("0.00001000"),
        currency="btc",
    )
    child = attention(kind="child_payment", key="child:5078", at_minute=2)
    other = attention("ord-b", kind="overpaid", payment_id=uuid.uuid4(), at_minute=3)
    for event in (late, child, other):
        await publish.event(event)
    # the same situation again (a redelivery / republish under another msg id): still one row
    await publish.event(late, msg_id=f"{late.event_id}-again")
    await publish.event(
        attention(kind="late_money", key="late:5077", at_minute=9, detail="a later copy"),
    )
    await _drained(admin_api)

    page = await _page(admin_api, h)
    assert page["total"] == 3
    assert [i["key"] for i in page["items"]] == ["overpaid:3", "child:5078", "late:5077"]
    item = page["items"][2]
    assert item["state"] == "open" and item["decision"] is None
    assert (item["kind"], item["order_id"], item["detail"]) == (
        "late_money",
        "ord-a",
        "late_money on ord-a",  # the earliest copy wins, whatever order they came in
    )
    assert (item["amount"], item["currency"]) == ("0.00001000", "btc")
    assert (item["provider_payment_id"], item["parent_payment_id"]) == ("5077", "5000")
    assert (item["order_status"], item["order_total"]) == ("awaiting_payment", "19.99")
    assert item["raised_at"].startswith("2026-01-10T12:01:00")
    assert item["age_seconds"] > 3600
    assert page["counts"]["attention"] == 3
    assert page["counts"]["by_kind"]["late_money"] == 1

    assert (await _page(admin_api, h, kind="child_payment"))["total"] == 1
    assert (await _page(admin_api, h, order_id="ord-b"))["total"] == 1
    assert (await _page(admin_api, h, payment_id=str(PID)))["total"] == 2
    window = await _page(
        admin_api,
        h,
        raised_from=(T0 + minutes(2)).isoformat(),
        raised_to=(T0 + minutes(2)).isoformat(),
    )
    assert [i["key"] for i in window["items"]] == ["child:5078"]
    assert (await _page(admin_api, h, limit=1, offset=1))["items"][0]["key"] == "child:5078"
    for params, field in (
        ({"limit": 101}, "limit"),
        ({"limit": 0}, "limit"),
        ({"state": "closed"}, "state"),
        ({"payment_id": "nope"}, "payment_id"),
    ):
        bad = await admin_api.client.get("/admin/needs-attention", params=params, headers=h)
        assert bad.status_code == 422, params
        assert bad.json()["detail"][0]["loc"][-1] == field


async def test_an_operator_settle_item_resolves_earlier_items_in_any_order(
    admin_api: AdminApi, admin_worker, publish: Publisher
):
    """payments records an operator's settle as its own attention item: it closes everything
    of that order raised before it, even when it is projected first."""
    h = auth(await admin_api.user("viewer"))
    await publish.event(attention(kind="settled_by_operator", key="settled:1", at_minute=5))
    await publish.event(attention(kind="amount_discrepancy", key="disc", at_minute=4))
    await publish.event(attention(kind="late_money", key="later", at_minute=6))
    await _drained(admin_api)
    open_items = await _page(admin_api, h)
    assert [i["key"] for i in open_items["items"]] == ["later"]
    resolved = await _page(admin_api, h, state="resolved")
    assert {i["key"] for i in resolved["items"]} == {"settled:1", "disc"}
    assert (await _page(admin_api, h, state="any"))["total"] == 3


async def test_needs_attention_lists_dead_letters_and_stuck_payments_and_the_gauge(
    admin_api: AdminApi, admin_worker, publish: Publisher
):
    h = auth(await admin_api.user("viewer"))
    await publish.event(attention("ord-g", kind="wrong_asset", key="w1"))
    stuck_pid, settled_pid = uuid.uuid4(), uuid.uuid4()
    async with admin_api.ctx.sessions() as session, session.begin():
        for pid, order_id in ((stuck_pid, "ord-short"), (settled_pid, "ord-topped-up")):
            event = payment_event(pid, version=2, status="partially_paid", order_id=order_id)
            await project_payment(session, event, Delivery(event.SUBJECT, 1, 1))
        for order_id in ("ord-short", "ord-topped-up", "ord-under"):
            created = order_created(order_id)
            await project_order(session, created, Delivery(created.SUBJECT, 1, 1))
        under = OrderUnderpaid(
            order_id="ord-under",
            status="underpaid",
            version=2,
            email="b@example.com",
            total=Decimal("19.99"),
            currency="usd",
            actually_paid=Decimal("0.0001"),
            pay_amount=Decimal("0.0002"),
            pay_currency="btc",
            occurred_at=T0 + minutes(1),
        )
        await project_order(session, under, Delivery(under.SUBJECT, 1, 1))
        paid = order_created("ord-topped-up").model_copy(update={"status": "paid", "version": 3})
        await project_order(session, paid, Delivery(subjects.ORDER_PAID, 1, 1))
    letter = DeadLetter(
        consumer="orders-paid",
        original_subject=subjects.PAYMENT_STATUS_CHANGED,
        stream_sequence=7,
        deliveries=5,
        error="boom",
        body="{}",
        dead_lettered_at=T0,
    )
    await publish.raw(
        "deadletter.orders-paid", letter.model_dump_json().encode(), f"dl-{uuid.uuid4()}"
    )

    async def everything() -> dict[str, Any] | None:
        page = await _page(admin_api, h)
        counts = page["counts"]
        return page if counts["attention"] == 1 and counts["dead_letters"] == 1 else None

    page = await wait_for(everything, timeout=15, message="attention and dead letter projected")
    assert page["counts"]["total"] == 4 and page["counts"]["stuck"] == 2
    assert page["dead_letters"]["href"] == "/admin/dead-letters"
    assert page["dead_letters"]["items"][0]["id"] == "orders-paid:7"
    stuck = {s["kind"]: s for s in page["stuck"]["items"]}
    assert set(stuck) == {"payment_partially_paid", "order_underpaid"}  # paid order: not stuck
    assert stuck["payment_partially_paid"]["order_id"] == "ord-short"
    assert stuck["payment_partially_paid"]["payment_id"] == str(stuck_pid)
    assert stuck["order_underpaid"]["actually_paid"] == "0.0001"
    listed = await admin_api.client.get("/admin/needs-attention/stuck", headers=h)
    assert listed.json()["total"] == 2

    counts = await admin_api.client.get("/admin/needs-attention/counts", headers=h)
    assert counts.json()["total"] == 4

    metrics = (await admin_api.client.get("/metrics")).text
    assert 'bitloot_admin_needs_attention{kind="wrong_asset"} 1.0' in metrics
    assert 'bitloot_admin_needs_attention{kind="dead_letter"} 1.0' in metrics
    assert 'bitloot_admin_needs_attention{kind="payment_partially_paid"} 1.0' in metrics
    assert 'bitloot_admin_needs_attention{kind="order_underpaid"} 1.0' in metrics
    assert 'bitloot_admin_needs_attention{kind="late_money"} 0.0' in metrics


async def test_acknowledge_needs_a_reason_is_audited_and_happens_once(
    admin_api: AdminApi, admin_worker, publish: Publisher
):
    operator = await admin_api.user("operator", "ada")
    await publish.event(attention(kind="unknown_status", key="u1"))
    await _drained(admin_api)
    url = f"/admin/attention/{PID}/acknowledge"
    for body, field in (({"key": "u1"}, "reason"), ({"key": "u1", "reason": "  "}, "reason")):
        bad = await admin_api.client.post(url, json=body, headers=auth(operator))
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == field
    missing = await admin_api.client.post(
        url, json={"key": "nope", "reason": "seen"}, headers=auth(operator)
    )
    assert missing.status_code == 404

    done = await admin_api.client.post(
        url, json={"key": "u1", "reason": " provider bug, ticket 12 "}, headers=auth(operator)
    )
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "acknowledged"
    again = await admin_api.client.post(
        url, json={"key": "u1", "reason": "again"}, headers=auth(operator)
    )
    assert again.status_code == 409 and "already acknowledged" in again.json()["detail"]

    h = auth(operator)
    assert (await _page(admin_api, h))["total"] == 0
    [item] = (await _page(admin_api, h, state="acknowledged"))["items"]
    assert item["decision"]["actor_username"] == "ada"
    assert item["decision"]["reason"] == "provider bug, ticket 12"
    [entry] = await admin_api.audit("attention.acknowledge")
    assert (entry.actor_username, entry.reason, entry.outcome) == (
        "ada",
        "provider bug, ticket 12",
        "ok",
    )
    assert item["decision"]["audit_id"] == entry.id == done.json()["audit_id"]

    # decisions are admin's own state: a rebuild of the read models keeps them
    nc = await nats.connect(admin_api.settings.nats_url)
    try:
        await rebuild(admin_api.ctx.sessions, nc.jetstream())
    finally:
        await nc.close()
    [item] = (await _page(admin_api, h, state="acknowledged"))["items"]
    assert item["key"] == "u1"


async def test_settle_sends_one_action_resolves_the_order_items_and_is_audited(
    admin_api: AdminApi, admin_worker, publish: Publisher, responder
):
    operator = await admin_api.user("operator", "sam")
    await _seed_order(admin_api, "ord-a")
    await publish.event(attention(kind="amount_discrepancy", key="d1"))
    await publish.event(attention("ord-other", kind="late_money", key="x", payment_id=uuid.uuid4()))
    await _drained(admin_api)
    received: list[SettlePaymentRequest] = []

    async def answer(request: SettlePaymentRequest) -> PaymentActionReply:
        received.append(request)
        return PaymentActionReply(
            ok=True, payment_id=str(PID), status="finished", changed=len(received) == 1
        )

    await responder(SettlePaymentRequest, answer, "payments")
    headers = {**auth(operator), "Idempotency-Key": "form-key-0001"}
    response = await admin_api.client.post(
        "/admin/orders/ord-a/settle", json={"reason": " paid by bank transfer "}, headers=headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["ok"], body["changed"], body["status"], body["replayed"]) == (
        True,
        True,
        "finished",
        False,
    )
    assert body["resolved"] == 1
    assert "settled as paid" in body["message"]

    [request] = received
    assert (request.order_id, request.operator, request.reason) == (
        "ord-a",
        "sam",
        "paid by bank transfer",
    )
    assert str(request.action_id) == body["action_id"]
    assert request.correlation_id == response.headers["x-correlation-id"]
    [entry] = await admin_api.audit("order.settle")
    assert (entry.actor_username, entry.target_id, entry.reason, entry.outcome) == (
        "sam",
        "ord-a",
        "paid by bank transfer",
        "ok",
    )
    assert entry.action_id == request.action_id and entry.idempotency_key == "form-key-0001"
    assert entry.detail["changed"] is True and entry.id == body["audit_id"]

    h = auth(operator)
    assert [i["order_id"] for i in (await _page(admin_api, h))["items"]] == ["ord-other"]
    [resolved] = (await _page(admin_api, h, state="resolved"))["items"]
    assert resolved["decision"]["audit_id"] == entry.id

    # the browser submits the same form again: the stored answer, nothing sent
    again = await admin_api.client.post(
        "/admin/orders/ord-a/settle", json={"reason": "paid by bank transfer"}, headers=headers
    )
    assert again.status_code == 200
    assert again.json()["replayed"] is True and again.json()["changed"] is True
    assert again.json()["action_id"] == body["action_id"]
    assert len(received) == 1 and len(await admin_api.audit("order.settle")) == 1

    # the same key for another order is a client bug, not a second action
    reused = await admin_api.client.post(
        "/admin/orders/ord-other/settle", json={"reason": "x"}, headers=headers
    )
    assert reused.status_code in (404, 409)
    await _seed_order(admin_api, "ord-other")
    reused = await admin_api.client.post(
        "/admin/orders/ord-other/settle", json={"reason": "x"}, headers=headers
    )
    assert reused.status_code == 409 and "different action" in reused.json()["detail"]
    assert len(received) == 1

    # a new form (new key) is a new action; payments answers "nothing to do"
    fresh = await admin_api.client.post(
        "/admin/orders/ord-a/settle",
        json={"reason": "again"},
        headers={**auth(operator), "Idempotency-Key": "form-key-0002"},
    )
    assert fresh.status_code == 200 and fresh.json()["changed"] is False
    assert "already settled" in fresh.json()["message"]
    assert received[1].action_id != received[0].action_id


async def test_a_parallel_double_submit_sends_one_action(admin_api: AdminApi, responder):
    operator = await admin_api.user("operator")
    await _seed_order(admin_api, "ord-dbl")
    received: list[SettlePaymentRequest] = []
    release = asyncio.Event()

    async def answer(request: SettlePaymentRequest) -> PaymentActionReply:
        received.append(request)
        await release.wait()
        return PaymentActionReply(ok=True, status="finished", changed=True)

    await responder(SettlePaymentRequest, answer, "payments")
    headers = {**auth(operator), "Idempotency-Key": "double-submit-1"}

    async def submit() -> Any:
        return await admin_api.client.post(
            "/admin/orders/ord-dbl/settle", json={"reason": "confirmed"}, headers=headers
        )

    first = asyncio.create_task(submit())
    await wait_for(lambda: len(received) == 1, timeout=10, message="first action sent")
    second = asyncio.create_task(submit())

    async def second_is_waiting() -> bool:
        async with admin_api.ctx.sessions() as session:
            entries = list((await session.scalars(select(AuditLog))).all())
        # the second submit found the first one's pending row (no second row, no second send)
        return len([e for e in entries if e.action == "order.settle"]) == 1 and not second.done()

    assert await wait_for(second_is_waiting, timeout=5)
    release.set()
    a, b = (await first).json(), (await second).json()
    assert len(received) == 1
    assert a["action_id"] == b["action_id"] == str(received[0].action_id)
    assert (a["replayed"], b["replayed"]) == (False, True)
    assert a["changed"] is b["changed"] is True


@pytest.mark.parametrize(
    ("code", "status", "readable", "outcome"),
    [
        ("payment_not_found", 404, "has no payment yet", "refused"),
        ("refunded", 409, "was refunded", "refused"),
        ("provider_unavailable", 502, "NOWPayments did not answer", "unavailable"),
        ("unavailable", 503, "could not reach its database", "unavailable"),
        ("invalid_request", 422, "refused the request as invalid", "refused"),
        ("internal_error", 502, "failed while handling", "refused"),
    ],
)
async def test_settle_refusals_are_readable(
    admin_api: AdminApi, responder, code, status, readable, outcome
):
    operator = await admin_api.user("operator")
    await _seed_order(admin_api, "ord-r")

    async def answer(request: SettlePaymentRequest) -> PaymentActionReply:
        return PaymentActionReply(ok=False, error_code=code, error_message=f"said {code}")

    await responder(SettlePaymentRequest, answer, "payments")
    response = await admin_api.client.post(
        "/admin/orders/ord-r/settle", json={"reason": "check"}, headers=auth(operator)
    )
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is False and body["error_code"] == code
    assert readable in body["detail"] and f"Payments said: said {code}" in body["detail"]
    [entry] = await admin_api.audit("order.settle")
    assert entry.outcome == outcome and entry.detail["error_code"] == code
    assert await _decisions(admin_api) == []


async def test_settle_when_payments_does_not_answer_then_retry_with_the_same_key(
    admin_api: AdminApi, responder
):
    operator = await admin_api.user("operator")
    await _seed_order(admin_api, "ord-down")
    headers = {**auth(operator), "Idempotency-Key": "retry-key-1"}
    down = await admin_api.client.post(
        "/admin/orders/ord-down/settle", json={"reason": "confirmed"}, headers=headers
    )
    assert down.status_code == 503
    assert "not running" in down.json()["detail"] and down.json()["retryable"] is True
    [entry] = await admin_api.audit("order.settle")
    assert entry.outcome == "unavailable"

    received: list[SettlePaymentRequest] = []

    async def answer(request: SettlePaymentRequest) -> PaymentActionReply:
        received.append(request)
        return PaymentActionReply(ok=True, status="finished", changed=True)

    await responder(SettlePaymentRequest, answer, "payments")
    up = await admin_api.client.post(
        "/admin/orders/ord-down/settle", json={"reason": "confirmed"}, headers=headers
    )
    assert up.status_code == 200, up.text
    # the retry is the same action: payments can recognise a settle it did but never answered
    assert str(received[0].action_id) == up.json()["action_id"] == down.json()["action_id"]
    [entry] = await admin_api.audit("order.settle")
    assert entry.outcome == "ok"


async def test_attach_checks_the_provider_payment_id_and_sends_it(admin_api: AdminApi, responder):
    operator = await admin_api.user("operator", "ines")
    await _seed_order(admin_api, "ord-at")
    received: list[AttachPaymentRequest] = []

    async def answer(request: AttachPaymentRequest) -> PaymentActionReply:
        received.append(request)
        if request.provider_payment_id == "999":
            return PaymentActionReply(ok=False, error_code="belongs_to_other_order")
        return PaymentActionReply(ok=True, payment_id=str(PID), status="finished", changed=True)

    await responder(AttachPaymentRequest, answer, "payments")
    url = "/admin/orders/ord-at/attach-payment"
    for body, field in (
        ({"provider_payment_id": "12a4", "reason": "top-up"}, "provider_payment_id"),
        ({"provider_payment_id": "", "reason": "top-up"}, "provider_payment_id"),
        ({"provider_payment_id": "1" * 33, "reason": "top-up"}, "provider_payment_id"),
        ({"reason": "top-up"}, "provider_payment_id"),
        ({"provider_payment_id": "5077"}, "reason"),
    ):
        bad = await admin_api.client.post(url, json=body, headers=auth(operator))
        assert bad.status_code == 422, body
        assert bad.json()["detail"][0]["loc"][-1] == field
    unknown = await admin_api.client.post(
        "/admin/orders/nope/attach-payment",
        json={"provider_payment_id": "5077", "reason": "top-up"},
        headers=auth(operator),
    )
    assert unknown.status_code == 404
    assert received == [] and await admin_api.audit("order.attach_payment") == []

    ok = await admin_api.client.post(
        url,
        json={"provider_payment_id": " 5077125099 ", "reason": "top-up"},
        headers=auth(operator),
    )
    assert ok.status_code == 200, ok.text
    assert "attached to order ord-at" in ok.json()["message"]
    assert (received[0].provider_payment_id, received[0].operator) == ("5077125099", "ines")
    other = await admin_api.client.post(
        url, json={"provider_payment_id": "999", "reason": "top-up"}, headers=auth(operator)
    )
    assert other.status_code == 409 and "belongs to another order" in other.json()["detail"]
    entries = await admin_api.audit("order.attach_payment")
    assert [(e.outcome, e.detail["provider_payment_id"]) for e in entries] == [
        ("ok", "5077125099"),
        ("refused", "999"),
    ]
