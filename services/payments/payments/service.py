"""Use cases of the payments service. They take a session and never commit: the boundary
(request responder, message handler, poller tick) owns every transaction.

One transition path for every source: an IPN, a reconciliation poll or an operator all end in
:func:`apply_report`, which appends to the ledger and publishes (via the outbox) only on a real
change.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from shared.contracts.payments import (
    CreateInvoiceReply,
    CreateInvoiceRequest,
    PaymentStatus,
    PaymentStatusChanged,
    TransitionSource,
)
from shared.contracts.webhooks import IpnReceived
from shared.messaging import NotYetVisibleError, add_to_outbox
from shared.money import InvalidAmountError, to_decimal
from shared.observability import get_logger
from sqlalchemy.ext.asyncio import AsyncSession

from payments import domain, repository
from payments.client import (
    Invoice,
    NowPaymentsClient,
    ProviderError,
    ProviderNotFoundError,
    ProviderRejectedError,
    ProviderUnavailableError,
)
from payments.domain import Decision, Invoiced, ProviderReport
from payments.errors import OrderConflictError
from payments.models import Outbox, Payment, PaymentTransition
from payments.settings import PaymentsSettings

log = get_logger(__name__)

PROVIDER = "nowpayments"


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- invoice creation ---------------------------------------------------------------------


async def record_payment(session: AsyncSession, request: CreateInvoiceRequest) -> Payment:
    """The order's payment row (status ``created``), new or the one a previous attempt left.

    Raises :class:`OrderConflictError` when the order already has a payment for another price:
    answering it with the old invoice would charge the wrong amount.
    """
    await repository.insert_if_absent(
        session,
        {
            "id": uuid.uuid4(),
            "order_id": request.order_id,
            "provider": PROVIDER,
            "status": "created",
            "price_amount": request.price_amount,
            "price_currency": request.price_currency.strip().lower(),
            "description": request.description,
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
            "correlation_id": request.correlation_id,
        },
    )
    payment = await repository.get_by_order(session, request.order_id)
    assert payment is not None  # inserted above or by a concurrent attempt that committed
    if payment.price_amount != request.price_amount or (
        payment.price_currency != request.price_currency.strip().lower()
    ):
        raise OrderConflictError(
            f"order {request.order_id} already has a payment for "
            f"{payment.price_amount} {payment.price_currency}"
        )
    return payment


def invoice_reply(payment: Payment) -> CreateInvoiceReply:
    return CreateInvoiceReply(
        ok=True,
        payment_id=str(payment.id),
        invoice_id=payment.invoice_id,
        invoice_url=payment.invoice_url,
        price_amount=payment.price_amount,
        price_currency=payment.price_currency,
        status=payment.status,
    )


def error_reply(
    code: str, message: str, *, retryable: bool, payment: Payment | None = None
) -> CreateInvoiceReply:
    return CreateInvoiceReply(
        ok=False,
        error_code=code,
        error_message=message[:500],
        retryable=retryable,
        payment_id=str(payment.id) if payment is not None else None,
        status=payment.status if payment is not None else None,
    )


async def ensure_invoice(
    session: AsyncSession,
    payment_id: uuid.UUID,
    client: NowPaymentsClient,
    settings: PaymentsSettings,
    *,
    now: datetime | None = None,
) -> CreateInvoiceReply:
    """Create the provider invoice for a payment that has none, under the payment's row lock.

    The lock makes a concurrent retry of the same order wait here and then return the invoice
    this call stored, instead of creating a second one. A payment row left without an invoice
    (an earlier attempt failed or crashed mid-call) gets one now: that attempt returned nothing
    to the caller, so no customer can hold its link. Provider errors are recorded on the row
    (``last_error``) and answered as an error reply; the caller commits either way.
    """
    payment = await repository.lock(session, payment_id)
    if payment is None:  # pragma: no cover - recorded by the caller's previous transaction
        return error_reply("payment_not_found", "payment vanished", retryable=True)
    if payment.invoice_url:
        return invoice_reply(payment)
    payment.invoice_attempts += 1
    try:
        invoice = await client.create_invoice(
            order_id=payment.order_id,
            price_amount=payment.price_amount,
            price_currency=payment.price_currency,
            ipn_callback_url=settings.nowpayments_callback_url,
            order_description=payment.description or None,
            success_url=payment.success_url,
            cancel_url=payment.cancel_url,
        )
    except ProviderError as exc:
        payment.last_error_code = exc.code
        payment.last_error = exc.message
        log.warning(
            "invoice_failed", order_id=payment.order_id, code=exc.code, retryable=exc.retryable
        )
        return error_reply(exc.code, exc.message, retryable=exc.retryable, payment=payment)
    _store_invoice(session, payment, invoice, settings, now or utcnow())
    log.info("invoice_created", order_id=payment.order_id, invoice_id=invoice.id)
    return invoice_reply(payment)


def _store_invoice(
    session: AsyncSession,
    payment: Payment,
    invoice: Invoice,
    settings: PaymentsSettings,
    now: datetime,
) -> None:
    payment.invoice_id = invoice.id
    payment.invoice_url = invoice.invoice_url
    payment.invoice_expires_at = now + timedelta(seconds=settings.invoice_lifetime_seconds)
    payment.last_error_code = None
    payment.last_error = None
    payment.next_check_at = now + timedelta(seconds=settings.poll_after_seconds)
    _append(
        session,
        payment,
        source="invoice",
        outcome="applied",
        reported=None,
        previous=payment.status,
        reason=f"invoice {invoice.id} created",
    )


# --- one transition path ------------------------------------------------------------------


def _append(
    session: AsyncSession,
    payment: Payment,
    *,
    source: TransitionSource,
    outcome: Literal["applied", "ignored"],
    reported: str | None,
    previous: str,
    reason: str,
    report: ProviderReport | None = None,
    event_id: uuid.UUID | None = None,
) -> int:
    payment.ledger_seq += 1
    repository.append_transition(
        session,
        PaymentTransition(
            payment_id=payment.id,
            seq=payment.ledger_seq,
            source=source,
            outcome=outcome,
            reported_status=reported[:40] if reported else None,
            from_status=previous,
            to_status=payment.status,
            reason=reason[:2000],
            provider_payment_id=report.payment_id if report else None,
            pay_amount=report.pay_amount if report else None,
            actually_paid=report.actually_paid if report else None,
            provider_updated_at_ms=report.updated_at_ms if report else None,
            event_id=event_id,
        ),
    )
    return payment.ledger_seq


@dataclass(frozen=True, slots=True)
class Applied:
    decision: Decision
    recorded: bool  # a ledger entry was written
    version: int | None  # ledger position of the event published, if any


async def apply_report(
    session: AsyncSession,
    payment: Payment,
    report: ProviderReport,
    *,
    source: TransitionSource,
    event_id: uuid.UUID | None = None,
    correlation_id: str | None = None,
    note: str | None = None,
    record_duplicates: bool = True,
) -> Applied:
    """Decide, append to the ledger, update the payment and stage the event — one transaction.

    ``payment`` must be row-locked by the caller (``repository.lock``).
    """
    decision = domain.decide(
        payment.status, Invoiced(payment.price_amount, payment.price_currency), report
    )
    reason = f"{decision.reason}; {note}" if note else decision.reason
    # Learn the provider's payment id from the first report that names it: the poller needs it.
    if report.payment_id and payment.provider_payment_id is None:
        payment.provider_payment_id = report.payment_id
    if not decision.applied:
        if not record_duplicates and report.status == payment.status:
            return Applied(decision, recorded=False, version=None)
        _append(
            session,
            payment,
            source=source,
            outcome="ignored",
            reported=report.status,
            previous=decision.previous,
            reason=reason,
            report=report,
            event_id=event_id,
        )
        log.info(
            "payment_status_ignored",
            payment_id=str(payment.id),
            reported=report.status,
            status=payment.status,
            source=source,
            reason=decision.reason,
        )
        return Applied(decision, recorded=True, version=None)

    payment.status = decision.status
    _take_amounts(payment, report)
    payment.surplus = decision.surplus
    payment.shortfall = decision.shortfall
    if decision.is_final:
        payment.final_at = utcnow()
        payment.next_check_at = None
    version = _append(
        session,
        payment,
        source=source,
        outcome="applied",
        reported=report.status,
        previous=decision.previous,
        reason=reason,
        report=report,
        event_id=event_id,
    )
    await add_to_outbox(
        session,
        Outbox,
        _status_event(
            payment,
            decision,
            source=source,
            version=version,
            reason=reason,
            provider_status=report.status,
            causation=event_id,
            correlation_id=correlation_id,
        ),
    )
    log.info(
        "payment_status_changed",
        payment_id=str(payment.id),
        order_id=payment.order_id,
        previous=decision.previous,
        status=decision.status,
        source=source,
        version=version,
    )
    return Applied(decision, recorded=True, version=version)


def _take_amounts(payment: Payment, report: ProviderReport) -> None:
    for name in (
        "pay_amount",
        "actually_paid",
        "pay_currency",
        "outcome_amount",
        "outcome_currency",
    ):
        value = getattr(report, name)
        if value is not None:
            setattr(payment, name, value)
    if report.updated_at_ms is not None:
        payment.provider_updated_at_ms = report.updated_at_ms


def _status_event(
    payment: Payment,
    decision: Decision,
    *,
    source: TransitionSource,
    version: int,
    reason: str,
    provider_status: str | None,
    causation: uuid.UUID | None,
    correlation_id: str | None,
) -> PaymentStatusChanged:
    envelope: dict[str, str] = {}
    # The purchase's correlation id (from orders' request) ties this event to the order.
    if cid := (payment.correlation_id or correlation_id):
        envelope["correlation_id"] = cid
    if causation is not None:
        envelope["causation_id"] = str(causation)
    previous: PaymentStatus = decision.previous  # type: ignore[assignment]
    status: PaymentStatus = decision.status  # type: ignore[assignment]
    return PaymentStatusChanged(
        payment_id=payment.id,
        order_id=payment.order_id,
        provider=payment.provider,
        provider_payment_id=payment.provider_payment_id,
        invoice_id=payment.invoice_id,
        previous_status=previous,
        status=status,
        is_final=decision.is_final,
        source=source,
        version=version,
        price_amount=payment.price_amount,
        price_currency=payment.price_currency,
        pay_amount=payment.pay_amount,
        actually_paid=payment.actually_paid,
        pay_currency=payment.pay_currency,
        surplus=decision.surplus,
        shortfall=decision.shortfall,
        note=reason[:500],
        provider_status=provider_status,
        outcome_amount=payment.outcome_amount,
        outcome_currency=payment.outcome_currency,
        **envelope,
    )


# --- IPNs ---------------------------------------------------------------------------------


def _optional_amount(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return to_decimal(value)
    except InvalidAmountError:
        return None


def _id_text(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text or None


def report_from_ipn(event: IpnReceived) -> ProviderReport:
    """The typed fields the gateway extracted, falling back to the raw payload (numbers as
    text) for anything it left out."""
    raw = event.payload

    def amount(name: str, typed: Decimal | None) -> Decimal | None:
        return typed if typed is not None else _optional_amount(raw.get(name))

    def text(name: str, typed: str | None) -> str | None:
        return typed if typed is not None else _id_text(raw.get(name))

    updated = event.provider_updated_at
    if updated is None and str(raw.get("updated_at", "")).isdigit():
        updated = int(str(raw["updated_at"]))
    return ProviderReport(
        status=event.payment_status,
        payment_id=text("payment_id", event.payment_id),
        invoice_id=text("invoice_id", event.invoice_id),
        order_id=text("order_id", event.order_id),
        price_amount=amount("price_amount", event.price_amount),
        price_currency=text("price_currency", event.price_currency),
        pay_amount=amount("pay_amount", event.pay_amount),
        actually_paid=amount("actually_paid", event.actually_paid),
        pay_currency=text("pay_currency", event.pay_currency),
        outcome_amount=amount("outcome_amount", event.outcome_amount),
        outcome_currency=text("outcome_currency", event.outcome_currency),
        updated_at_ms=updated,
    )


async def handle_ipn(
    session: AsyncSession,
    event: IpnReceived,
    client: NowPaymentsClient,
    settings: PaymentsSettings,
) -> Applied | None:
    """Apply one verified IPN. Raises ``NotYetVisibleError`` when its payment is not committed
    yet, or when the provider cannot confirm a final status right now (both: try again later).
    """
    if event.provider != PROVIDER:
        log.warning("ipn_other_provider", provider=event.provider[:40])
        return None
    report = report_from_ipn(event)
    # A final status is confirmed with the provider first, an HTTP call made without holding
    # the row lock (duplicates of it would queue behind the call); anything else is locked at
    # lookup, which saves re-reading the row. (The rare non-final report that still needs the
    # provider's word — a price mismatch — keeps that lock through the call.)
    confirming = settings.confirm_final_with_provider and domain.is_final(report.status)
    payment, found_by = await repository.find_for_report(
        session,
        provider_payment_id=report.payment_id,
        invoice_id=report.invoice_id,
        order_id=report.order_id,
        lock_if_ours=not confirming,
    )
    if payment is None:
        raise NotYetVisibleError(
            f"no payment for invoice {report.invoice_id} / order {report.order_id} yet",
            retry_after=settings.not_visible_retry_seconds,
        )
    if found_by == "order_id" and report.invoice_id and payment.invoice_id is None:
        # Our invoice id is being stored right now (the responder holds the row).
        raise NotYetVisibleError(
            f"payment for order {report.order_id} has no invoice id yet",
            retry_after=settings.not_visible_retry_seconds,
        )
    note = _replay_note(event)
    locked_at_lookup = not confirming and found_by != "order_id"
    foreign = (
        found_by == "order_id" and report.invoice_id and report.invoice_id != payment.invoice_id
    )
    if foreign:
        locked = await repository.lock(session, payment.id)
        assert locked is not None
        _append(
            session,
            locked,
            source="ipn",
            outcome="ignored",
            reported=report.status,
            previous=locked.status,
            report=report,
            event_id=event.event_id,
            reason=f"IPN for invoice {report.invoice_id}, not ours ({locked.invoice_id})",
        )
        log.warning("ipn_foreign_invoice", payment_id=str(locked.id))
        return None

    preview = domain.decide(
        payment.status, Invoiced(payment.price_amount, payment.price_currency), report
    )
    if preview.applied and preview.is_final and settings.confirm_final_with_provider:
        confirmed = await _confirm(client, report, payment, settings)
        if isinstance(confirmed, str):
            locked = await repository.lock(session, payment.id)
            assert locked is not None
            _append(
                session,
                locked,
                source="ipn",
                outcome="ignored",
                reported=report.status,
                previous=locked.status,
                reason=confirmed,
                report=report,
                event_id=event.event_id,
            )
            return None
        report = confirmed
        note = "; ".join(filter(None, [f"confirmed by GET /payment ({report.status})", note]))

    if locked_at_lookup:
        locked = payment
    else:
        locked = await repository.lock(session, payment.id)  # re-read: another IPN may have won
        assert locked is not None
    return await apply_report(
        session,
        locked,
        report,
        source="ipn",
        event_id=event.event_id,
        correlation_id=event.correlation_id,
        note=note,
    )


def _replay_note(event: IpnReceived) -> str | None:
    if not event.replay:
        return None
    who = f" by {event.replayed_by}" if event.replayed_by else ""
    why = f": {event.replay_reason}" if event.replay_reason else ""
    return f"replay{who}{why}"[:300]


async def _confirm(
    client: NowPaymentsClient,
    report: ProviderReport,
    payment: Payment,
    settings: PaymentsSettings,
) -> ProviderReport | str:
    """The provider's own answer for a final status, or why it cannot be acted on (a str)."""
    if not report.payment_id:
        return "final status without payment_id: cannot confirm with the provider"
    try:
        truth = await client.get_payment(report.payment_id)
    except ProviderNotFoundError as exc:
        return f"provider does not confirm payment {report.payment_id}: {exc.code}"
    except ProviderUnavailableError as exc:
        raise NotYetVisibleError(
            f"provider cannot confirm payment {report.payment_id} now: {exc.code}",
            retry_after=settings.provider_unavailable_retry_seconds,
        ) from exc
    if truth.order_id and truth.order_id != payment.order_id:
        return f"provider payment {truth.payment_id} belongs to order {truth.order_id[:64]}"
    return truth.report()


