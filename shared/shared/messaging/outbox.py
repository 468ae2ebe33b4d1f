"""Transactional outbox: the state change and the event commit together, a relay publishes.

Write side: ``add_to_outbox`` inserts the event in the caller's transaction; once it commits,
the ``OutboxWaker`` wakes the relays (see its docstring for why not a NOTIFY inside the
transaction) — so a relay wakes within a millisecond of the commit instead of on its next poll.
A periodic sweep remains the safety net for a missed wake-up (listener reconnecting, restarts).

Relay: claims pending rows with ``FOR UPDATE SKIP LOCKED`` (several replicas split the rows,
never share one), publishes them to JetStream with ``Nats-Msg-Id = event_id`` and awaits every
PubAck, then marks them sent in the same transaction. A crash between publish and mark leaves the
row pending; it is re-published and JetStream's duplicate window drops the copy.

We evaluated ``faststream-outbox`` (0.19) and found it sound (SKIP LOCKED claims, NOTIFY on
insert), but it is a second FastStream broker whose relay handles one row per subscriber call and
re-publishes through a decorator; we want batch publishing with concurrent PubAcks, the event id
as ``Nats-Msg-Id`` and our own crash tests, in ~250 lines we own (docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import (
    BigInteger,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    func,
    select,
    text,
)
from sqlalchemy import event as event_api
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, Session, declared_attr, mapped_column

from shared.contracts.envelope import Event
from shared.db import is_connection_error
from shared.observability import CORRELATION_HEADER, get_logger

log = get_logger(__name__)

PUBLISHED = Counter("outbox_published_total", "Outbox events published and acked", ["relay"])
PUBLISH_ERRORS = Counter("outbox_publish_errors_total", "Failed outbox publishes", ["relay"])
PENDING_AGE = Gauge(
    "outbox_oldest_pending_seconds", "Age of the oldest unpublished outbox row", ["relay"]
)
BATCH_SECONDS = Histogram(
    "outbox_batch_seconds",
    "Time to publish and mark one outbox batch",
    ["relay"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

Publish = Callable[[str, bytes, dict[str, str]], Awaitable[None]]


class OutboxMixin:
    """Columns of a service's ``outbox`` table."""

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    subject: Mapped[str] = mapped_column(String(200))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        # Only pending rows are indexed: the relay's scan stays tiny however large history grows.
        return (
            Index(
                f"ix_{cls.__tablename__}_pending",  # type: ignore[attr-defined]
                "id",
                postgresql_where=text("sent_at IS NULL"),
            ),
        )


def notify_channel(schema: str) -> str:
    return f"bitloot_outbox_{schema}"


def _table(outbox: Any) -> Table:
    table: Table = outbox.__table__
    return table


def event_headers(event: Event) -> dict[str, str]:
    """The NATS headers every published event carries (dedup id, correlation, content type)."""
    return {
        "Nats-Msg-Id": str(event.event_id),
        CORRELATION_HEADER: event.correlation_id,
        "Content-Type": "application/json",
    }


WAKER_KEY = "bitloot_outbox_waker"
_PENDING_KEY = "bitloot_outbox_pending"


class OutboxWaker:
    """Wakes relays *after* a commit, from outside the business transaction.

    A ``pg_notify`` inside the transaction would be simplest, but Postgres holds a global lock
    from a NOTIFY's commit through its WAL flush, so every notifying transaction in the database
    commits one after another (measured by the webhooks gateway: 16 concurrent single-insert
    transactions went from ~2,000-3,000 tx/s to ~200-700 tx/s). Instead, the session's
    ``after_commit`` hook wakes a relay in this process directly and asks this waker to send
    one coalesced NOTIFY per schema on its own connection, for relays in other processes.
    A lost NOTIFY only costs latency: the relay's sweep still finds the row.
    """

    def __init__(self, database_url: str) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._local: dict[str, list[OutboxRelay]] = {}
        self._pending: set[str] = set()
        self._signal = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def register(self, relay: OutboxRelay) -> None:
        self._local.setdefault(relay.schema, []).append(relay)

    def committed(self, schemas: set[str]) -> None:
        for schema in schemas:
            for relay in self._local.get(schema, ()):
                relay.wake()
        self._pending |= schemas
        self._signal.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._send(), name="outbox-waker")

    async def _send(self) -> None:
        conn: asyncpg.Connection | None = None
        try:
            while True:
                await self._signal.wait()
                self._signal.clear()
                schemas, self._pending = self._pending, set()
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(self._dsn, timeout=3)
                    for schema in sorted(schemas):
                        await conn.execute("SELECT pg_notify($1, '')", notify_channel(schema))
                except Exception as exc:  # the relays' sweep covers a lost wake-up
                    log.info("outbox_wake_failed", error=repr(exc)[:200])
                    conn = None
                    await asyncio.sleep(0.5)
        finally:
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close(timeout=1)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None


