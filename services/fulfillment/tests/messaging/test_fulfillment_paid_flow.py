"""OrderPaid through real JetStream into the worker: exactly one delivery, upload set and email."""

from __future__ import annotations

import asyncio
import json
import uuid

from fulfillment import domain
from fulfillment.models import Delivery, DeliveryItem, DownloadGrant, EmailLog
from shared.contracts import subjects
from shared.contracts.fulfillment import EmailSent, OrderDelivered
from shared.testing import wait_for

from ..conftest import email_parts, paid_event, publish, stream_events


class SimulatedCrash(RuntimeError):
    """Stands for the worker process dying at the hook's point."""


async def _settled(world, order_id: str, emails: int = 1) -> None:
    async def done() -> bool:
        rows = await world.emails(order_id)
        return (
            len(rows) == emails
            and all(r.status == "sent" for r in rows)
            and await world.outbox_settled()
        )

    await wait_for(done, timeout=30, message="emails sent and outbox published")


async def test_order_paid_twice_and_concurrently_delivers_once(make_world, mailbox_capture):
    # Two workers share the durable consumer, as two replicas would.
    first = await make_world()
    second = await make_world()
    event = paid_event()
    # Same event twice (distinct Nats-Msg-Id, so JetStream's dedup cannot hide it) and a second
    # OrderPaid with its own event id for the same order, all at once.
    twin = event.model_copy(update={"event_id": uuid.uuid4()})
    await asyncio.gather(
        publish(first.nats_url, event, msg_id="a"),
        publish(first.nats_url, event, msg_id="b"),
        publish(first.nats_url, twin, msg_id="c"),
    )

    await wait_for(lambda: len(mailbox_capture.messages()) >= 1, timeout=30, message="email")
    await _settled(first, event.order_id)

    assert first.s3.puts + second.s3.puts == 2  # one PUT per item, across both workers
    assert len(first.object_keys(event.order_id)) == 2
    assert await first.deliveries(event.order_id) == 1
    assert await first.count(DeliveryItem) == 2
    assert await first.count(DownloadGrant) == 1
    assert len(mailbox_capture.messages()) == 1
    delivered = [
        OrderDelivered.model_validate_json(m)
        for m in await stream_events(first.nats_url, subjects.ORDER_DELIVERED)
    ]
    assert [d.order_id for d in delivered] == [event.order_id]
    assert delivered[0].item_count == 2
    assert delivered[0].correlation_id == event.correlation_id
    sent = [
        EmailSent.model_validate_json(m)
        for m in await stream_events(first.nats_url, subjects.EMAIL_SENT)
    ]
    assert [(s.template, s.status, s.recipient_masked) for s in sent] == [
        (domain.TEMPLATE_ORDER_COMPLETED, "sent", "c***@example.com")
    ]


async def test_crash_between_upload_and_commit_uploads_once_and_emails_once(world, mailbox_capture):
    crashes: list[str] = []

    async def die_once(order_id: str) -> None:
        if not crashes:
            crashes.append(order_id)
            raise SimulatedCrash("worker died after uploading")

    world.f.hooks.after_upload = die_once
    event = paid_event()
    await publish(world.nats_url, event)

    await wait_for(lambda: len(mailbox_capture.messages()) >= 1, timeout=30, message="email")
    await _settled(world, event.order_id)

    assert crashes == [event.order_id]  # the first attempt did die after its uploads
    assert world.s3.puts == 2  # the redelivery found the same bytes and skipped the PUTs
    assert world.s3.calls["head_object"] >= 4
    assert await world.deliveries(event.order_id) == 1
    assert len(mailbox_capture.messages()) == 1


