"""Durable consumers that keep the read models current: one per subject, plus dead letters."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from shared.messaging import DeadLetter, Delivery, durable_consumer
from shared.runtime import ServiceContext

from admin.domain import durable_name
from admin.models import Inbox
from admin.projections import DEAD_LETTER_SUBJECT, PROJECTIONS, project_dead_letter


def register_subscribers(ctx: ServiceContext) -> list[Any]:
    # Projections only write the read models: events handled together share one transaction
    # (GroupCommit), which halves what each costs under load.
    projection_policy = replace(ctx.consumer_policy, group_commit=True)
    subscribers = [
        durable_consumer(
            ctx.broker,
            subject=subject,
            durable=durable_name(subject),
            event_type=projection.event_type,
            handler=projection.apply,
            session_factory=ctx.sessions,
            inbox=Inbox,
            policy=projection_policy,
            description=f"admin projects {projection.event_type.__name__} into its read models",
        )
        for subject, projection in PROJECTIONS.items()
    ]

    # A DeadLetter is a record, not an Event (no event_id for the inbox): the upsert keyed by
    # (consumer, stream_sequence) is the idempotency guard instead.
    async def on_dead_letter(letter: DeadLetter, delivery: Delivery) -> None:
        async with ctx.sessions() as session, session.begin():
            await project_dead_letter(session, letter, delivery.stream_sequence)

    subscribers.append(
        durable_consumer(
            ctx.broker,
            subject=DEAD_LETTER_SUBJECT,
            durable=durable_name(DEAD_LETTER_SUBJECT),
            event_type=DeadLetter,
            handler=on_dead_letter,
            policy=ctx.consumer_policy,
            description="admin lists dead-lettered messages",
        )
    )
    return subscribers