# --- reconciliation -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    """What the poller needs of a claimed payment, read inside the claim transaction."""

    id: uuid.UUID
    status: str
    invoice_id: str | None
    provider_payment_id: str | None
    invoice_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class PollResult:
    kind: Literal["report", "expire", "nothing", "error"]
    report: ProviderReport | None = None
    reason: str = ""
    error_code: str | None = None


async def claim_due(
    session: AsyncSession, settings: PaymentsSettings, *, now: datetime
) -> list[Claimed]:
    """Lease due payments: move each one's next check out by its backoff step."""
    rows = await repository.claim_due(session, now=now, limit=settings.poll_batch_size)
    claimed: list[Claimed] = []
    for payment in rows:
        payment.next_check_at = now + domain.next_check_delay(
            payment.checks_done, settings.poll_interval_seconds, settings.poll_max_interval_seconds
        )
        payment.checks_done += 1
        payment.last_checked_at = now
        claimed.append(
            Claimed(
                payment.id,
                payment.status,
                payment.invoice_id,
                payment.provider_payment_id,
                payment.invoice_expires_at,
            )
        )
    return claimed


async def check_with_provider(
    client: NowPaymentsClient, claimed: Claimed, settings: PaymentsSettings, *, now: datetime
) -> PollResult:
    """Ask the provider where a payment stands. No database access: runs between transactions."""
    grace = timedelta(seconds=settings.expiry_grace_seconds)
    overdue = domain.invoice_overdue(claimed.invoice_expires_at, grace, now)
    try:
        if claimed.provider_payment_id:
            payment = await client.get_payment(claimed.provider_payment_id)
            return PollResult("report", payment.report())
        if settings.poll_lookup_by_invoice and claimed.invoice_id:
            try:
                found = await client.payments_for_invoice(claimed.invoice_id)
            except ProviderRejectedError as exc:
                # The real list endpoint wants a JWT: without it, only the lifetime tells.
                log.info("invoice_lookup_refused", code=exc.code)
            else:
                picked = domain.pick_payment([p.report() for p in found])
                if picked is not None:
                    return PollResult("report", picked)
                if overdue:
                    return PollResult(
                        "expire", reason="invoice expired without a payment (provider lists none)"
                    )
                return PollResult("nothing")
    except ProviderError as exc:
        return PollResult("error", reason=exc.message, error_code=exc.code)
    if overdue and claimed.provider_payment_id is None:
        return PollResult("expire", reason="invoice lifetime passed and no payment ever reported")
    return PollResult("nothing")


