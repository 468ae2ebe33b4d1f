"""Use cases of the payments service. They take a session and never commit: the boundary
(request responder, message handler, poller tick) owns every transaction.

One transition path for every source: an IPN, a reconciliation poll or an operator all end in
:func:`apply_report`, which appends to the ledger and publishes (via the outbox) only on a real
change.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from shared.contracts.payments import (
    AttachPaymentRequest,
    CreateInvoiceReply,
    CreateInvoiceRequest,
    PaymentActionReply,
    PaymentAttentionRaised,
    PaymentStatus,
    PaymentStatusChanged,
    SettlePaymentRequest,
    TransitionSource,
)
from shared.contracts.webhooks import IpnReceived
from shared.messaging import NotYetVisibleError, add_to_outbox
from shared.money import InvalidAmountError, amount_text, to_decimal
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
    epoch_ms,
)
from payments.domain import Decision, Invoiced, ProviderPaymentState, ProviderReport
from payments.errors import OrderConflictError
from payments.models import Outbox, Payment, PaymentAction, PaymentTransition, ProviderPayment
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
    outcome: Literal["applied", "ignored", "recorded"],
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


@dataclass(frozen=True, slots=True)
class Rules:
    """The settings the transition path needs (kept small so tests can build one)."""

    tolerance: Decimal = Decimal(0)  # fraction of pay_amount an underpayment may miss by
    recheck_seconds: float = 300.0  # next poll of a payment that is live again

    @classmethod
    def of(cls, settings: PaymentsSettings) -> Rules:
        return cls(settings.underpayment_tolerance, settings.poll_interval_seconds)


def _state(row: ProviderPayment) -> ProviderPaymentState:
    return ProviderPaymentState(
        provider_payment_id=row.provider_payment_id,
        status=row.status,
        parent_payment_id=row.parent_payment_id,
        price_amount=row.price_amount,
        price_currency=row.price_currency,
        pay_amount=row.pay_amount,
        actually_paid=row.actually_paid,
        pay_currency=row.pay_currency,
        outcome_amount=row.outcome_amount,
        outcome_currency=row.outcome_currency,
        attached=row.attached_by is not None,
    )


async def _known_payments(session: AsyncSession, payment: Payment) -> list[ProviderPayment]:
    """The order's provider payments; a payment recorded before provider payments were kept
    (or by the previous release, during a rolling deploy) gets its one row from the payment."""
    rows = await repository.provider_payments(session, payment.id)
    legacy = payment.provider_payment_id
    if legacy and all(r.provider_payment_id != legacy for r in rows):
        status = payment.status if payment.status in domain.PROVIDER_STATUSES else "waiting"
        row = ProviderPayment(
            payment_id=payment.id,
            provider_payment_id=legacy,
            status=status,
            price_amount=payment.price_amount,
            price_currency=payment.price_currency,
            pay_amount=payment.pay_amount,
            actually_paid=payment.actually_paid,
            pay_currency=payment.pay_currency,
            outcome_amount=payment.outcome_amount,
            outcome_currency=payment.outcome_currency,
            provider_updated_at_ms=payment.provider_updated_at_ms,
        )
        repository.add_provider_payment(session, row)
        rows.insert(0, row)
    return rows


def _take_report(row: ProviderPayment, report: ProviderReport) -> None:
    row.status = report.status
    for name in (
        "price_amount",
        "price_currency",
        "pay_amount",
        "actually_paid",
        "pay_currency",
        "outcome_amount",
        "outcome_currency",
        "parent_payment_id",
        "purchase_id",
    ):
        value = getattr(report, name)
        if value is not None:
            setattr(row, name, value)
    if report.fixed_rate is not None:
        row.fixed_rate = report.fixed_rate
    if report.expires_at_ms is not None:
        row.expires_at = datetime.fromtimestamp(report.expires_at_ms / 1000, UTC)
    if report.updated_at_ms is not None:
        row.provider_updated_at_ms = report.updated_at_ms


async def raise_attention(
    session: AsyncSession,
    payment: Payment,
    *,
    kind: str,
    key: str,
    detail: str,
    report: ProviderReport | None = None,
    row: ProviderPayment | None = None,
    causation: uuid.UUID | None = None,
) -> bool:
    """Publish ``payments.attention_raised.v1`` the first time (payment, key) is seen."""
    if not await repository.claim_attention(session, payment_id=payment.id, key=key, kind=kind):
        return False
    envelope: dict[str, str] = {}
    if payment.correlation_id:
        envelope["correlation_id"] = payment.correlation_id
    if causation is not None:
        envelope["causation_id"] = str(causation)
    await add_to_outbox(
        session,
        Outbox,
        PaymentAttentionRaised(
            payment_id=payment.id,
            order_id=payment.order_id,
            kind=kind,
            key=key[:120],
            detail=detail[:500],
            provider_payment_id=(row.provider_payment_id if row else None)
            or (report.payment_id if report else None),
            parent_payment_id=row.parent_payment_id if row else None,
            provider_status=(report.status[:40] if report else None),
            payment_status=payment.status,
            amount=(row.actually_paid if row else None)
            or (report.actually_paid if report else None),
            currency=(row.pay_currency if row else None)
            or (report.pay_currency if report else None),
            **envelope,
        ),
    )
    log.warning(
        "payment_needs_attention", payment_id=str(payment.id), kind=kind, detail=detail[:200]
    )
    return True


async def _attention_for_report(
    session: AsyncSession,
    payment: Payment,
    row: ProviderPayment,
    rows: list[ProviderPayment],
    report: ProviderReport,
    *,
    closed_before: str,
    event_id: uuid.UUID | None,
) -> None:
    """What an operator must see about a provider payment that just moved."""
    ppid = row.provider_payment_id
    status = row.status
    if row.parent_payment_id and status in domain.CREDITED:
        parent = next((r for r in rows if r.provider_payment_id == row.parent_payment_id), None)
        wrong = parent is not None and domain.is_wrong_asset(_state(row), _state(parent))
        kind = "wrong_asset" if wrong else "child_payment"
        what = "wrong-asset deposit" if wrong else "repeated deposit"
        await raise_attention(
            session,
            payment,
            kind=kind,
            key=f"{kind}:{ppid}",
            detail=f"{what} {ppid} of payment {row.parent_payment_id}: "
            f"{amount_text(row.actually_paid or Decimal(0))} {row.pay_currency or ''} {status}",
            report=report,
            row=row,
            causation=event_id,
        )
    if status == "cancelled":
        await raise_attention(
            session,
            payment,
            kind="cancelled",
            key=f"cancelled:{ppid}",
            detail=f"provider payment {ppid} cancelled by the merchant",
            report=report,
            row=row,
            causation=event_id,
        )
    if status in domain.MONEY and closed_before in ("expired", "failed", "refunded"):
        await raise_attention(
            session,
            payment,
            kind="late_money",
            key=f"late_money:{ppid}",
            detail=f"money ({status}) for an order whose payment was already {closed_before}",
            report=report,
            row=row,
            causation=event_id,
        )
    other_paid = any(
        r.status == "finished" and r.provider_payment_id != ppid and r.parent_payment_id is None
        for r in rows
    )
    if (
        status in domain.CREDITED
        and row.parent_payment_id is None
        and closed_before == "finished"
        and other_paid
    ):
        await raise_attention(
            session,
            payment,
            kind="late_money",
            key=f"paid_twice:{ppid}",
            detail=f"a second payment ({ppid}, {status}) for an order already paid: refund it?",
            report=report,
            row=row,
            causation=event_id,
        )


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
    rules: Rules | None = None,
    attached_by: str | None = None,
) -> Applied:
    """One provider report: move its provider payment, then the order's verdict over all of
    them — ledger, payment and event in the caller's transaction.

    ``payment`` must be row-locked by the caller (``repository.lock``): every provider payment
    of the order changes under that lock, so the ledger stays gap-free.
    """
    rules = rules or Rules()
    ppid = report.payment_id
    if not ppid:
        decision = Decision(payment.status, payment.status, False, "report without payment_id")
        _append(
            session,
            payment,
            source=source,
            outcome="ignored",
            reported=report.status,
            previous=payment.status,
            reason=decision.reason,
            report=report,
            event_id=event_id,
        )
        return Applied(decision, recorded=True, version=None)
    rows = await _known_payments(session, payment)
    if payment.provider_payment_id is None:  # the first provider payment we hear of
        payment.provider_payment_id = ppid
    row = next((r for r in rows if r.provider_payment_id == ppid), None)
    applies, step_reason = domain.step_provider_payment(
        row.status if row else None,
        report.status,
        current_at_ms=row.provider_updated_at_ms if row else None,
        reported_at_ms=report.updated_at_ms,
    )
    if not applies:
        decision = Decision(payment.status, payment.status, False, step_reason)
        if report.status not in domain.PROVIDER_STATUSES:
            await raise_attention(
                session,
                payment,
                kind="unknown_status",
                key=f"unknown_status:{ppid}:{report.status[:40]}",
                detail=f"provider payment {ppid} reports unknown status {report.status[:40]!r}",
                report=report,
                causation=event_id,
            )
        if not record_duplicates and row is not None and report.status == row.status:
            return Applied(decision, recorded=False, version=None)
        reason = f"{step_reason} (provider payment {ppid})"
        _append(
            session,
            payment,
            source=source,
            outcome="ignored",
            reported=report.status,
            previous=payment.status,
            reason=f"{reason}; {note}" if note else reason,
            report=report,
            event_id=event_id,
        )
        log.info(
            "payment_status_ignored",
            payment_id=str(payment.id),
            reported=report.status,
            status=payment.status,
            source=source,
            reason=step_reason,
        )
        return Applied(decision, recorded=True, version=None)

    if row is None:
        row = ProviderPayment(payment_id=payment.id, provider_payment_id=ppid, status="")
        row.attached_by = attached_by
        repository.add_provider_payment(session, row)
        rows.append(row)
    _take_report(row, report)
    closed_before = payment.status
    await _attention_for_report(
        session, payment, row, rows, report, closed_before=closed_before, event_id=event_id
    )
    invoiced = Invoiced(payment.price_amount, payment.price_currency)
    target = domain.verdict(invoiced, [_state(r) for r in rows], tolerance=rules.tolerance)
    if target is None:
        decision = Decision(payment.status, payment.status, False, "no verdict yet")
    else:
        decision = domain.step_order_payment(payment.status, target)
    reason = f"{step_reason} (provider payment {ppid}); {decision.reason}"
    if note:
        reason = f"{reason}; {note}"
    if not decision.applied:
        # The provider payment moved (kept in provider_payment) but the order's payment did
        # not: recorded, nothing published. A top-up that still falls short changes what is
        # missing, though.
        if target is not None and target.status == payment.status == "partially_paid":
            payment.actually_paid = target.credited
            payment.shortfall = target.shortfall
    elif target is not None:
        _enter(payment, decision, target, rules)
    version = _append(
        session,
        payment,
        source=source,
        outcome="applied" if decision.applied else "recorded",
        reported=report.status,
        previous=decision.previous,
        reason=reason,
        report=report,
        event_id=event_id,
    )
    if not decision.applied:
        return Applied(decision, recorded=True, version=None)
    assert target is not None  # an applied decision comes from a verdict
    if target.discrepancy and target.deciding is not None:
        await raise_attention(
            session,
            payment,
            kind="amount_discrepancy",
            key=f"amount_discrepancy:{target.deciding.provider_payment_id}",
            detail=target.discrepancy,
            report=report,
            row=row,
            causation=event_id,
        )
    if decision.status == "refunded" and decision.previous == "finished":
        await raise_attention(
            session,
            payment,
            kind="refunded",
            key=f"refunded:{ppid}",
            detail=f"provider payment {ppid} refunded after the order was paid",
            report=report,
            row=row,
            causation=event_id,
        )
    if decision.status == "mismatch":
        await raise_attention(
            session,
            payment,
            kind="price_mismatch",
            key=f"price_mismatch:{ppid}",
            detail=decision.reason,
            report=report,
            row=row,
            causation=event_id,
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
            provider_payment_id=target.deciding.provider_payment_id if target.deciding else ppid,
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


def _enter(payment: Payment, decision: Decision, target: domain.Verdict, rules: Rules) -> None:
    """Put the verdict on the payment row (amounts of the payment that decided it)."""
    payment.status = decision.status
    deciding = target.deciding
    if deciding is not None:
        for name in ("pay_amount", "pay_currency", "outcome_amount", "outcome_currency"):
            value = getattr(deciding, name)
            if value is not None:
                setattr(payment, name, value)
        paid = target.credited if target.credited is not None else deciding.actually_paid
        if paid is not None:
            payment.actually_paid = paid
    payment.surplus = decision.surplus
    payment.shortfall = decision.shortfall
    _schedule_after(payment, decision.status, rules)


def _schedule_after(payment: Payment, status: str, rules: Rules) -> None:
    """When the poller looks again. Paid, refunded or mismatched: never. Partially paid: keep
    looking (a top-up to the same address completes it, and its IPN may get lost). Expired or
    failed: no (late money comes with its IPNs). Live again after a close: yes."""
    now = utcnow()
    if domain.is_final(status):
        payment.final_at = now
        if status != "partially_paid":
            payment.next_check_at = None
        elif payment.next_check_at is None:
            payment.next_check_at = now + timedelta(seconds=rules.recheck_seconds)
    else:
        payment.final_at = None
        if payment.next_check_at is None:
            payment.next_check_at = now + timedelta(seconds=rules.recheck_seconds)


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
    provider_payment_id: str | None = None,
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
        provider_payment_id=provider_payment_id or payment.provider_payment_id,
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
    if updated is None:
        updated = epoch_ms(raw.get("updated_at"))
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
        parent_payment_id=_id_text(raw.get("parent_payment_id")),
        purchase_id=_id_text(raw.get("purchase_id")),
    )


async def _needs_confirmation(
    session: AsyncSession, report: ProviderReport, settings: PaymentsSettings
) -> bool:
    """A final status the provider payment would take: ask the provider first. A repeat of
    what we hold (a duplicate storm, the provider's retries) costs no provider call."""
    if not (settings.confirm_final_with_provider and report.status in domain.PROVIDER_FINAL):
        return False
    if report.payment_id:
        held = await repository.provider_payment_state(session, report.payment_id)
        if held is not None:
            applies, _ = domain.step_provider_payment(
                held[0], report.status, current_at_ms=held[1], reported_at_ms=report.updated_at_ms
            )
            return applies
    return True


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
    # lookup, which saves re-reading the row.
    confirming = await _needs_confirmation(session, report, settings)
    payment, found_by = await repository.find_for_report(
        session,
        provider_payment_id=report.payment_id,
        invoice_id=report.invoice_id,
        order_id=report.order_id,
        parent_payment_id=report.parent_payment_id,
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
    other_invoice = (
        found_by == "order_id" and report.invoice_id and report.invoice_id != payment.invoice_id
    )

    if confirming:
        confirmed = await _confirm(client, report, payment, settings)
        if isinstance(confirmed, Unconfirmed):
            locked = await repository.lock(session, payment.id)
            assert locked is not None
            _append(
                session,
                locked,
                source="ipn",
                outcome="ignored",
                reported=report.status,
                previous=locked.status,
                reason=confirmed.reason,
                report=report,
                event_id=event.event_id,
            )
            if confirmed.kind is not None:
                await raise_attention(
                    session,
                    locked,
                    kind=confirmed.kind,
                    key=f"{confirmed.kind}:{report.payment_id}",
                    detail=confirmed.reason,
                    report=report,
                    causation=event.event_id,
                )
                # The poller asks again later: a refusal may be our configuration, not the money.
                if locked.next_check_at is None:
                    locked.next_check_at = utcnow() + timedelta(
                        seconds=settings.poll_interval_seconds
                    )
            return None
        report = confirmed
        note = "; ".join(filter(None, [f"confirmed with the provider ({report.status})", note]))

    if locked_at_lookup:
        locked = payment
    else:
        locked = await repository.lock(session, payment.id)  # re-read: another IPN may have won
        assert locked is not None
    if other_invoice:
        # Money for our order on another invoice (an earlier attempt's orphan invoice, a payment
        # made outside our invoice): counted like any other, and shown to an operator.
        await raise_attention(
            session,
            locked,
            kind="other_invoice",
            key=f"other_invoice:{report.payment_id}",
            detail=f"IPN for invoice {report.invoice_id}, not ours ({locked.invoice_id})",
            report=report,
            causation=event.event_id,
        )
    return await apply_report(
        session,
        locked,
        report,
        source="ipn",
        event_id=event.event_id,
        correlation_id=event.correlation_id,
        note=note,
        rules=Rules.of(settings),
    )


def _replay_note(event: IpnReceived) -> str | None:
    if not event.replay:
        return None
    who = f" by {event.replayed_by}" if event.replayed_by else ""
    why = f": {event.replay_reason}" if event.replay_reason else ""
    return f"replay{who}{why}"[:300]


@dataclass(frozen=True, slots=True)
class Unconfirmed:
    """Why a final status cannot be acted on; ``kind`` set when an operator must look."""

    reason: str
    kind: str | None = None


def _with_ipn_details(truth: ProviderReport, ipn: ProviderReport) -> ProviderReport:
    """The provider's answer, with what only the IPN carried (the API may omit them)."""
    return replace(
        truth,
        parent_payment_id=truth.parent_payment_id or ipn.parent_payment_id,
        purchase_id=truth.purchase_id or ipn.purchase_id,
        invoice_id=truth.invoice_id or ipn.invoice_id,
        updated_at_ms=truth.updated_at_ms or ipn.updated_at_ms,
    )


async def _confirm(
    client: NowPaymentsClient,
    report: ProviderReport,
    payment: Payment,
    settings: PaymentsSettings,
) -> ProviderReport | Unconfirmed:
    """The provider's own answer for a final status, or why it cannot be acted on."""
    if not report.payment_id:
        return Unconfirmed("final status without payment_id: cannot confirm with the provider")
    try:
        truth = await client.get_payment(report.payment_id)
    except ProviderNotFoundError as exc:
        return Unconfirmed(f"provider does not confirm payment {report.payment_id}: {exc.code}")
    except ProviderUnavailableError as exc:
        raise NotYetVisibleError(
            f"provider cannot confirm payment {report.payment_id} now: {exc.code}",
            retry_after=settings.provider_unavailable_retry_seconds,
        ) from exc
    except ProviderError as exc:
        # 400/401/403 …: asking again will not help until someone fixes it (a wrong API key,
        # a payment of another account). Reported, not retried into the dead-letter stream.
        return Unconfirmed(
            f"provider refused GET /payment/{report.payment_id}: {exc.code} {exc.message}"[:500],
            kind="provider_refused",
        )
    if truth.order_id and truth.order_id != payment.order_id:
        return Unconfirmed(
            f"provider payment {truth.payment_id} belongs to order {truth.order_id[:64]}"
        )
    return _with_ipn_details(truth.report(), report)


# --- reconciliation -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    """What the poller needs of a claimed payment, read inside the claim transaction."""

    id: uuid.UUID
    status: str
    invoice_id: str | None
    provider_payment_id: str | None
    invoice_expires_at: datetime | None
    live_payment_ids: tuple[str, ...] = ()  # provider payments not final yet


@dataclass(frozen=True, slots=True)
class PollResult:
    kind: Literal["report", "expire", "nothing", "error"]
    report: ProviderReport | None = None
    reason: str = ""
    error_code: str | None = None
    reports: tuple[ProviderReport, ...] = ()  # every provider payment found (report included)


async def claim_due(
    session: AsyncSession, settings: PaymentsSettings, *, now: datetime
) -> list[Claimed]:
    """Lease due payments: move each one's next check out by its backoff step."""
    rows = await repository.claim_due(session, now=now, limit=settings.poll_batch_size)
    claimed: list[Claimed] = []
    grace = timedelta(seconds=settings.expiry_grace_seconds)
    for payment in rows:
        if domain.is_final(payment.status) and domain.invoice_overdue(
            payment.invoice_expires_at, grace, now
        ):
            # Partially paid (or re-checked after a refusal) until the invoice's lifetime is
            # over; after that a top-up still arrives with its IPNs, but we stop asking.
            payment.next_check_at = None
            continue
        payment.next_check_at = now + domain.next_check_delay(
            payment.checks_done, settings.poll_interval_seconds, settings.poll_max_interval_seconds
        )
        payment.checks_done += 1
        payment.last_checked_at = now
        known = await repository.provider_payments(session, payment.id)
        live = tuple(r.provider_payment_id for r in known if r.status not in domain.PROVIDER_FINAL)
        claimed.append(
            Claimed(
                payment.id,
                payment.status,
                payment.invoice_id,
                payment.provider_payment_id,
                payment.invoice_expires_at,
                live,
            )
        )
    return claimed


def _poll_result(reports: list[ProviderReport]) -> PollResult:
    picked = domain.pick_payment(reports)
    if picked is None:
        return PollResult("nothing")
    return PollResult("report", picked, reports=tuple(reports))


async def check_with_provider(
    client: NowPaymentsClient, claimed: Claimed, settings: PaymentsSettings, *, now: datetime
) -> PollResult:
    """Ask the provider where a payment stands. No database access: runs between transactions.

    The invoice's payment list (it needs the JWT) finds every payment of the invoice, also the
    ones whose IPNs all got lost; known payments are also asked one by one when the list is
    refused or lists nothing.
    """
    grace = timedelta(seconds=settings.expiry_grace_seconds)
    overdue = domain.invoice_overdue(claimed.invoice_expires_at, grace, now)
    reports: list[ProviderReport] = []
    listed_none = False
    try:
        if settings.poll_lookup_by_invoice and claimed.invoice_id:
            try:
                found = await client.payments_for_invoice(claimed.invoice_id)
            except ProviderRejectedError as exc:
                # Without working JWT credentials the list is refused: known ids still work.
                log.warning("invoice_lookup_refused", code=exc.code)
            else:
                reports = [p.report() for p in found]
                listed_none = not reports
        listed = {r.payment_id for r in reports}
        ask = [
            pid
            for pid in dict.fromkeys([*claimed.live_payment_ids, claimed.provider_payment_id])
            if pid and pid not in listed
        ]
        for pid in ask:
            payment = await client.get_payment(pid)
            reports.append(payment.report())
    except ProviderError as exc:
        return PollResult("error", reason=exc.message, error_code=exc.code)
    if reports:
        return _poll_result(reports)
    if overdue and claimed.provider_payment_id is None:
        if listed_none:
            return PollResult(
                "expire", reason="invoice expired without a payment (provider lists none)"
            )
        return PollResult("expire", reason="invoice lifetime passed and no payment ever reported")
    return PollResult("nothing")


async def apply_poll_result(
    session: AsyncSession,
    payment_id: uuid.UUID,
    result: PollResult,
    settings: PaymentsSettings | None = None,
) -> Applied | None:
    payment = await repository.lock(session, payment_id)
    if payment is None:
        return None
    if result.kind == "error":
        payment.last_error_code = result.error_code
        payment.last_error = result.reason
        return None
    if result.kind == "nothing":
        return None
    if result.kind == "expire":
        if domain.is_final(payment.status):
            return None  # settled meanwhile (an IPN won the race): nothing to add
        decision = domain.expired_decision(payment.status, result.reason)
        report = ProviderReport(status="expired")
        return await _apply_local(session, payment, decision, report, source="poll")
    rules = Rules.of(settings) if settings is not None else Rules()
    reports = result.reports or ((result.report,) if result.report else ())
    last: Applied | None = None
    for report in reports:
        applied = await apply_report(
            session, payment, report, source="poll", record_duplicates=False, rules=rules
        )
        if applied.version is not None or last is None:
            last = applied
    return last


async def _apply_local(
    session: AsyncSession,
    payment: Payment,
    decision: Decision,
    report: ProviderReport,
    *,
    source: TransitionSource,
    event_id: uuid.UUID | None = None,
) -> Applied:
    """A transition we decide ourselves (expiry, an operator), through the same ledger and
    event."""
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
            causation=event_id,
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


# --- operator actions ---------------------------------------------------------------------


def action_reply(action: PaymentAction) -> PaymentActionReply:
    return PaymentActionReply(
        ok=True,
        payment_id=str(action.payment_id),
        status=action.status_after,
        changed=action.changed,
    )


def action_error(code: str, message: str, *, retryable: bool = False) -> PaymentActionReply:
    return PaymentActionReply(
        ok=False, error_code=code, error_message=message[:500], retryable=retryable
    )


def _record_action(
    session: AsyncSession,
    payment: Payment,
    *,
    kind: str,
    action_id: uuid.UUID,
    operator: str,
    reason: str,
    changed: bool,
    provider_payment_id: str | None = None,
) -> PaymentAction:
    action = PaymentAction(
        action_id=action_id,
        kind=kind,
        payment_id=payment.id,
        order_id=payment.order_id,
        operator=operator,
        reason=reason,
        provider_payment_id=provider_payment_id,
        status_after=payment.status,
        changed=changed,
    )
    repository.add_action(session, action)
    return action


async def settle(session: AsyncSession, request: SettlePaymentRequest) -> PaymentActionReply:
    """An operator settles the order's payment as paid: the normal flow (order paid →
    fulfillment) follows from the ``finished`` event. Exactly once per action and per order."""
    done = await repository.get_action(session, request.action_id)
    if done is not None:
        return action_reply(done)
    payment = await repository.lock_by_order(session, request.order_id)
    if payment is None:
        return action_error("payment_not_found", f"no payment for order {request.order_id}")
    if payment.status == "refunded":
        return action_error("refunded", "the payment was refunded: settle it with the customer")
    changed = payment.status != "finished"
    if changed:
        decision = Decision(
            previous=payment.status,
            status="finished",
            applied=True,
            reason=f"settled as paid by operator {request.operator}: {request.reason}"[:500],
        )
        await _apply_local(session, payment, decision, ProviderReport("finished"), source="admin")
        await raise_attention(
            session,
            payment,
            kind="settled_by_operator",
            key=f"settled:{request.action_id}",
            detail=decision.reason,
        )
    log.info(
        "payment_settled_by_operator",
        order_id=payment.order_id,
        operator=request.operator[:100],
        changed=changed,
    )
    return action_reply(
        _record_action(
            session,
            payment,
            kind="settle",
            action_id=request.action_id,
            operator=request.operator,
            reason=request.reason,
            changed=changed,
        )
    )


async def attach_precheck(
    session: AsyncSession, request: AttachPaymentRequest
) -> PaymentActionReply | None:
    """An answer without asking the provider (a repeat, an unknown order), or None."""
    done = await repository.get_action(session, request.action_id)
    if done is not None:
        return action_reply(done)
    payment = await repository.get_by_order(session, request.order_id)
    if payment is None:
        return action_error("payment_not_found", f"no payment for order {request.order_id}")
    return None


async def attach(
    session: AsyncSession,
    request: AttachPaymentRequest,
    truth: ProviderReport,
    settings: PaymentsSettings,
) -> PaymentActionReply:
    """Count a provider payment (as the provider reports it now) towards the order."""
    done = await repository.get_action(session, request.action_id)
    if done is not None:
        return action_reply(done)
    payment = await repository.lock_by_order(session, request.order_id)
    if payment is None:
        return action_error("payment_not_found", f"no payment for order {request.order_id}")
    ppid = request.provider_payment_id
    owner = await repository.owner_of_provider_payment(session, ppid)
    if owner is not None and owner != payment.id:
        return action_error(
            "belongs_to_other_order", f"provider payment {ppid} already counts for another order"
        )
    if truth.order_id and truth.order_id != payment.order_id:
        other = await repository.get_by_order(session, truth.order_id)
        if other is not None:
            return action_error(
                "belongs_to_other_order",
                f"provider payment {ppid} was made for our order {truth.order_id[:64]}",
            )
    changed = owner is None
    if changed:
        note = f"attached by operator {request.operator}: {request.reason}"[:500]
        await apply_report(
            session,
            payment,
            replace(truth, payment_id=ppid, parent_payment_id=None),
            source="admin",
            note=note,
            rules=Rules.of(settings),
            attached_by=request.operator[:100],
        )
        await raise_attention(
            session,
            payment,
            kind="attached_by_operator",
            key=f"attached:{ppid}",
            detail=note,
            report=truth,
        )
    return action_reply(
        _record_action(
            session,
            payment,
            kind="attach",
            action_id=request.action_id,
            operator=request.operator,
            reason=request.reason,
            changed=changed,
            provider_payment_id=ppid,
        )
    )
