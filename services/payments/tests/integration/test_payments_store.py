"""The payments schema and use cases against real PostgreSQL (provider faked where noted)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from payments import service
from payments.client import ProviderPayment, ProviderUnavailableError
from payments.models import Base, Outbox, Payment, PaymentTransition
from payments.settings import PaymentsSettings
from shared.contracts.payments import (
    CreateInvoiceRequest,
    PaymentAttentionRaised,
    PaymentStatusChanged,
)
from shared.contracts.webhooks import IpnReceived
from shared.db import create_engine, make_session_factory
from shared.messaging import NotYetVisibleError
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

BIG_PAYMENT_ID = "9007199254740993"  # 2^53 + 1: JavaScript and float cannot hold it
BIG_INVOICE_ID = "18446744073709551557"  # beyond int64 even


@pytest.fixture
async def sessions(clean_infra: Any) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(clean_infra.database_url, pool_size=4)
    yield make_session_factory(engine)
    await engine.dispose()


class FakeProvider:
    """Answers GET /payment/{id} from a dict; unknown ids are 'unavailable'."""

    def __init__(self, payments: dict[str, ProviderPayment] | None = None) -> None:
        self.payments = payments or {}
        self.asked: list[str] = []

    async def get_payment(self, payment_id: str) -> ProviderPayment:
        self.asked.append(payment_id)
        if payment_id not in self.payments:
            raise ProviderUnavailableError("SERVICE_UNAVAILABLE", "down")
        return self.payments[payment_id]


SETTINGS = PaymentsSettings(nowpayments_api_key="k", not_visible_retry_seconds=0.5)


async def add_payment(
    sessions: async_sessionmaker[AsyncSession],
    order_id: str,
    invoice_id: str | None = BIG_INVOICE_ID,
    **fields: Any,
) -> uuid.UUID:
    payment_id = uuid.uuid4()
    async with sessions() as session, session.begin():
        session.add(
            Payment(
                id=payment_id,
                order_id=order_id,
                provider="nowpayments",
                status="created",
                price_amount=Decimal("25.00"),
                price_currency="usd",
                description="",
                invoice_id=invoice_id,
                invoice_url="http://p/i" if invoice_id else None,
                correlation_id="corr-1",
                **fields,
            )
        )
    return payment_id


def ipn(status: str, **fields: Any) -> IpnReceived:
    base: dict[str, Any] = {
        "webhook_log_id": 1,
        "dedup_key": f"k-{status}-{uuid.uuid4()}",
        "payment_id": BIG_PAYMENT_ID,
        "invoice_id": BIG_INVOICE_ID,
        "order_id": "ord-1",
        "payment_status": status,
        "price_amount": Decimal("25"),
        "price_currency": "usd",
        "pay_amount": Decimal("0.00036101"),
        "actually_paid": Decimal("0.00036101"),
        "pay_currency": "btc",
        "received_at": datetime.now(UTC),
    }
    base.update(fields)
    return IpnReceived(**base)


async def outbox_events(sessions: async_sessionmaker[AsyncSession]) -> list[PaymentStatusChanged]:
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Outbox.payload)
                .where(Outbox.subject == PaymentStatusChanged.SUBJECT)
                .order_by(Outbox.id)
            )
        ).scalars()
        return [PaymentStatusChanged.model_validate_json(p) for p in rows]


async def outbox_attention(
    sessions: async_sessionmaker[AsyncSession],
) -> list[PaymentAttentionRaised]:
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Outbox.payload)
                .where(Outbox.subject == PaymentAttentionRaised.SUBJECT)
                .order_by(Outbox.id)
            )
        ).scalars()
        return [PaymentAttentionRaised.model_validate_json(p) for p in rows]


async def test_migration_matches_the_models(sessions) -> None:
    def diff(connection: Any) -> list[Any]:
        context = MigrationContext.configure(
            connection,
            opts={
                "include_schemas": True,
                "version_table_schema": "payments",
                "include_name": lambda name, type_, parent: type_ != "schema" or name == "payments",
            },
        )
        return [
            d
            for d in compare_metadata(context, Base.metadata)
            if not (isinstance(d, tuple) and d[0] == "remove_table")
        ]

    async with sessions() as session:
        conn = await session.connection()
        found = await conn.run_sync(diff)
        assert found == [], "\n".join(map(repr, found))


async def test_ledger_is_append_only(sessions) -> None:
    payment_id = await add_payment(sessions, "ord-ledger")
    async with sessions() as session, session.begin():
        payment = await session.get(Payment, payment_id)
        service._append(
            session,
            payment,
            source="admin",
            outcome="ignored",
            reported=None,
            previous="created",
            reason="audit note",
        )
    for statement in (
        "UPDATE payments.payment_transition SET reason = 'rewritten'",
        "DELETE FROM payments.payment_transition",
    ):
        async with sessions() as session:
            with pytest.raises(DBAPIError, match="append-only"):
                async with session.begin():
                    await session.execute(text(statement))
    async with sessions() as session:
        [entry] = (await session.execute(select(PaymentTransition))).scalars().all()
    assert entry.reason == "audit note"


async def test_ids_beyond_2_53_survive_ipn_database_and_event(sessions) -> None:
    await add_payment(sessions, "ord-1")
    async with sessions() as session, session.begin():
        await service.handle_ipn(
            session, ipn("waiting", actually_paid=Decimal(0)), FakeProvider(), SETTINGS
        )  # type: ignore[arg-type]
    async with sessions() as session:
        payment = (await session.execute(select(Payment))).scalar_one()
    assert payment.provider_payment_id == BIG_PAYMENT_ID
    assert payment.invoice_id == BIG_INVOICE_ID
    [event] = await outbox_events(sessions)
    assert (event.provider_payment_id, event.invoice_id) == (BIG_PAYMENT_ID, BIG_INVOICE_ID)
    assert event.pay_amount == Decimal("0.00036101")
    assert '"pay_amount":"0.00036101"' in event.model_dump_json()  # money as JSON strings


async def test_final_ipn_uses_the_providers_answer(sessions) -> None:
    await add_payment(sessions, "ord-1")
    truth = ProviderPayment(
        payment_id=BIG_PAYMENT_ID,
        payment_status="finished",
        invoice_id=BIG_INVOICE_ID,
        order_id="ord-1",
        price_amount=Decimal(25),
        price_currency="usd",
        pay_amount=Decimal("0.00036101"),
        actually_paid=Decimal("0.00036102"),
        pay_currency="btc",
    )
    provider = FakeProvider({BIG_PAYMENT_ID: truth})
    async with sessions() as session, session.begin():
        # The IPN claims an underpayment; the provider's answer (overpaid) is what we act on.
        applied = await service.handle_ipn(
            session,
            ipn("finished", actually_paid=Decimal("0.0001")),
            provider,
            SETTINGS,  # type: ignore[arg-type]
        )
    assert applied is not None and applied.decision.status == "finished"
    assert applied.decision.surplus == Decimal("0.00000001")
    assert provider.asked == [BIG_PAYMENT_ID]


async def test_unavailable_provider_defers_a_final_ipn(sessions) -> None:
    await add_payment(sessions, "ord-1")
    with pytest.raises(NotYetVisibleError):
        async with sessions() as session, session.begin():
            await service.handle_ipn(session, ipn("finished"), FakeProvider(), SETTINGS)  # type: ignore[arg-type]
    async with sessions() as session:
        assert (await session.execute(select(Payment.status))).scalar_one() == "created"


async def test_ipn_without_its_payment_row_is_not_yet_visible(sessions) -> None:
    with pytest.raises(NotYetVisibleError) as caught:
        async with sessions() as session, session.begin():
            await service.handle_ipn(session, ipn("waiting"), FakeProvider(), SETTINGS)  # type: ignore[arg-type]
    assert caught.value.retry_after == SETTINGS.not_visible_retry_seconds
    # Found by order id but our invoice id is not stored yet: wait for it too.
    await add_payment(sessions, "ord-1", invoice_id=None)
    with pytest.raises(NotYetVisibleError):
        async with sessions() as session, session.begin():
            await service.handle_ipn(session, ipn("waiting"), FakeProvider(), SETTINGS)  # type: ignore[arg-type]


async def test_money_for_our_order_on_another_invoice_counts_and_is_flagged(sessions) -> None:
    # An orphan invoice of an earlier attempt, or a payment made outside our invoice: money
    # for our order all the same. Counted like any payment, and put in front of an operator.
    await add_payment(sessions, "ord-1", invoice_id="5000000001")
    async with sessions() as session, session.begin():
        result = await service.handle_ipn(
            session, ipn("waiting", invoice_id="5000000999"), FakeProvider(), SETTINGS
        )  # type: ignore[arg-type]
    assert result is not None and result.decision.status == "waiting"
    [event] = await outbox_events(sessions)
    assert event.status == "waiting"
    [flag] = await outbox_attention(sessions)
    assert flag.kind == "other_invoice" and "not ours" in flag.detail
    # The provider retrying the same IPN for days raises it once.
    async with sessions() as session, session.begin():
        await service.handle_ipn(
            session, ipn("waiting", invoice_id="5000000999"), FakeProvider(), SETTINGS
        )  # type: ignore[arg-type]
    assert len(await outbox_attention(sessions)) == 1


async def test_record_payment_is_one_row_per_order_and_refuses_another_price(sessions) -> None:
    request = CreateInvoiceRequest(
        order_id="ord-x", price_amount=Decimal("9.99"), price_currency="EUR", correlation_id="c"
    )
    async with sessions() as session, session.begin():
        first = await service.record_payment(session, request)
    async with sessions() as session, session.begin():
        again = await service.record_payment(session, request)
    assert first.id == again.id and again.price_currency == "eur"
    from payments.errors import OrderConflictError

    with pytest.raises(OrderConflictError):
        async with sessions() as session, session.begin():
            await service.record_payment(
                session, request.model_copy(update={"price_amount": Decimal("10")})
            )


async def test_poll_claims_are_leased_and_skip_final_payments(sessions) -> None:
    now = datetime.now(UTC)
    due = await add_payment(sessions, "ord-due", next_check_at=now)
    await add_payment(
        sessions,
        "ord-later",
        invoice_id="5000000002",
        next_check_at=datetime(2999, 1, 1, tzinfo=UTC),
    )
    async with sessions() as session, session.begin():
        claimed = await service.claim_due(session, SETTINGS, now=now)
    assert [c.id for c in claimed] == [due]
    async with sessions() as session, session.begin():
        assert await service.claim_due(session, SETTINGS, now=now) == []  # leased
    async with sessions() as session:
        payment = await session.get(Payment, due)
    assert payment.checks_done == 1 and payment.next_check_at > now