async def test_crash_after_commit_before_email_sends_once_on_redelivery(
    make_world, mailbox_capture
):
    # The "dead" sender's claim must run out for the email to go: a short lease, but not so
    # short that it runs out before the no-email-yet check below on a slow machine.
    world = await make_world(email_claim_lease_seconds=3.0)
    crashes: list[int] = []

    async def die_once(email) -> None:
        if not crashes:
            crashes.append(email.id)
            raise SimulatedCrash("worker died before sending")

    world.f.hooks.before_send = die_once
    event = paid_event()
    await publish(world.nats_url, event)
    await wait_for(lambda: crashes, timeout=30, message="crash before send")
    # The delivery is committed and announced even though no email has left yet.
    assert await world.deliveries(event.order_id) == 1
    assert len(mailbox_capture.messages()) == 0

    # JetStream redelivers the event (the worker "died" before acking it, in real life).
    await publish(world.nats_url, event, msg_id="redelivered")
    await _settled(world, event.order_id)

    assert len(mailbox_capture.messages()) == 1
    [row] = await world.emails(event.order_id)
    assert row.attempts == 2  # the claimed attempt that died, then the lease ran out
    assert world.s3.puts == 2
    assert await world.deliveries(event.order_id) == 1
    assert len(await stream_events(world.nats_url, subjects.ORDER_DELIVERED)) == 1


async def test_email_failures_retry_with_backoff_without_holding_delivery(world, mailbox_capture):
    real = world.f.mailer
    failures: list[str] = []

    class FlakyMailer:
        async def send(self, email):
            if len(failures) < 2:
                failures.append(email.idempotency_key)
                raise ConnectionRefusedError("smtp down")
            return await real.send(email)

    world.f.mailer = FlakyMailer()
    event = paid_event()
    await publish(world.nats_url, event)

    # Delivered and announced while the mail server is still failing.
    await wait_for(lambda: world.deliveries(event.order_id), timeout=30, message="delivery")
    await _settled(world, event.order_id)

    [row] = await world.emails(event.order_id)
    assert failures == [f"{event.order_id}:order_completed"] * 2
    assert row.status == "sent"
    assert row.attempts == 3
    assert row.last_error is None
    assert len(mailbox_capture.messages()) == 1
    sent = [
        EmailSent.model_validate_json(m)
        for m in await stream_events(world.nats_url, subjects.EMAIL_SENT)
    ]
    assert [(s.status, s.attempts) for s in sent] == [("sent", 3)]


async def test_email_gives_up_after_max_attempts_and_reports_failure(make_world, mailbox_capture):
    world = await make_world(email_max_attempts=2)

    class DeadMailer:
        async def send(self, email):
            raise ConnectionRefusedError("smtp down for good")

    world.f.mailer = DeadMailer()
    event = paid_event()
    await publish(world.nats_url, event)

    async def failed() -> bool:
        rows = await world.emails(event.order_id)
        return bool(rows) and rows[0].status == "failed" and await world.outbox_settled()

    await wait_for(failed, timeout=30, message="email marked failed")
    [row] = await world.emails(event.order_id)
    assert row.attempts == 2
    assert "smtp down for good" in (row.last_error or "")
    sent = [
        EmailSent.model_validate_json(m)
        for m in await stream_events(world.nats_url, subjects.EMAIL_SENT)
    ]
    assert [(s.status, s.attempts) for s in sent] == [("failed", 2)]
    assert await world.deliveries(event.order_id) == 1  # the goods are delivered regardless
    assert mailbox_capture.messages() == []