def _after_commit(session: Session) -> None:
    schemas: set[str] = session.info.pop(_PENDING_KEY, set())
    waker: OutboxWaker | None = session.info.get(WAKER_KEY)
    if schemas and waker is not None:
        waker.committed(schemas)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


async def add_to_outbox(session: AsyncSession, outbox: Any, event: Event) -> None:
    """Stage ``event`` for publishing; it leaves only if the caller's transaction commits."""
    table = _table(outbox)
    schema = str(table.schema)
    await session.execute(
        _outbox_insert(table),
        {
            "event_id": event.event_id,
            "subject": event.SUBJECT,
            "payload": event.model_dump_json().encode(),
            "headers": event_headers(event),
        },
    )
    info = session.info
    if info.get(WAKER_KEY) is None:
        # A session from a plain factory (scripts, some tests): NOTIFY in the transaction.
        await session.execute(select(func.pg_notify(notify_channel(schema), "")))
        return
    sync_session = session.sync_session
    if not info.get("bitloot_outbox_hooked"):
        event_api.listen(sync_session, "after_commit", _after_commit)
        event_api.listen(sync_session, "after_soft_rollback", lambda s, _t: _after_rollback(s))
        info["bitloot_outbox_hooked"] = True
    info.setdefault(_PENDING_KEY, set()).add(schema)


@functools.cache
def _outbox_insert(table: Table) -> Any:
    # One statement object per table: its SQLAlchemy cache key is computed once, not per event.
    return insert(table)


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)


