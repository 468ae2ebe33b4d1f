"""Driving the whole system like a customer and a provider, over HTTP — for tests-e2e, the
browser tests and the end-to-end benchmark. Checks read databases, streams and the mailbox."""

from __future__ import annotations

import asyncio
import mailbox
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from shared.testing.helpers import wait_for
from shared.testing.jetstream import stored_messages
from shared.testing.stack import Stack


@dataclass
class Purchase:
    email: str
    order_id: str
    token: str
    invoice_id: str
    payment_url: str


class Shop:
    """A customer and a provider, both over HTTP."""

    def __init__(self, stack: Stack, client: httpx.AsyncClient) -> None:
        self.stack = stack
        self.http = client
        self.orders = stack.url("orders")
        self.emulator = stack.emulator_url

    async def products(self) -> list[dict[str, Any]]:
        r = await self.http.get(f"{self.orders}/products")
        r.raise_for_status()
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    async def buy(self, email: str, sku: str, quantity: int = 1) -> Purchase:
        r = await self.http.post(
            f"{self.orders}/orders",
            json={"email": email, "items": [{"sku": sku, "quantity": quantity}]},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        assert r.status_code == 201, r.text
        order = r.json()
        r = await self.http.post(
            f"{self.orders}/orders/{order['order_id']}/checkout",
            headers={"X-Order-Token": order["order_token"]},
        )
        assert r.status_code == 200, r.text
        checkout = r.json()
        r = await self.http.get(
            f"{self.emulator}/_emulator/invoices", params={"order_id": order["order_id"]}
        )
        invoices = r.json()["invoices"]
        assert len(invoices) == 1, invoices  # checkout created exactly one invoice
        return Purchase(
            email,
            order["order_id"],
            order["order_token"],
            str(invoices[0]["id"]),
            checkout["payment_url"],
        )

    async def pay(self, purchase: Purchase, scenario: str = "full", **behaviour: Any) -> str:
        r = await self.http.post(
            f"{self.emulator}/_emulator/invoices/{purchase.invoice_id}/pay",
            json={"scenario": scenario, **behaviour},
        )
        assert r.status_code == 200, r.text
        return str(r.json()["payment_id"])

    async def order(self, purchase: Purchase) -> dict[str, Any]:
        r = await self.http.get(
            f"{self.orders}/orders/{purchase.order_id}", headers={"X-Order-Token": purchase.token}
        )
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    async def wait_status(
        self, purchase: Purchase, status: str, timeout: float = 60
    ) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            order = await self.order(purchase)
            return order if order["status"] == status else None

        order: dict[str, Any] = await wait_for(
            reached, timeout=timeout, interval=0.1, message=f"order {purchase.order_id} {status}"
        )
        return order


def mails_to(stack: Stack, email: str) -> list[mailbox.MaildirMessage]:
    box = mailbox.Maildir(str(stack.maildir), create=False)
    return [m for m in box.values() if email in (m.get("To") or "")]


def copies_by_recipient(stack: Stack, subject_part: str) -> dict[str, Counter[str]]:
    """For every recipient of a captured email whose subject contains ``subject_part``: how many
    copies of each Message-ID arrived (a re-send of the same email keeps its Message-ID)."""
    copies: dict[str, Counter[str]] = {}
    for message in mailbox.Maildir(str(stack.maildir), create=False).values():
        if subject_part in (message.get("Subject") or ""):
            to = (message.get("To") or "").strip("<> ")
            copies.setdefault(to, Counter())[message.get("Message-ID") or ""] += 1
    return copies


def body_text(message: mailbox.MaildirMessage) -> str:
    parts = message.walk() if message.is_multipart() else [message]
    out = []
    for part in parts:
        if part.get_content_type() in {"text/plain", "text/html"}:
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                out.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
    return "\n".join(out)


def download_links(text: str) -> list[str]:
    return sorted(set(re.findall(r"https?://[^\s\"'<>]+/downloads/[A-Za-z0-9_\-.]+", text)))


async def db(stack: Stack) -> asyncpg.Connection:
    return await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{stack.ports['pg']}/bitloot")


async def stream_subjects(stack: Stack, stream: str) -> list[tuple[str, bytes]]:
    """Every message stored in ``stream`` as (subject, body), read by sequence number."""
    return await stored_messages(f"nats://127.0.0.1:{stack.ports['nats']}", stream)


@dataclass
class StormResult:
    purchases: list[Purchase]
    seconds: float


async def storm(
    shop: Shop,
    n: int,
    *,
    label: str,
    fault: Callable[[], Coroutine[Any, Any, None]] | None = None,
    settle_timeout: float = 420,
    concurrency: int = 12,
) -> StormResult:
    """``n`` orders paid in full; every IPN delivered 1–5 times, statuses reordered at random.

    ``fault`` (an async callable) runs once half of the payments have been started.
    """
    products = await shop.products()
    sem = asyncio.Semaphore(concurrency)
    rng = random.Random(label)  # noqa: S311 - traffic shapes, reproducible per storm

    async def one(i: int) -> Purchase:
        async with sem:
            return await shop.buy(
                f"{label}-{i}@example.com", products[i % len(products)]["sku"], quantity=1 + i % 2
            )

    started = time.monotonic()
    purchases = list(await asyncio.gather(*(one(i) for i in range(n))))

    async def pay(p: Purchase) -> None:
        async with sem:
            await shop.pay(
                p,
                "full",
                duplicates=rng.randint(1, 5),
                order=rng.choice(["sequential", "shuffle", "reverse", "final_first"]),
            )

    half = n // 2
    await asyncio.gather(*(pay(p) for p in purchases[:half]))
    fault_task = asyncio.create_task(fault()) if fault is not None else None
    await asyncio.gather(*(pay(p) for p in purchases[half:]))
    if fault_task is not None:
        await fault_task

    conn = await db(shop.stack)
    ids = [uuid.UUID(p.order_id) for p in purchases]
    try:

        async def all_fulfilled() -> bool:
            done = await conn.fetchval(
                "SELECT count(*) FROM orders.\"order\" WHERE id = ANY($1) AND status = 'fulfilled'",
                ids,
            )
            return bool(done == n)

        await wait_for(
            all_fulfilled,
            timeout=settle_timeout,
            interval=0.5,
            message=f"{label}: all {n} orders fulfilled",
        )
    finally:
        await conn.close()
    return StormResult(purchases, time.monotonic() - started)