async def test_underpaid_failed_and_expired_send_one_notice_each(world, mailbox_capture):
    from decimal import Decimal

    from shared.contracts.orders import OrderExpired, OrderFailed, OrderUnderpaid

    base = {
        "status": "x",
        "version": 2,
        "email": "dave@example.com",
        "total": Decimal("20"),
        "currency": "EUR",
    }
    underpaid = OrderUnderpaid(
        order_id="ord_under",
        actually_paid=Decimal("0.0001"),
        pay_amount=Decimal("0.00042"),
        pay_currency="btc",
        **base,
    )
    failed = OrderFailed(order_id="ord_failed", reason="provider said failed", **base)
    expired = OrderExpired(order_id="ord_expired", **base)
    for event in (underpaid, failed, expired):
        await publish(world.nats_url, event)
    # A redelivered notice with a new event id still finds its (order, template) row.
    await publish(world.nats_url, underpaid.model_copy(update={"event_id": uuid.uuid4()}))

    await wait_for(lambda: len(mailbox_capture.messages()) >= 3, timeout=30, message="notices")
    for order_id in ("ord_under", "ord_failed", "ord_expired"):
        await _settled(world, order_id)
    messages = {m["Subject"]: m for m in mailbox_capture.messages()}
    assert len(mailbox_capture.messages()) == 3
    under = messages["Your BitLoot order ord_under was underpaid"]
    body = email_parts(under)["text/plain"]
    assert "not refunded" in body
    assert "0.0001 of 0.00042 BTC" in body
    assert "support@bitloot.local" in body
    assert "Your payment for BitLoot order ord_failed failed" in messages
    assert "Your payment for BitLoot order ord_expired expired" in messages
    assert await world.count(EmailLog) == 3
    assert await world.count(Delivery) == 0


async def test_revoke_request_stops_links_and_publishes(world):
    from shared.contracts.fulfillment import GrantsRevoked, RevokeGrantsReply, RevokeGrantsRequest
    from shared.messaging.rpc import request

    event = paid_event(items=[("GAME-1", "Space Game", 1)])
    await publish(world.nats_url, event)
    await wait_for(lambda: world.deliveries(event.order_id), timeout=30, message="delivery")
    link = await world.link(event.order_id)

    reply = await request(
        world.ctx.broker,
        RevokeGrantsRequest(
            order_id=event.order_id,
            operator_id="op-7",
            reason="chargeback",
            correlation_id="corr-revoke",
        ),
        RevokeGrantsReply,
        timeout=5,
    )
    assert (reply.ok, reply.revoked) == (True, 1)
    again = await request(
        world.ctx.broker,
        RevokeGrantsRequest(order_id=event.order_id, operator_id="op-7", reason="again"),
        RevokeGrantsReply,
        timeout=5,
    )
    assert (again.ok, again.revoked) == (True, 0)
    unknown = await request(
        world.ctx.broker,
        RevokeGrantsRequest(order_id="ord_nope", operator_id="op-7", reason="x"),
        RevokeGrantsReply,
        timeout=5,
    )
    assert (unknown.ok, unknown.error_code) == (False, "unknown_order")

    await wait_for(world.outbox_settled, message="relay")
    revoked = [json.loads(m) for m in await stream_events(world.nats_url, subjects.GRANTS_REVOKED)]
    assert len(revoked) == 1
    event_out = GrantsRevoked.model_validate(revoked[0])
    assert (event_out.order_id, event_out.revoked, event_out.operator_id) == (
        event.order_id,
        1,
        "op-7",
    )
    assert event_out.correlation_id == "corr-revoke"

    async with world.client() as client:
        response = await client.get(link.removeprefix("http://fulfillment.test"))
    assert response.status_code == 403
    assert "withdrawn" in response.text


async def test_apps_build_from_the_environment_and_report_ready(
    clean_infra, s3_server, mailbox_capture, monkeypatch
):
    import httpx
    from fulfillment import main

    # DATABASE_URL, NATS_URL, S3_*, AWS_* and SMTP_URL come from the plugin's fixtures.
    monkeypatch.setenv("DOWNLOAD_TOKEN_SECRET", "env-download-secret-0123456789abcdef")
    worker = main.create_worker()
    api = main.create_api()
    async with worker.router.lifespan_context(worker), api.router.lifespan_context(api):
        for app in (worker, api):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
                ready = await client.get("/ready")
            assert ready.status_code == 200, ready.text
        assert "storage" in ready.json()["checks"]  # the api also checks the bucket
        event = paid_event(items=[("GAME-1", "Space Game", 1)])
        await publish(clean_infra.nats_url, event)
        await wait_for(
            lambda: len(mailbox_capture.messages()) == 1,
            timeout=30,
            message="email from the env-built worker",
        )