class OutboxRelay:
    """Publishes committed outbox rows. Its own asyncpg connection, not the service's
    SQLAlchemy pool: the relay runs a handful of fixed statements many times a second, and
    building and executing them through the ORM session was half the CPU of a relay-only
    process (the webhooks worker) — asyncpg keeps them prepared on the connection."""

    def __init__(
        self,
        *,
        name: str,
        session_factory: async_sessionmaker[AsyncSession],
        outbox: Any,
        publish: Publish,
        database_url: str | None = None,
        batch_size: int = 200,
        sweep_seconds: float = 1.0,
        retention: timedelta = timedelta(days=7),
    ) -> None:
        self.name = name
        self._table = _table(outbox)
        self.schema = str(self._table.schema)
        self._publish = publish
        # database_url also turns on LISTEN; without it the relay reads the session factory's
        # engine URL (scripts and tests that only call publish_pending).
        self._dsn = asyncpg_dsn(database_url) if database_url else None
        self._db_dsn = self._dsn or _dsn_of(session_factory)
        self._batch_size = batch_size
        self._sweep_seconds = sweep_seconds
        self._retention = retention
        self._sql = _RelaySql(f'"{self.schema}"."{self._table.name}"')
        self._conn: asyncpg.Connection | None = None
        self._db_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.listening = asyncio.Event()  # set while LISTEN is attached (tests await it)
        self.idle = asyncio.Event()  # set while waiting for a wake-up or the sweep
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._last_cleanup = 0.0
        # Test seam: runs after publishing and before marking rows sent (crash simulation).
        self.before_mark: Callable[[list[uuid.UUID]], Awaitable[None]] | None = None

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._stopping = False
        # Connect now rather than on the first wake-up, so the first events after a start do
        # not wait for a connection (tens of ms). A database that is down is retried by _run.
        with contextlib.suppress(Exception):
            async with self._db():
                pass
        self._tasks.append(asyncio.create_task(self._run(), name=f"outbox-relay-{self.name}"))
        if self._dsn:
            self._tasks.append(
                asyncio.create_task(self._listen(), name=f"outbox-listen-{self.name}")
            )

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self._disconnect()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._db_dsn,
                timeout=3,
                command_timeout=10,
                server_settings={"application_name": f"{self.name}-relay"},
            )
        return self._conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2)

    @contextlib.asynccontextmanager
    async def _db(self) -> AsyncIterator[asyncpg.Connection]:
        """The relay's connection, one user at a time; dropped when it fails as a connection,
        so the next attempt opens a fresh one."""
        async with self._db_lock:
            try:
                yield await self._connection()
            except Exception as exc:
                if is_connection_error(exc) or isinstance(exc, asyncpg.InterfaceError):
                    await self._disconnect()
                raise

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many rows were published and marked sent."""
        async with self._db() as conn:
            return await self._publish_batch(conn)

    async def _publish_batch(self, conn: asyncpg.Connection) -> int:
        sql = self._sql
        started = time.perf_counter()
        # Most wake-ups follow a commit whose row another wake-up already took: one round trip
        # says so without opening a transaction.
        if not await conn.fetchval(sql.any_pending):
            return 0
        async with conn.transaction():
            rows = await conn.fetch(sql.claim, self._batch_size)
            if not rows:
                return 0
            results = await asyncio.gather(
                *(self._publish(r["subject"], r["payload"], _headers(r["headers"])) for r in rows),
                return_exceptions=True,
            )
            sent_ids = [r["id"] for r, res in zip(rows, results, strict=True) if res is None]
            failed = [
                (r["id"], res) for r, res in zip(rows, results, strict=True) if res is not None
            ]
            if self.before_mark is not None:
                await self.before_mark([r["event_id"] for r in rows])
            if sent_ids:
                await conn.execute(sql.mark_sent, sent_ids)
            for row_id, exc in failed:
                await conn.execute(sql.mark_failed, row_id, repr(exc)[:500])
        BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        PUBLISHED.labels(self.name).inc(len(sent_ids))
        if failed:
            PUBLISH_ERRORS.labels(self.name).inc(len(failed))
            log.warning(
                "outbox_publish_failed",
                relay=self.name,
                failed=len(failed),
                error=repr(failed[0][1])[:200],
            )
            raise RuntimeError(f"{len(failed)} outbox publishes failed")
        return len(sent_ids)

    async def _run(self) -> None:
        backoff = 0.1
        last_sweep = 0.0
        while not self._stopping:
            self._wake.clear()
            try:
                published = await self.publish_pending()
                backoff = 0.1
                if time.monotonic() - last_sweep > self._sweep_seconds:
                    last_sweep = time.monotonic()
                    await self._housekeeping()
                if published >= self._batch_size:
                    continue  # more is waiting: no pause between full batches
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS or Postgres down: nothing is lost, rows stay pending
                log.warning(
                    "outbox_relay_retry", relay=self.name, error=repr(exc)[:200], retry_in=backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self.idle.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._sweep_seconds)
            self.idle.clear()

    async def _housekeeping(self) -> None:
        async with self._db() as conn:
            age = await conn.fetchval(self._sql.pending_age)
            PENDING_AGE.labels(self.name).set(float(age or 0.0))
            if time.monotonic() - self._last_cleanup > 60:
                self._last_cleanup = time.monotonic()
                await conn.execute(self._sql.prune, self._retention)

    async def _listen(self) -> None:
        assert self._dsn is not None
        channel = notify_channel(str(self._table.schema))
        while not self._stopping:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=3)
                await conn.add_listener(channel, lambda *_: self._wake.set())
                self.listening.set()
                self._wake.set()  # anything committed while we were not listening
                while not self._stopping and not conn.is_closed():
                    await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("outbox_listener_reconnect", relay=self.name, error=repr(exc)[:200])
                await asyncio.sleep(1.0)
            finally:
                self.listening.clear()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=1)


class _RelaySql:
    """The relay's statements for one outbox table (``sent_at IS NULL`` rows are indexed).

    ``table`` is the quoted name from our own model metadata, never input."""

    def __init__(self, table: str) -> None:
        pending = f"FROM {table} WHERE sent_at IS NULL"
        self.any_pending = f"SELECT EXISTS (SELECT 1 {pending})"
        self.claim = (
            f"SELECT id, event_id, subject, payload, headers {pending} "
            "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
        )
        self.mark_sent = f"UPDATE {table} SET sent_at = now() WHERE id = ANY($1::bigint[])"  # noqa: S608
        self.mark_failed = (
            f"UPDATE {table} SET attempts = attempts + 1, last_error = $2 WHERE id = $1"  # noqa: S608
        )
        self.pending_age = (
            f"SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 {pending}"  # noqa: S608
        )
        self.prune = (
            f"DELETE FROM {table} WHERE sent_at IS NOT NULL "  # noqa: S608
            "AND sent_at < now() - $1::interval"
        )


def _headers(raw: Any) -> dict[str, str]:
    # asyncpg returns jsonb as its text unless a codec is set.
    if raw is None:
        return {}
    value = json.loads(raw) if isinstance(raw, str) else raw
    return {str(k): str(v) for k, v in dict(value).items()}


def _dsn_of(session_factory: async_sessionmaker[AsyncSession]) -> str:
    bind = session_factory.kw.get("bind")
    if bind is None:
        raise ValueError("the relay needs database_url or a session factory bound to an engine")
    return asyncpg_dsn(bind.url.render_as_string(hide_password=False))


def jetstream_publisher(broker: Any, *, timeout: float = 5.0) -> Publish:
    """Publish through FastStream's broker to JetStream, awaiting the PubAck."""
    from shared.contracts.streams import stream_for_subject

    async def publish(subject: str, payload: bytes, headers: dict[str, str]) -> None:
        await broker.publish(
            payload,
            subject=subject,
            headers=headers,
            stream=stream_for_subject(subject),
            timeout=timeout,
        )

    return publish


def decode_payload(payload: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(payload)
    return data
