"""Durable JetStream consumers with one retry policy for the whole system.

Every consumer is a durable pull consumer with explicit (manual) acks:
- success → ack;
- ``NotYetVisibleError`` (the row this event refers to is not committed yet) → NAK with the
  requested delay; it has its own, longer budget because waiting is the right answer;
- a connection fault (the database, the provider, S3 or SMTP unreachable) → NAK with the next
  backoff step, with its own, longer budget (``outage_max_deliveries``): an outage is not the
  message's fault, and everything in flight would otherwise be dead-lettered by one that
  outlasts the short budget;
- any other failure → NAK with the next backoff step, until ``max_deliveries``; then the message
  is copied to the ``DEADLETTER`` stream (with the error) and acked, so it stops blocking but is
  never lost — the admin console lists it;
- a body that does not parse is dead-lettered at once: no retry can fix it.

With ``session_factory`` and ``inbox`` the handler runs inside one transaction that also records
the event id in the inbox, so a redelivered or concurrently duplicated event is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.contracts.streams import DEAD_LETTER_STREAM, dead_letter_subject, stream_for_subject
from shared.db import is_connection_error
from shared.messaging.inbox import claim_event
from shared.observability import CORRELATION_HEADER, bind_correlation_id, get_logger

log = get_logger(__name__)

E = TypeVar("E", bound=BaseModel)

HANDLED = Counter("consumer_messages_total", "Messages handled by outcome", ["consumer", "outcome"])
HANDLE_SECONDS = Histogram(
    "consumer_handle_seconds",
    "Handler time per message",
    ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


GROUP_SIZE = Histogram(
    "consumer_group_commit_size",
    "Messages committed together by a group-commit consumer",
    ["consumer"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)


class NotYetVisibleError(Exception):
    """The event refers to state that is not committed yet: retry later, never drop."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class ConsumerPolicy:
    max_deliveries: int = 5
    backoff: Sequence[float] = (0.2, 1.0, 5.0, 15.0)
    not_visible_max_deliveries: int = 60
    # With the backoff capped at 15 s, 60 deliveries bridge an outage of about a quarter of an
    # hour before the message is dead-lettered (and kept) instead.
    outage_max_deliveries: int = 60
    ack_wait_seconds: float = 30.0
    # Messages handled at once per process. Handlers are idempotent and lock the rows they
    # change, so order across messages is not relied on (DESIGN §3: reordering is normal).
    concurrency: int = 8
    # Transactional consumers only: messages handled at the same moment share one transaction
    # (one BEGIN, one COMMIT, one WAL flush) instead of one each — see GroupCommit. For handlers
    # that only touch the database (projections); a handler that waits on the network would
    # hold everyone's transaction.
    group_commit: bool = False

    def delay_for(self, attempt: int) -> float:
        if not self.backoff:
            return 1.0
        return float(self.backoff[min(attempt - 1, len(self.backoff) - 1)])


@dataclass(frozen=True)
class Delivery:
    subject: str
    attempt: int
    stream_sequence: int
    headers: dict[str, str] = field(default_factory=dict)


class DeadLetter(BaseModel):
    """What the DEADLETTER stream stores: enough to see why, and the body to replay."""

    consumer: str
    original_subject: str
    stream_sequence: int
    deliveries: int
    error: str
    event_id: str | None = None
    body: str
    dead_lettered_at: datetime


Handler = Callable[[E, Delivery], Awaitable[None]]
TxHandler = Callable[[AsyncSession, E, Delivery], Awaitable[None]]


def current_message(broker: NatsBroker) -> NatsMessage:
    """The message being handled, from FastStream's context (set around every handler call)."""
    msg: NatsMessage = broker.context.get_local("message")
    return msg


def _metadata(msg: NatsMessage) -> tuple[int, int]:
    try:
        meta = msg.raw_message.metadata
        return int(meta.num_delivered), int(meta.sequence.stream)
    except Exception:  # core NATS message in tests: first delivery
        return 1, 0


async def _dead_letter(
    broker: NatsBroker,
    *,
    consumer: str,
    subject: str,
    body: bytes,
    attempt: int,
    seq: int,
    error: str,
    event_id: str | None,
) -> None:
    letter = DeadLetter(
        consumer=consumer,
        original_subject=subject,
        stream_sequence=seq,
        deliveries=attempt,
        error=error[:2000],
        event_id=event_id,
        body=body.decode("utf-8", "replace")[:65536],
        dead_lettered_at=datetime.now(UTC),
    )
    await broker.publish(
        letter.model_dump_json().encode(),
        subject=dead_letter_subject(consumer),
        stream=DEAD_LETTER_STREAM.name,
        headers={"Nats-Msg-Id": f"dl:{consumer}:{seq}:{event_id}"},
        timeout=5.0,
    )