async def apply_poll_result(
    session: AsyncSession, payment_id: uuid.UUID, result: PollResult
) -> Applied | None:
    payment = await repository.lock(session, payment_id)
    if payment is None or domain.is_final(payment.status):
        return None  # settled meanwhile (an IPN won the race): nothing to add
    if result.kind == "error":
        payment.last_error_code = result.error_code
        payment.last_error = result.reason
        return None
    if result.kind == "nothing":
        return None
    if result.kind == "expire":
        decision = domain.expired_decision(payment.status, result.reason)
        report = ProviderReport(status="expired")
        return await _apply_local(session, payment, decision, report, source="poll")
    assert result.report is not None
    return await apply_report(
        session, payment, result.report, source="poll", record_duplicates=False
    )


async def _apply_local(
    session: AsyncSession,
    payment: Payment,
    decision: Decision,
    report: ProviderReport,
    *,
    source: TransitionSource,
) -> Applied:
    """A transition we decide ourselves (expiry), through the same ledger and event."""
    if not decision.applied:
        _append(
            session,
            payment,
            source=source,
            outcome="ignored",
            reported=report.status,
            previous=decision.previous,
            reason=decision.reason,
        )
        return Applied(decision, recorded=True, version=None)
    payment.status = decision.status
    if decision.is_final:
        payment.final_at = utcnow()
        payment.next_check_at = None
    version = _append(
        session,
        payment,
        source=source,
        outcome="applied",
        reported=None,
        previous=decision.previous,
        reason=decision.reason,
    )
    await add_to_outbox(
        session,
        Outbox,
        _status_event(
            payment,
            decision,
            source=source,
            version=version,
            reason=decision.reason,
            provider_status=None,
            causation=None,
            correlation_id=None,
        ),
    )
    log.info(
        "payment_status_changed",
        payment_id=str(payment.id),
        previous=decision.previous,
        status=decision.status,
        source=source,
        version=version,
    )
    return Applied(decision, recorded=True, version=version)
