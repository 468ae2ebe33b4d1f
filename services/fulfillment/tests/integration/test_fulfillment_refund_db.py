"""The refund use case against the real schema: a link email still queued is not sent, and a
republished refund changes nothing."""

from __future__ import annotations

import uuid

from fulfillment import domain, service
from fulfillment.models import Outbox, Refund
from sqlalchemy import select

from ..conftest import paid_event, refunded_event


async def _withdraw(world, event) -> service.RefundOutcome:
    async with world.ctx.sessions() as session, session.begin():
        return await service.withdraw_refunded_order(session, event)


async def _outbox_subjects(world) -> list[str]:
    async with world.ctx.sessions() as session:
        return list((await session.scalars(select(Outbox.subject).order_by(Outbox.id))).all())


async def test_refund_cancels_an_unsent_link_email_and_is_done_once(make_world):
    world = await make_world(worker=False)  # no dispatcher: the link email stays queued
    paid = paid_event()
    await world.deliver(paid)
    [completed] = await world.emails(paid.order_id)
    assert (completed.template, completed.status) == (domain.TEMPLATE_ORDER_COMPLETED, "pending")

    refund = refunded_event(paid)
    outcome = await _withdraw(world, refund)
    assert (outcome.first, outcome.delivered, outcome.revoked, outcome.cancelled_emails) == (
        True,
        True,
        1,
        1,
    )
    completed, refunded = await world.emails(paid.order_id)
    assert (completed.status, completed.last_error) == (
        "failed",
        "cancelled: the payment was refunded",
    )
    assert (refunded.template, refunded.status) == (domain.TEMPLATE_PAYMENT_REFUNDED, "pending")
    assert refunded.context == {"delivered": True}
    subjects_before = await _outbox_subjects(world)
    assert subjects_before.count("fulfillment.grants_revoked.v1") == 1
    assert subjects_before.count("fulfillment.email_sent.v1") == 1  # the cancelled one, failed

    again = await _withdraw(world, refund.model_copy(update={"event_id": uuid.uuid4()}))
    assert (again.first, again.revoked, again.cancelled_emails) == (False, 0, 0)
    assert len(await world.emails(paid.order_id)) == 2
    assert await _outbox_subjects(world) == subjects_before
    assert await world.count(Refund) == 1
    # and a late OrderPaid finds the delivery: nothing new is minted
    await world.deliver(paid.model_copy(update={"event_id": uuid.uuid4()}))
    assert len(await world.grants(paid.order_id)) == 1