class _RunAlone(Exception):
    """The shared transaction failed: each message is retried in a transaction of its own."""


@dataclass
class _Queued:
    event: Any
    delivery: Delivery
    event_id: uuid.UUID
    done: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit:
    """One transaction for the messages of one consumer that are handled at the same moment.

    Every handler call queues its message and waits for the consumer's single slot; whoever
    gets the slot runs everything queued so far — inbox claim and handler for each, in order —
    and commits once. Under load a fetched batch (up to ``concurrency`` messages) becomes one
    transaction; alone, a message is committed at once. If anything in the shared transaction
    fails, it is rolled back and every message in it is retried alone, in its own transaction,
    with the usual NAK / backoff / dead-letter handling — so one bad message costs its
    neighbours a retry, never their effect.
    """

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        inbox: Any,
        *,
        consumer: str,
        subject: str,
        handler: TxHandler[Any],
        max_batch: int = 64,
    ) -> None:
        self._sessions = session_factory
        self._inbox = inbox
        self._consumer = consumer
        self._subject = subject
        self._handler = handler
        self._max_batch = max_batch
        self._queue: list[_Queued] = []
        self._slot = asyncio.Semaphore(1)

    async def submit(self, event: Any, delivery: Delivery, event_id: uuid.UUID) -> bool:
        """True if this commit applied the event, False if it was a duplicate; raises
        ``_RunAlone`` when the shared transaction failed."""
        item = _Queued(event, delivery, event_id)
        self._queue.append(item)
        async with self._slot:
            if not item.done.done():
                # One pass of the event loop: messages dispatched together join this batch.
                await asyncio.sleep(0)
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._commit(batch)
        return await item.done

    async def _commit(self, batch: list[_Queued]) -> None:
        applied: list[bool] = []
        try:
            async with self._sessions() as session, session.begin():
                for item in batch:
                    applied.append(
                        await _claim_and_handle(
                            session,
                            self._inbox,
                            self._consumer,
                            self._subject,
                            self._handler,
                            item.event,
                            item.delivery,
                            item.event_id,
                        )
                    )
        except BaseException as exc:
            # Failed, or cancelled at shutdown: nobody may wait forever for this batch.
            for item in batch:
                item.done.set_exception(_RunAlone(repr(exc)[:300]))
            if not isinstance(exc, Exception):
                raise
            return
        GROUP_SIZE.labels(self._consumer).observe(len(batch))
        for item, first in zip(batch, applied, strict=True):
            item.done.set_result(first)


async def _claim_and_handle(
    session: AsyncSession,
    inbox: Any,
    consumer: str,
    subject: str,
    handler: TxHandler[Any],
    event: Any,
    delivery: Delivery,
    event_id: uuid.UUID,
) -> bool:
    """Record the event in the inbox and, the first time only, apply it; True if applied."""
    first = await claim_event(session, inbox, consumer=consumer, event_id=event_id, subject=subject)
    if first:
        await handler(session, event, delivery)
    return first


