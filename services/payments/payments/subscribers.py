"""The worker's boundaries: the create-invoice responder, the IPN consumer and the
reconciliation poller. Each owns its transactions; the use cases in ``service`` never commit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from shared.contracts import subjects
from shared.contracts.payments import (
    AttachPaymentRequest,
    CreateInvoiceReply,
    CreateInvoiceRequest,
    PaymentActionReply,
    SettlePaymentRequest,
)
from shared.contracts.webhooks import IpnReceived
from shared.db import is_connection_error
from shared.messaging import Delivery, durable_consumer
from shared.messaging.rpc import register_responder
from shared.observability import get_logger
from shared.runtime import BackgroundJob, ServiceContext
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from payments import service
from payments.client import (
    NowPaymentsClient,
    ProviderError,
    ProviderNotFoundError,
    ProviderUnavailableError,
)
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

    # --- operator actions (payments.settle, payments.attach) -----------------------------

    async def settle(self, request: SettlePaymentRequest) -> PaymentActionReply:
        try:
            async with self.ctx.sessions() as session, session.begin():
                return await service.settle(session, request)
        except Exception as exc:
            return self._action_failure(exc, request.action_id)

    async def attach(self, request: AttachPaymentRequest) -> PaymentActionReply:
        try:
            async with self.ctx.sessions() as session, session.begin():
                early = await service.attach_precheck(session, request)
            if early is not None:
                return early
            # The provider's word on the payment, asked outside any transaction.
            try:
                truth = await self.client.get_payment(request.provider_payment_id)
            except ProviderNotFoundError:
                return service.action_error(
                    "provider_payment_not_found",
                    f"the provider does not know payment {request.provider_payment_id}",
                )
            except ProviderUnavailableError as exc:
                return service.action_error(
                    "provider_unavailable",
                    f"the provider did not answer: {exc.code}",
                    retryable=True,
                )
            except ProviderError as exc:
                return service.action_error(exc.code, exc.message)
            async with self.ctx.sessions() as session, session.begin():
                return await service.attach(session, request, truth.report(), self.settings)
        except Exception as exc:
            return self._action_failure(exc, request.action_id)

    def _action_failure(self, exc: Exception, action_id: object) -> PaymentActionReply:
        if is_connection_error(exc):
            log.warning("action_db_unavailable", error=type(exc).__name__)
            return service.action_error(
                "unavailable", "payments database unavailable", retryable=True
            )
        if isinstance(exc, IntegrityError):  # the same action, concurrently: the first one won
            log.info("action_raced", action_id=str(action_id))
            return service.action_error(
                "conflict", "the same action is being applied; ask again", retryable=True
            )
        raise exc

    # --- reconciliation ------------------------------------------------------------------

    async def reconcile_once(self) -> int:
        """Check one batch of due payments; returns how many were claimed."""
        now = service.utcnow()
        async with self.ctx.sessions() as session, session.begin():
            claimed = await service.claim_due(session, self.settings, now=now)
        for item in claimed:
            result = await service.check_with_provider(self.client, item, self.settings, now=now)
            async with self.ctx.sessions() as session, session.begin():
                await service.apply_poll_result(session, item.id, result, self.settings)
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
        register_responder(
            self.ctx.broker,
            SettlePaymentRequest,
            self.settle,
            queue=QUEUE,
            description="an operator settles an order's payment as paid (exactly once)",
        )
        register_responder(
            self.ctx.broker,
            AttachPaymentRequest,
            self.attach,
            queue=QUEUE,
            description="an operator attaches a provider payment to an order (exactly once)",
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
