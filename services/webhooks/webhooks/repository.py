"""Every query of the webhooks service.

The IPN hot path runs as ONE SQL statement on a raw asyncpg connection: a data-modifying CTE
upserts ``webhook_log``, inserts the outbox row only when the log row is new, and NOTIFYs the
relay. A single statement is its own transaction, so the log row and its event commit together
in one round trip — the provider waits at most ~3 s and we answer in milliseconds. The worker
side (replays, pruning) is not hot and uses SQLAlchemy sessions like every other service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
from shared.contracts.envelope import Event
from shared.db import DatabaseUnavailableError
from shared.messaging.outbox import asyncpg_dsn, notify_channel
from shared.observability import CORRELATION_HEADER, get_logger
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from webhooks.models import SCHEMA, WebhookFailure, WebhookLog

log = get_logger(__name__)

T = TypeVar("T")

_CHANNEL = notify_channel(SCHEMA)


@dataclass(frozen=True, slots=True)
class StagedEvent:
    """An event serialised for the outbox, minus one integer field the database fills in.

    The event must carry the id of the row the same statement inserts; rather than a second
    round trip, the payload is split around that field and the statement splices the id in.
    """

    event_id: uuid.UUID
    subject: str
    head: bytes
    tail: bytes
    headers_json: str


def stage_event(event: Event, id_field: str) -> StagedEvent:
    """``event`` must have ``id_field == 0``; its first occurrence is the envelope's own field
    (pydantic writes fields in declaration order, before any nested payload)."""
    payload = event.model_dump_json().encode()
    marker = f'"{id_field}":0'.encode()
    head, found, tail = payload.partition(marker)
    if not found:
        raise ValueError(f"{type(event).__name__} has no {id_field}=0 to fill in")
    headers = {
        "Nats-Msg-Id": str(event.event_id),
        CORRELATION_HEADER: event.correlation_id,
        "Content-Type": "application/json",
    }
    return StagedEvent(
        event_id=event.event_id,
        subject=event.SUBJECT,
        head=head + f'"{id_field}":'.encode(),
        tail=tail,
        headers_json=json.dumps(headers),
    )


@dataclass(frozen=True, slots=True)
class LogRow:
    provider: str
    dedup_key: str
    payment_id: str
    invoice_id: str | None
    order_id: str | None
    payment_status: str
    actually_paid: Decimal | None
    provider_updated_at: int | None
    signature: str
    verified_by: str
    raw_body: bytes
    headers: dict[str, str]
    source_ip: str | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class FailureRow:
    provider: str
    reason: str
    detail: str
    headers: dict[str, str]
    body_excerpt: bytes
    body_size: int
    source_ip: str | None
    dropped_before: int
    received_at: datetime


@dataclass(frozen=True, slots=True)
class IngestResult:
    log_id: int
    inserted: bool
    received_count: int
    event_id: uuid.UUID | None  # the event staged by this call (None for a duplicate)


def _outbox_insert(*, ev: int, subj: int, head: int, tail: int, hdrs: int, src: str) -> str:
    """INSERT ... SELECT of one outbox row per row of CTE ``src``, its id spliced in."""
    # Built from constants at import time; every value travels as a bind parameter.
    return f"""
    INSERT INTO {SCHEMA}.outbox (event_id, subject, payload, headers)
    SELECT ${ev}, ${subj}::text,
           ${head}::bytea || convert_to({src}.id::text, 'UTF8') || ${tail}::bytea, ${hdrs}::jsonb
    FROM {src}"""  # noqa: S608


# (xmax = 0) is true only for a row this statement inserted: an ON CONFLICT update leaves the
# updating transaction's id in xmax. Concurrent duplicates queue on the row lock, so exactly one
# of them inserts and the others bump the counter after it commits.
INGEST_SQL = f"""
WITH ins AS (
    INSERT INTO {SCHEMA}.webhook_log AS w (
        provider, dedup_key, payment_id, invoice_id, order_id, payment_status, actually_paid,
        provider_updated_at, signature, verified_by, raw_body, headers, source_ip, event_id,
        received_at, last_received_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $14, $15, $15)
    ON CONFLICT (dedup_key) DO UPDATE
        SET received_count = w.received_count + 1, last_received_at = EXCLUDED.last_received_at
    RETURNING w.id, (w.xmax = 0) AS inserted, w.received_count
), queued AS ({_outbox_insert(ev=14, subj=16, head=17, tail=18, hdrs=19, src="ins")}
    WHERE ins.inserted
    RETURNING 1
)
SELECT ins.id, ins.inserted, ins.received_count,
       (SELECT count(pg_notify('{_CHANNEL}', '')) FROM queued) AS notified
