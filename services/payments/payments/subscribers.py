"""The worker's boundaries: the create-invoice responder, the IPN consumer and the
reconciliation poller. Each owns its transactions; the use cases in ``service`` never commit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from shared.contracts import subjects
from shared.contracts.payments import CreateInvoiceReply, CreateInvoiceRequest
from shared.contracts.webhooks import IpnReceived
from shared.db import is_connection_error
from shared.messaging import Delivery, durable_consumer
from shared.messaging.rpc import register_responder
from shared.observability import get_logger
from shared.runtime import BackgroundJob, ServiceContext
from sqlalchemy.ext.asyncio import AsyncSession

from payments import service
from payments.client import NowPaymentsClient
from payments.errors import OrderConflictError
from payments.models import Inbox
from payments.settings import PaymentsSettings

log = get_logger(__name__)

IPN_DURABLE = "payments-ipn"
QUEUE = "payments"


@dataclass
class Worker:
    """The worker side of the service: what its boundaries need besides the context."""

    ctx: ServiceContext
    settings: PaymentsSettings
    client: NowPaymentsClient

    # --- payments.create_invoice ---------------------------------------------------------

    async def create_invoice(self, request: CreateInvoiceRequest) -> CreateInvoiceReply:
        try:
            return await self._create_invoice(request)
        except OrderConflictError as exc:
            return service.error_reply(exc.code, str(exc), retryable=False)
        except Exception as exc:
            if is_connection_error(exc):
                log.warning("invoice_db_unavailable", error=type(exc).__name__)
                return service.error_reply(
                    "unavailable", "payments database unavailable", retryable=True
                )
            raise

    async def _create_invoice(self, request: CreateInvoiceRequest) -> CreateInvoiceReply:
        # First transaction: the payment row exists (and is committed) before the provider is
        # called, so a failure or crash mid-call leaves a row that says so.
        async with self.ctx.sessions() as session, session.begin():
            payment = await service.record_payment(session, request)
            if payment.invoice_url:
                return service.invoice_reply(payment)  # a retry: the same invoice
            payment_id = payment.id
        async with self.ctx.sessions() as session, session.begin():
            return await service.ensure_invoice(session, payment_id, self.client, self.settings)

    # --- webhooks.ipn_received.v1 --------------------------------------------------------

    async def on_ipn(self, session: AsyncSession, event: IpnReceived, delivery: Delivery) -> None:
        await service.handle_ipn(session, event, self.client, self.settings)

    # --- reconciliation ------------------------------------------------------------------

    async def reconcile_once(self) -> int:
        """Check one batch of due payments; returns how many were claimed."""
        now = service.utcnow()
        async with self.ctx.sessions() as session, session.begin():
            claimed = await service.claim_due(session, self.settings, now=now)
        for item in claimed:
            result = await service.check_with_provider(self.client, item, self.settings, now=now)
            async with self.ctx.sessions() as session, session.begin():
                await service.apply_poll_result(session, item.id, result)
        return len(claimed)

    async def reconcile_forever(self, _: ServiceContext) -> None:
        while True:
            claimed = 0
            try:
                claimed = await self.reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database or provider down: try again next tick
                log.warning("reconcile_failed", error=repr(exc)[:300])
            if claimed < self.settings.poll_batch_size:
                await asyncio.sleep(self.settings.poll_tick_seconds)

    def jobs(self) -> list[BackgroundJob]:
        return [self.reconcile_forever] if self.settings.poll_enabled else []

    # --- wiring --------------------------------------------------------------------------

    def register(self) -> None:
        register_responder(
            self.ctx.broker,
            CreateInvoiceRequest,
            self.create_invoice,
            queue=QUEUE,
            description="creates the provider invoice for an order",
        )
        durable_consumer(
            self.ctx.broker,
            subject=subjects.IPN_RECEIVED,
            durable=IPN_DURABLE,
            event_type=IpnReceived,
            handler=self.on_ipn,
            policy=self.ctx.consumer_policy,
            session_factory=self.ctx.sessions,
            inbox=Inbox,
            description="maps provider IPNs onto payments (forward only)",
        )