def durable_consumer(
    broker: NatsBroker,
    *,
    subject: str,
    durable: str,
    event_type: type[E],
    handler: Handler[E] | TxHandler[E],
    policy: ConsumerPolicy | None = None,
    session_factory: async_sessionmaker[AsyncSession] | None = None,
    inbox: Any = None,
    description: str | None = None,
) -> Any:
    """Register a durable pull consumer of ``subject`` on ``broker`` and return the subscriber.

    ``durable`` names the consumer; replicas of one service share it and split the messages.
    """
    pol = policy or ConsumerPolicy()
    transactional = session_factory is not None
    if transactional and inbox is None:
        raise ValueError("a transactional consumer needs the service's inbox model")
    hard_cap = max(pol.max_deliveries, pol.not_visible_max_deliveries, pol.outage_max_deliveries)
    stream = stream_for_subject(subject)  # "deadletter.>" maps to the DEADLETTER stream
    group = (
        GroupCommit(
            session_factory,
            inbox,
            consumer=durable,
            subject=subject,
            handler=handler,  # type: ignore[arg-type]
        )
        if transactional and pol.group_commit and session_factory is not None
        else None
    )

    subscriber = broker.subscriber(
        subject,
        stream=JStream(stream, declare=False),
        durable=durable,
        pull_sub=PullSub(batch_size=max(1, pol.concurrency), timeout=5.0),
        max_workers=max(1, pol.concurrency),
        ack_policy=AckPolicy.MANUAL,
        config=ConsumerConfig(
            durable_name=durable,
            ack_policy=JsAckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=pol.ack_wait_seconds,
            max_deliver=hard_cap + 1,  # the wrapper dead-letters first; this bounds crash loops
            filter_subject=subject,
            max_ack_pending=1000,
        ),
        title=f"{durable}:{subject}",
        description=description or f"{durable} consumes {event_type.__name__}",
    )

    # No parameters at all: FastStream would decode and validate a body parameter before us (a
    # body it rejects would never reach the dead-letter logic below), and an injected
    # ``NatsMessage`` parameter is resolved by a synchronous function that fast-depends runs in a
    # worker thread — a thread hop per message. The message is in the broker's context instead.
    async def handle() -> None:
        msg: NatsMessage = current_message(broker)
        body: bytes = msg.body
        attempt, seq = _metadata(msg)
        raw_headers = msg.headers or {}
        headers = {str(k): str(v) for k, v in raw_headers.items()}
        structlog.contextvars.clear_contextvars()
        bind_correlation_id(headers.get(CORRELATION_HEADER))
        structlog.contextvars.bind_contextvars(consumer=durable, subject=subject, attempt=attempt)
        started = time.perf_counter()

        try:
            event = event_type.model_validate_json(body)
        except ValidationError as exc:
            log.error("consumer_poison_message", error=str(exc)[:500])
            await _dead_letter(
                broker,
                consumer=durable,
                subject=subject,
                body=body,
                attempt=attempt,
                seq=seq,
                error=f"invalid body: {exc}",
                event_id=headers.get("Nats-Msg-Id"),
            )
            await msg.ack()
            HANDLED.labels(durable, "poison").inc()
            return
        # Events carry an envelope; a few streams (dead letters) carry plain records.
        event_id: uuid.UUID | None = getattr(event, "event_id", None)
        if cid := getattr(event, "correlation_id", None):
            bind_correlation_id(cid)
        structlog.contextvars.bind_contextvars(event_id=str(event_id))
        delivery = Delivery(subject=subject, attempt=attempt, stream_sequence=seq, headers=headers)

        try:
            if transactional:
                assert session_factory is not None
                if event_id is None:
                    raise TypeError(f"{event_type.__name__} has no event_id for the inbox")
                first_time: bool | None = None
                if group is not None:
                    with contextlib.suppress(_RunAlone):
                        first_time = await group.submit(event, delivery, event_id)
                if first_time is None:  # no group, or its shared transaction failed
                    async with session_factory() as session, session.begin():
                        first_time = await _claim_and_handle(
                            session,
                            inbox,
                            durable,
                            subject,
                            handler,  # type: ignore[arg-type]
                            event,
                            delivery,
                            event_id,
                        )
                if not first_time:
                    HANDLED.labels(durable, "duplicate").inc()
            else:
                await handler(event, delivery)  # type: ignore[call-arg,arg-type]
        except NotYetVisibleError as exc:
            if attempt >= pol.not_visible_max_deliveries:
                await _give_up(broker, msg, durable, subject, body, attempt, seq, exc, event_id)
                return
            log.info("consumer_not_yet_visible", reason=str(exc), retry_after=exc.retry_after)
            await msg.nack(delay=exc.retry_after)
            HANDLED.labels(durable, "not_yet_visible").inc()
            return
        except Exception as exc:
            outage = is_connection_error(exc)
            budget = pol.outage_max_deliveries if outage else pol.max_deliveries
            if attempt >= budget:
                await _give_up(broker, msg, durable, subject, body, attempt, seq, exc, event_id)
                return
            delay = pol.delay_for(attempt)
            log.warning("consumer_retry", error=repr(exc)[:300], retry_in=delay, outage=outage)
            await msg.nack(delay=delay)
            HANDLED.labels(durable, "retry").inc()
            return
        await msg.ack()
        HANDLED.labels(durable, "ok").inc()
        HANDLE_SECONDS.labels(durable).observe(time.perf_counter() - started)

    subscriber(handle)
    return subscriber


async def _give_up(
    broker: NatsBroker,
    msg: NatsMessage,
    durable: str,
    subject: str,
    body: bytes,
    attempt: int,
    seq: int,
    exc: BaseException,
    event_id: uuid.UUID | None,
) -> None:
    log.error("consumer_dead_lettered", error=repr(exc)[:500], deliveries=attempt)
    try:
        await _dead_letter(
            broker,
            consumer=durable,
            subject=subject,
            body=body,
            attempt=attempt,
            seq=seq,
            error=repr(exc),
            event_id=str(event_id) if event_id else None,
        )
    except Exception:
        # Cannot park it: leave it to redelivery rather than acking it into oblivion.
        await msg.nack(delay=5.0)
        HANDLED.labels(durable, "dead_letter_failed").inc()
        return
    await msg.ack()
    HANDLED.labels(durable, "dead_lettered").inc()