FROM ins
"""  # noqa: S608

FAILURE_SQL = f"""
WITH f AS (
    INSERT INTO {SCHEMA}.webhook_failure (
        provider, reason, detail, headers, body_excerpt, body_size, source_ip, event_id,
        dropped_before, received_at)
    VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10)
    RETURNING id
), queued AS ({_outbox_insert(ev=8, subj=11, head=12, tail=13, hdrs=14, src="f")}
    RETURNING 1
)
SELECT f.id, (SELECT count(pg_notify('{_CHANNEL}', '')) FROM queued) AS notified
FROM f
"""  # noqa: S608


def _connection_lost(exc: BaseException) -> bool:
    """The connection died under us (backend terminated, server restarted): a fresh one may work."""
    # InternalClientError: the server's goodbye arrived while we were starting a query on the
    # connection (a race right after pg_terminate_backend or a restart).
    return isinstance(
        exc,
        asyncpg.ConnectionDoesNotExistError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | asyncpg.exceptions.AdminShutdownError
        | ConnectionResetError,
    )


def _unavailable(exc: BaseException) -> bool:
    return _connection_lost(exc) or isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.PostgresConnectionError
        | asyncpg.exceptions.OperatorInterventionError
        | asyncpg.exceptions.InsufficientResourcesError
        | asyncpg.exceptions.ReadOnlySQLTransactionError,
    )


async def _keep_session(_: asyncpg.Connection) -> None:
    """Pool release hook: we never change session state, so skip asyncpg's reset query (it
    would cost a round trip per request)."""


class IpnStore:
    """The api's own small asyncpg pool. Lazy: the api starts (and answers 503) without a DB."""

    def __init__(
        self,
        database_url: str,
        *,
        pool_size: int = 10,
        timeout: float = 2.5,
        application_name: str = "webhooks-api",
    ) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._pool_size = pool_size
        self._timeout = timeout
        self._application_name = application_name
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                # min_size=0: creating the pool opens no connection, so it cannot fail on a
                # database that is down; each acquire connects as needed.
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=0,
                    max_size=self._pool_size,
                    timeout=self._timeout,
                    command_timeout=self._timeout,
                    reset=_keep_session,
                    server_settings={"application_name": self._application_name},
                )
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), timeout=5)

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work`` on a pooled connection; connection faults become
        DatabaseUnavailableError. A connection that died under us is retried once on a fresh
        one (all statements here are idempotent upserts or capped inserts)."""
        for attempt in (1, 2):
            try:
                pool = await self._get_pool()
                async with pool.acquire(timeout=self._timeout) as conn:
                    return await work(conn)
            except Exception as exc:
                if attempt == 1 and _connection_lost(exc) and self._pool is not None:
                    # Every pooled connection is probably as dead (the server restarted).
                    await self._pool.expire_connections()
                    continue
                if _unavailable(exc):
                    raise DatabaseUnavailableError(type(exc).__name__) from exc
                raise
        raise AssertionError("unreachable")

    async def ping(self) -> None:
        async def select_one(conn: asyncpg.Connection) -> Any:
            return await conn.fetchval("SELECT 1")

        await self._run(select_one)

    async def ingest(self, row: LogRow, staged: StagedEvent) -> IngestResult:
        async def upsert(conn: asyncpg.Connection) -> asyncpg.Record | None:
            return await conn.fetchrow(
                INGEST_SQL,
                row.provider,
                row.dedup_key,
                row.payment_id,
                row.invoice_id,
                row.order_id,
                row.payment_status,
                row.actually_paid,
                row.provider_updated_at,
                row.signature,
                row.verified_by,
                row.raw_body,
                json.dumps(row.headers),
                row.source_ip,
                staged.event_id,
                row.received_at,
                staged.subject,
                staged.head,
                staged.tail,
                staged.headers_json,
            )

        record = await self._run(upsert)
        assert record is not None  # an upsert always returns its row
        inserted = bool(record["inserted"])
        return IngestResult(
            log_id=int(record["id"]),
            inserted=inserted,
            received_count=int(record["received_count"]),
            event_id=staged.event_id if inserted else None,
        )

    async def record_failure(self, row: FailureRow, staged: StagedEvent) -> int:
        async def insert(conn: asyncpg.Connection) -> Any:
            return await conn.fetchval(
                FAILURE_SQL,
                row.provider,
                row.reason,
                row.detail,
                json.dumps(row.headers),
                row.body_excerpt,
                row.body_size,
                row.source_ip,
                staged.event_id,
                row.dropped_before,
                row.received_at,
                staged.subject,
                staged.head,
                staged.tail,
                staged.headers_json,
            )

        return int(await self._run(insert))


# --------------------------------------------------------------------------------------------
# Worker side (SQLAlchemy sessions; the caller owns the transaction)


async def get_log(session: AsyncSession, log_id: int) -> WebhookLog | None:
    return await session.get(WebhookLog, log_id)


async def mark_replayed(session: AsyncSession, log_id: int) -> None:
    await session.execute(
        update(WebhookLog)
        .where(WebhookLog.id == log_id)
        .values(replay_count=WebhookLog.replay_count + 1, last_replayed_at=func.now())
    )


async def prune_failures(session: AsyncSession, keep: int) -> int:
    """Keep only the newest ``keep`` rejection rows (ids are increasing; an index scan)."""
    newest = await session.scalar(select(func.max(WebhookFailure.id)))
    if newest is None or newest <= keep:
        return 0
    result = await session.execute(delete(WebhookFailure).where(WebhookFailure.id <= newest - keep))
    return int(getattr(result, "rowcount", 0) or 0)
