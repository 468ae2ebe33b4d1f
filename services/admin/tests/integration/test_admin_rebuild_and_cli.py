"""Rebuilding the read models from the streams, and the ``python -m admin`` commands."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import nats
from admin.__main__ import main as cli_main
from admin.models import READ_MODELS, AdminUser, OrderView, PaymentView, WebhookLogView
from admin.rebuild import rebuild
from nats.js.client import JetStreamContext
from shared.contracts import subjects
from shared.contracts.fulfillment import EmailSent, GrantsRevoked, OrderDelivered
from shared.contracts.orders import OrderPaid
from shared.contracts.payments import PaymentAttentionRaised
from shared.contracts.webhooks import IpnRejected
from shared.messaging import DeadLetter
from shared.testing import wait_for
from sqlalchemy import delete, select, text, update

from ..conftest import (
    PASSWORD,
    T0,
    AdminApi,
    Publisher,
    consumers_drained,
    ipn_received,
    minutes,
    order_created,
    payment_event,
)


async def _snapshot(api: AdminApi) -> dict[str, list[dict[str, Any]]]:
    snap = {}
    async with api.ctx.sessions() as session:
        for model in READ_MODELS:
            table = model.__table__
            rows = (await session.execute(select(table))).mappings().all()
            key = [c.name for c in table.primary_key.columns]
            snap[table.name] = sorted(
                (dict(r) for r in rows), key=lambda r: tuple(str(r[k]) for k in key)
            )
    return snap


async def _publish_history(publish: Publisher) -> None:
    pid = uuid.uuid4()
    ipn = ipn_received(21, status="finished", at=T0 + minutes(3))
    created = order_created("ord-rb", at=T0)
    events = [
        created,
        payment_event(
            pid,
            version=1,
            status="waiting",
            previous="created",
            order_id="ord-rb",
            at=T0 + minutes(1),
        ),
        ipn,
        payment_event(
            pid,
            version=2,
            status="finished",
            order_id="ord-rb",
            at=T0 + minutes(3),
            actually_paid=Decimal("0.00050000"),
            causation_id=str(ipn.event_id),
        ),
        OrderPaid(
            order_id="ord-rb",
            status="paid",
            version=2,
            email=created.email,
            total=created.total,
            currency="usd",
            items=created.items,
            payment_id=str(pid),
            occurred_at=T0 + minutes(4),
        ),
        IpnRejected(
            failure_id=3,
            reason="bad signature",
            received_at=T0 + minutes(2),
            occurred_at=T0 + minutes(2),
        ),
        OrderDelivered(
            order_id="ord-rb",
            delivery_id="d-1",
            item_count=1,
            link_expires_at=T0 + timedelta(days=1),
            occurred_at=T0 + minutes(5),
        ),
        EmailSent(
            order_id="ord-rb",
            template="delivery",
            status="sent",
            attempts=1,
            recipient_masked="b***@example.com",
            occurred_at=T0 + minutes(5),
        ),
        GrantsRevoked(
            order_id="ord-rb",
            revoked=1,
            operator_id="op",
            reason="fraud",
            occurred_at=T0 + minutes(9),
        ),
        PaymentAttentionRaised(
            payment_id=pid,
            order_id="ord-rb",
            kind="overpaid",
            key="overpaid:5077125051",
            detail="paid 0.0005, due 0.0004",
            amount=Decimal("0.00050000"),
            currency="btc",
            occurred_at=T0 + minutes(3),
        ),
    ]
    for event in events:
        await publish.event(event)
    letter = DeadLetter(
        consumer="orders-paid",
        original_subject=subjects.PAYMENT_STATUS_CHANGED,
        stream_sequence=2,
        deliveries=5,
        error="boom",
        body="{}",
        dead_lettered_at=T0,
    )
    await publish.raw(
        "deadletter.orders-paid", letter.model_dump_json().encode(), f"dl-{uuid.uuid4()}"
    )


async def _projected(api: AdminApi) -> dict[str, list[dict[str, Any]]]:
    """The read models once the live worker has projected all of ``_publish_history``."""
    every = [
        *subjects.ORDERS_EVENTS,
        *subjects.PAYMENTS_EVENTS,
        *subjects.WEBHOOKS_EVENTS,
        *subjects.FULFILLMENT_EVENTS,
        "deadletter.>",
    ]

    async def all_projected() -> bool:
        if not await consumers_drained(api.settings.nats_url, every):
            return False
        snap = await _snapshot(api)
        return (
            len(snap["dead_letter_view"]) == 1
            and len(snap["revocation_view"]) == 1
            and len(snap["attention_item"]) == 1
        )

    await wait_for(all_projected, timeout=20, message="history projected")
    return await _snapshot(api)


async def test_rebuild_restores_every_read_model_from_the_streams(
    admin_api: AdminApi, admin_worker, publish: Publisher
):
    await _publish_history(publish)
    before = await _projected(admin_api)
    assert {name: len(rows) for name, rows in before.items()} == {
        "payment_view": 1,
        "payment_transition_view": 2,
        "order_view": 1,
        "order_event_view": 2,
        "webhook_log_view": 2,
        "webhook_event_view": 1,
        "delivery_view": 1,
        "email_view": 1,
        "revocation_view": 1,
        "dead_letter_view": 1,
        "attention_item": 1,
    }

    # damage the read models the way a bug or a bad manual fix would
    async with admin_api.ctx.sessions() as session, session.begin():
        await session.execute(update(PaymentView).values(status="waiting", version=1))
        await session.execute(delete(OrderView))
        await session.execute(delete(WebhookLogView))
        await session.execute(text("DELETE FROM admin.dead_letter_view"))
        await session.execute(text("DELETE FROM admin.attention_item"))

    nc = await nats.connect(admin_api.settings.nats_url)
    try:
        report = await rebuild(admin_api.ctx.sessions, nc.jetstream(), batch_size=3)
        consumers = await nc.jetstream().consumers_info("PAYMENTS")
    finally:
        await nc.close()
    assert report.applied == 11 and all(r.skipped == 0 for r in report.streams.values())
    assert {c.name for c in consumers} == {  # cleaned up
        "admin-payments-status_changed-v1",
        "admin-payments-attention_raised-v1",
    }
    assert await _snapshot(admin_api) == before

    # rebuilding again gives the same result (and the live worker keeps working on top)
    nc = await nats.connect(admin_api.settings.nats_url)
    try:
        await rebuild(admin_api.ctx.sessions, nc.jetstream())
    finally:
        await nc.close()
    assert await _snapshot(admin_api) == before


async def test_rebuild_reads_on_through_a_fetch_that_times_out(
    admin_api: AdminApi, admin_worker, publish: Publisher, monkeypatch
):
    """A stalled server (a fetch that times out with messages still pending) is not the end of
    the stream: the rebuild asks the consumer and reads on instead of stopping short."""
    await _publish_history(publish)
    before = await _projected(admin_api)

    real_fetch = JetStreamContext.PullSubscription.fetch
    stalled: set[int] = set()

    async def stall_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        if id(self) not in stalled:  # every subscription's first fetch times out
            stalled.add(id(self))
            raise nats.errors.TimeoutError
        return await real_fetch(self, *args, **kwargs)

    monkeypatch.setattr(JetStreamContext.PullSubscription, "fetch", stall_once)
    nc = await nats.connect(admin_api.settings.nats_url)
    try:
        report = await rebuild(admin_api.ctx.sessions, nc.jetstream(), batch_size=3)
    finally:
        await nc.close()
    assert len(stalled) == 5  # every stream had a message and met the stall
    assert report.applied == 11
    assert await _snapshot(admin_api) == before


async def _run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "admin",
        *args,
        env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_creates_a_user_from_the_environment_and_rebuilds(
    admin_api: AdminApi, capsys, monkeypatch
):
    code, out, err = await _run_cli(
        "create-user", "--username", "Root", "--role", "operator", env={"ADMIN_PASSWORD": PASSWORD}
    )
    assert code == 0, err
    assert out.startswith("created operator root (")
    assert PASSWORD not in out + err
    login = await admin_api.client.post(
        "/admin/login", json={"username": "root", "password": PASSWORD}
    )
    assert login.status_code == 200 and login.json()["role"] == "operator"
    [entry] = await admin_api.audit("user.create")
    assert (entry.actor_username, entry.outcome, entry.detail["username"]) == ("cli", "ok", "root")
    async with admin_api.ctx.sessions() as session:
        stored = await session.scalar(select(AdminUser.password_hash))
    assert stored is not None and stored.startswith("$argon2id$")

    # the remaining paths in-process (a fresh interpreter costs seconds on a busy CI box)
    assert await _main_in_thread(
        capsys, monkeypatch, "create-user", "--username", "root", password=PASSWORD
    ) == (1, "already exists")
    assert await _main_in_thread(
        capsys, monkeypatch, "create-user", "--username", "eve", password="short"
    ) == (1, "password: must be at least 12")
    assert await _main_in_thread(
        capsys, monkeypatch, "create-user", "--username", "eve", password=""
    ) == (1, "set ADMIN_PASSWORD")
    assert await _main_in_thread(capsys, monkeypatch, "rebuild") == (0, "total applied 0")
    assert [a.detail["username"] for a in await admin_api.audit("user.create")] == ["root"]


async def _main_in_thread(capsys, monkeypatch, *args: str, password: str | None = None):
    """Run the CLI's main() (which calls asyncio.run) on a thread of its own; returns the exit
    code and the expected fragment if it appears in the output."""
    if password is not None:
        monkeypatch.setenv("ADMIN_PASSWORD", password)
    capsys.readouterr()
    code = await asyncio.to_thread(cli_main, list(args))
    captured = capsys.readouterr()
    text_out = captured.out + captured.err
    assert PASSWORD not in text_out
    for fragment in (
        "already exists",
        "password: must be at least 12",
        "set ADMIN_PASSWORD",
        "total applied 0",
    ):
        if fragment in text_out:
            return code, fragment
    return code, text_out
