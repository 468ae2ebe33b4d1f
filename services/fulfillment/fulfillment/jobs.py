"""Worker jobs: the email dispatcher and housekeeping. Each is a boundary that commits.

The dispatcher sends what ``email_log`` holds as pending. It wakes on a Postgres NOTIFY sent
by the transaction that queued the email (so an email leaves right after the delivery commits)
and sweeps every few seconds for retries that came due. One email per claim: the claim counts
the attempt and leases the row, so replicas never send the same row at once and a sender that
dies mid-way leaves the row to be retried when the lease ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import asyncpg
from prometheus_client import Counter
from shared.messaging.outbox import asyncpg_dsn
from shared.observability import get_logger
from shared.runtime import ServiceContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fulfillment import repository as repo
from fulfillment import service
from fulfillment.emails import EmailPermanentError
from fulfillment.repository import ClaimedEmail
from fulfillment.service import Fulfillment

T = TypeVar("T")

log = get_logger(__name__)

EMAILS = Counter("fulfillment_emails_total", "Email send attempts by outcome", ["outcome"])

PRUNE_EVERY_SECONDS = 600.0
RATE_LIMIT_RETENTION = timedelta(days=1)


class EmailDispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        fulfillment: Fulfillment,
        *,
        database_url: str | None,
    ) -> None:
        self._sessions = sessions
        self._f = fulfillment
        self._dsn = asyncpg_dsn(database_url) if database_url else None
        self._wake = asyncio.Event()
        self.listening = asyncio.Event()  # tests await it before counting on wake-ups
        self.idle = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen(), name="email-listen") if self._dsn else None
        backoff = 0.1
        sweep = self._f.settings.email_sweep_seconds
        try:
            while True:
                self._wake.clear()
                try:
                    handled = await self.dispatch_once()
                    backoff = 0.1
                    if handled >= self._f.settings.email_batch_size:
                        continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # database down or a crash hook: rows stay pending
                    log.warning("email_dispatch_retry", error=repr(exc)[:300], retry_in=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                self.idle.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=sweep)
                self.idle.clear()
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listener

    async def dispatch_once(self) -> int:
        """Claim due emails and try each once; returns how many were claimed."""
        async with self._sessions() as session, session.begin():
            claimed = await service.claim_emails(session, self._f)
        # Side by side, so a batch ends within about one send timeout, far inside the lease.
        results = await asyncio.gather(
            *(self._deliver(email) for email in claimed), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(claimed)

    async def _deliver(self, email: ClaimedEmail) -> None:
        hook = self._f.hooks.before_send
        if hook is not None:
            await hook(email)  # a raise here stands for the process dying with the row claimed
        permanent = False
        try:
            outgoing = service.build_email(self._f, email)
            provider_id = await self._f.mailer.send(outgoing)
        except EmailPermanentError as exc:
            error, permanent = str(exc), True
        except Exception as exc:  # transient until proven otherwise; the attempt cap ends it
            error = f"{type(exc).__name__}: {str(exc)[:300]}"
        else:
            await self._until_recorded(
                lambda session: service.record_sent(session, email, provider_id)
            )
            EMAILS.labels("sent").inc()
            log.info(
                "email_sent",
                order_id=email.order_id,
                template=email.template,
                attempts=email.attempts,
            )
            return
        outcome = await self._until_recorded(
            lambda session: service.record_failure(
                session, self._f, email, error, permanent=permanent
            )
        )
        EMAILS.labels(outcome).inc()
        log.warning(
            "email_failed",
            order_id=email.order_id,
            template=email.template,
            attempts=email.attempts,
            outcome=outcome,
            error=error[:300],
        )

    async def _until_recorded(self, write: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Record what happened to an email, retrying while the database is unreachable.

        The message has already left (or failed) at this point; giving up on the write would
        leave the row claimed until its lease ends and then send the email a second time. So we
        keep trying for most of the lease, and only then let the error surface.
        """
        deadline = time.monotonic() + self._f.settings.email_claim_lease_seconds * 0.8
        delay = 0.2
        while True:
            try:
                async with self._sessions() as session, session.begin():
                    return await write(session)
            except Exception as exc:
                # Any failure here, not only a lost connection: the email has left, and an
                # unrecorded send is re-sent when its lease ends.
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("email_record_retry", error=repr(exc)[:200], retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _listen(self) -> None:
        assert self._dsn is not None
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=3)
                await conn.add_listener(repo.EMAIL_CHANNEL, lambda *_: self._wake.set())
                self.listening.set()
                self._wake.set()  # anything queued while we were not listening
                while not conn.is_closed():
                    await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("email_listener_reconnect", error=repr(exc)[:200])
                await asyncio.sleep(1.0)
            finally:
                self.listening.clear()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=1)


def dispatcher_of(ctx: ServiceContext) -> EmailDispatcher:
    dispatcher: EmailDispatcher = ctx.extras["email_dispatcher"]
    return dispatcher


async def email_job(ctx: ServiceContext) -> None:
    await dispatcher_of(ctx).run()


async def housekeeping_job(ctx: ServiceContext) -> None:
    """Drop rate-limit buckets nobody touched for a day (they would be full again anyway)."""
    while True:
        try:
            async with ctx.sessions() as session, session.begin():
                pruned = await repo.prune_rate_limits(session, older_than=RATE_LIMIT_RETENTION)
            if pruned:
                log.info("rate_limits_pruned", rows=pruned)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("housekeeping_failed", error=repr(exc)[:200])
        await asyncio.sleep(PRUNE_EVERY_SECONDS)
