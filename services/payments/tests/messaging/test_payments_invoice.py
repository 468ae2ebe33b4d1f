"""payments.create_invoice over NATS request-reply: idempotency, provider errors, bad input."""

from __future__ import annotations

import asyncio

from payments.models import Payment
from shared.contracts.payments import CreateInvoiceReply, CreateInvoiceRequest
from sqlalchemy import func, select

from ..conftest import Emulator, StartWorker, bound_socket
from .test_payments_flow import create


async def count_payments(run) -> int:
    async with run.ctx.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Payment)) or 0)


async def test_provider_error_is_answered_recorded_and_a_retry_succeeds(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    await emulator.fault(
        operation="create_invoice",
        count=1,
        status_code=500,
        code="INTERNAL_SERVER_ERROR",
        message="upstream wobble",
    )
    failed = await create(run, "ord-retry")
    assert (failed.ok, failed.error_code, failed.retryable) == (
        False,
        "INTERNAL_SERVER_ERROR",
        True,
    )
    assert failed.error_message == "upstream wobble" and failed.payment_id
    payment = await run.payment("ord-retry")
    assert payment is not None and payment.status == "created" and payment.invoice_id is None
    assert (payment.last_error_code, payment.last_error) == (
        "INTERNAL_SERVER_ERROR",
        "upstream wobble",
    )
    assert await emulator.invoices("ord-retry") == []

    ok = await create(run, "ord-retry")
    assert ok.ok and ok.payment_id == failed.payment_id
    assert len(await emulator.invoices("ord-retry")) == 1
    payment = await run.payment("ord-retry")
    assert payment.last_error is None and payment.invoice_attempts == 2


async def test_amount_below_the_provider_minimum_is_not_retryable(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    reply = await create(run, "ord-dust", amount="0.5")
    assert (reply.ok, reply.error_code, reply.retryable) == (False, "AMOUNT_MINIMAL_ERROR", False)
    assert "minimal" in (reply.error_message or "")
    assert (await run.payment("ord-dust")).last_error_code == "AMOUNT_MINIMAL_ERROR"


async def test_same_order_for_another_price_is_a_conflict(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    first = await create(run, "ord-conflict", amount="25")
    assert first.ok
    other = await create(run, "ord-conflict", amount="30")
    assert (other.ok, other.error_code, other.retryable) == (False, "order_conflict", False)
    assert len(await emulator.invoices("ord-conflict")) == 1
    # The same price written differently is the same order.
    same = await create(run, "ord-conflict", amount="25.000")
    assert same.ok and same.invoice_id == first.invoice_id


async def test_concurrent_requests_for_one_order_create_one_invoice(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    replies = await asyncio.gather(*(create(run, "ord-race") for _ in range(4)))
    assert all(r.ok for r in replies)
    assert len({r.invoice_id for r in replies}) == 1
    assert len(await emulator.invoices("ord-race")) == 1
    assert await count_payments(run) == 1


async def test_unreachable_provider_is_a_retryable_error(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    sock, port = bound_socket()  # bound, never listening: connection refused
    try:
        run = await start_payments(nowpayments_base=f"http://127.0.0.1:{port}/v1")
        reply = await create(run, "ord-down")
    finally:
        sock.close()
    assert (reply.ok, reply.error_code, reply.retryable) == (False, "PROVIDER_UNREACHABLE", True)
    assert (await run.payment("ord-down")).last_error_code == "PROVIDER_UNREACHABLE"


async def test_invalid_request_is_refused_and_changes_nothing(
    start_payments: StartWorker, emulator: Emulator, clean_infra
):
    run = await start_payments()
    response = await run.ctx.broker.request(
        b'{"order_id": "ord-bad", "price_amount": "-3", "price_currency": "USD"}',
        subject=CreateInvoiceRequest.SUBJECT,
        timeout=5,
    )
    reply = CreateInvoiceReply.model_validate_json(response.body)
    assert (reply.ok, reply.error_code) == (False, "invalid_request")
    assert "price_amount" in (reply.error_message or "")
    assert await count_payments(run) == 0
    assert reply.price_amount is None
