"""OrderRefunded through real JetStream: links stop, one honest email, nothing delivered later."""

from __future__ import annotations

import uuid

import nats
from fulfillment import domain
from fulfillment.models import Delivery, DownloadGrant, Inbox
from fulfillment.subscribers import DURABLE_PAID, DURABLE_REFUNDED
from shared.contracts import subjects
from shared.contracts.fulfillment import EmailSent, GrantsRevoked
from shared.testing import wait_for

from ..conftest import email_parts, paid_event, publish, refunded_event, stream_events


async def _handled(world, durable: str, distinct_events: int) -> None:
    """Every distinct event recorded in the inbox and nothing left in flight for the durable."""

    async def inboxed() -> bool:
        return await world.count(Inbox, Inbox.consumer == durable) >= distinct_events

    async def drained() -> bool:
        nc = await nats.connect(world.nats_url)
        try:
            info = await nc.jetstream().consumer_info("ORDERS", durable)
            return info.num_ack_pending == 0 and info.num_pending == 0
        finally:
            await nc.close()

    await wait_for(inboxed, timeout=30, message=f"{distinct_events} events handled by {durable}")
    await wait_for(drained, timeout=30, message=f"{durable} drained")
    await wait_for(world.outbox_settled, timeout=30, message="outbox relayed")


async def _emails_sent(world, order_id: str, templates: list[str]) -> None:
    async def done() -> bool:
        rows = await world.emails(order_id)
        return [r.template for r in rows] == templates and all(r.status == "sent" for r in rows)

    await wait_for(done, timeout=30, message=f"emails {templates} sent")
    await wait_for(world.outbox_settled, timeout=30, message="outbox relayed")


async def test_refund_after_delivery_revokes_the_links_and_emails_once(world, mailbox_capture):
    paid = paid_event(items=[("GAME-1", "Space Game", 1)])
    await publish(world.nats_url, paid)
    await _emails_sent(world, paid.order_id, [domain.TEMPLATE_ORDER_COMPLETED])
    link = (await world.link(paid.order_id)).removeprefix("http://fulfillment.test")
    async with world.client() as client:
        assert (await client.get(link)).status_code == 302  # the link works before

    refund = refunded_event(paid)
    await publish(world.nats_url, refund)
    await publish(world.nats_url, refund, msg_id=f"again-{refund.event_id}")  # redelivered
    republished = refund.model_copy(update={"event_id": uuid.uuid4()})  # orders republished
    await publish(world.nats_url, republished)
    await _handled(world, DURABLE_REFUNDED, 2)
    await _emails_sent(
        world, paid.order_id, [domain.TEMPLATE_ORDER_COMPLETED, domain.TEMPLATE_PAYMENT_REFUNDED]
    )

    [grant] = await world.grants(paid.order_id)
    assert grant.revoked_at is not None and grant.revoked_reason == domain.REFUND_REASON
    assert await world.count(Delivery, Delivery.revoked_at.is_not(None)) == 1
    revoked = [
        GrantsRevoked.model_validate_json(m)
        for m in await stream_events(world.nats_url, subjects.GRANTS_REVOKED)
    ]
    assert [(r.order_id, r.revoked, r.operator_id) for r in revoked] == [
        (paid.order_id, 1, domain.REFUND_OPERATOR)
    ]
    assert revoked[0].causation_id == str(refund.event_id)
    assert revoked[0].correlation_id == paid.correlation_id

    messages = {m["Subject"]: m for m in mailbox_capture.messages()}
    assert len(mailbox_capture.messages()) == 2
    assert f"Your BitLoot order {paid.order_id} is ready" in messages
    body = email_parts(messages[f"Your payment for BitLoot order {paid.order_id} was refunded"])[
        "text/plain"
    ]
    assert "was refunded" in body and "download link we sent you" in body
    assert "no longer works" in body and "/downloads/" not in body
    sent = [
        EmailSent.model_validate_json(m)
        for m in await stream_events(world.nats_url, subjects.EMAIL_SENT)
    ]
    assert sorted((s.template, s.status) for s in sent) == [
        (domain.TEMPLATE_ORDER_COMPLETED, "sent"),
        (domain.TEMPLATE_PAYMENT_REFUNDED, "sent"),
    ]

    async with world.client() as client:
        response = await client.get(link)
        assert response.status_code == 403
        assert "payment for this order was refunded" in response.text
        # no new link for a refunded order, whatever the form says
        reissue = await client.post(
            "/downloads/reissue", json={"order_id": paid.order_id, "email": paid.email}
        )
        assert reissue.status_code == 202
    # a late OrderPaid (republished by orders) delivers nothing again
    await publish(world.nats_url, paid.model_copy(update={"event_id": uuid.uuid4()}))
    await _handled(world, DURABLE_PAID, 2)
    assert await world.count(DownloadGrant) == 1
    assert await world.deliveries(paid.order_id) == 1
    assert len(mailbox_capture.messages()) == 2
    assert len(await stream_events(world.nats_url, subjects.ORDER_DELIVERED)) == 1


async def test_refund_handled_before_the_payment_means_nothing_is_ever_delivered(
    world, mailbox_capture
):
    paid = paid_event()
    await publish(world.nats_url, refunded_event(paid, previous_status="paid"))
    await _handled(world, DURABLE_REFUNDED, 1)
    await publish(world.nats_url, paid)
    await _handled(world, DURABLE_PAID, 1)
    await _emails_sent(world, paid.order_id, [domain.TEMPLATE_PAYMENT_REFUNDED])

    assert await world.deliveries(paid.order_id) == 0
    assert world.s3.puts == 0 and world.object_keys(paid.order_id) == []
    assert await world.count(DownloadGrant) == 0
    assert await stream_events(world.nats_url, subjects.ORDER_DELIVERED) == []
    assert await stream_events(world.nats_url, subjects.GRANTS_REVOKED) == []
    [message] = mailbox_capture.messages()
    body = email_parts(message)["text/plain"]
    assert "was refunded" in body and "Nothing was delivered" in body
    assert "no longer works" not in body
