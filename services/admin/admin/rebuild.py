"""Rebuild every read model from the streams: truncate, then replay each stream from its start.

Streams keep events without an age limit (``shared.messaging.broker.stream_config``: limits
retention, ``max_age=0``), so a replay sees the whole history. The replay uses an ephemeral
consumer per stream (DeliverPolicy.ALL, deleted afterwards) and the same projection functions
as the live consumers; because those are idempotent and keep the newest version, a worker that
keeps projecting new events while the rebuild runs cannot make the result wrong.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from pydantic import ValidationError
from shared.contracts.streams import DEAD_LETTER_STREAM, STREAMS, StreamSpec
from shared.messaging import DeadLetter, Delivery
from shared.observability import get_logger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from admin import repository as repo
from admin.projections import PROJECTIONS, project_dead_letter

log = get_logger(__name__)


@dataclass
class StreamReport:
    applied: int = 0
    skipped: int = 0  # unknown subjects or bodies that do not parse (they were dead-lettered)


@dataclass
class RebuildReport:
    streams: dict[str, StreamReport] = field(default_factory=dict)

    @property
    def applied(self) -> int:
        return sum(r.applied for r in self.streams.values())


async def rebuild(
    sessions: async_sessionmaker[AsyncSession], js: JetStreamContext, *, batch_size: int = 500
) -> RebuildReport:
    async with sessions() as session, session.begin():
        await repo.truncate_read_models(session)
    report = RebuildReport()
    for spec in (*STREAMS, DEAD_LETTER_STREAM):
        report.streams[spec.name] = await _replay(sessions, js, spec, batch_size)
        log.info("rebuild_stream_done", stream=spec.name, applied=report.streams[spec.name].applied)
    return report


async def _replay(
    sessions: async_sessionmaker[AsyncSession],
    js: JetStreamContext,
    spec: StreamSpec,
    batch_size: int,
) -> StreamReport:
    report = StreamReport()
    info = await js.stream_info(spec.name)
    last = info.state.last_seq
    if not info.state.messages:
        return report
    name = f"admin-rebuild-{uuid.uuid4().hex[:12]}"
    await js.add_consumer(
        spec.name,
        config=ConsumerConfig(
            name=name,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,  # read-only pass; nothing to redeliver
            filter_subjects=list(spec.subjects),
            inactive_threshold=60.0,
            mem_storage=True,
        ),
    )
    sub = await js.pull_subscribe_bind(stream=spec.name, name=name)
    try:
        seen = 0
        while seen < last:
            try:
                msgs = await sub.fetch(batch_size, timeout=2.0)
            except (TimeoutError, nats.errors.TimeoutError):
                # The end only if the consumer has nothing left: the rest of the range holds
                # other subjects, or was deleted or purged. Otherwise the server was slow, and
                # stopping here would leave the read models silently incomplete.
                if (await sub.consumer_info()).num_pending == 0:
                    break
                continue
            async with sessions() as session, session.begin():
                for msg in msgs:
                    seen = msg.metadata.sequence.stream
                    applied = await _apply(
                        session, msg.subject, msg.data, seen, dict(msg.headers or {})
                    )
                    if applied:
                        report.applied += 1
                    else:
                        report.skipped += 1
    finally:
        await sub.unsubscribe()
        try:
            await js.delete_consumer(spec.name, name)
        except Exception:  # inactive_threshold removes it anyway
            log.debug("rebuild_consumer_cleanup_failed", stream=spec.name)
    return report


async def _apply(
    session: AsyncSession, subject: str, data: bytes, seq: int, headers: dict[str, str]
) -> bool:
    if subject.startswith("deadletter."):
        try:
            letter = DeadLetter.model_validate_json(data)
        except ValidationError:
            return False
        await project_dead_letter(session, letter, seq)
        return True
    projection = PROJECTIONS.get(subject)
    if projection is None:
        return False
    try:
        event = projection.event_type.model_validate_json(data)
    except ValidationError:
        return False
    await projection.apply(session, event, Delivery(subject, 1, seq, headers))
    return True
