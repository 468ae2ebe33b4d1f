"""End-to-end benchmark (not a test): final IPN → order fulfilled → email captured.

Starts the whole system with the launcher (every service as its own processes, embedded
infrastructure), prepares orders with invoices, then pays them at a steady rate. For every order
it measures, on the same clock, the time from the provider's delivery of the final IPN (the
emulator's log) to the order's ``fulfilled`` transition (orders' history) and to the email landing
in the SMTP capture (the Maildir file). Prints p50 / p99 and how many were lost, then the CPU
each process of the stack (PostgreSQL's backends included) spent per order while the payments
ran: the figure that bounds the rate this machine can sustain.

    uv run python bench/e2e_latency.py [--rate 50] [--duration 60] [--replicas 1]
"""

from __future__ import annotations

import argparse
import asyncio
import mailbox
import os
import platform
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import httpx
import psutil
from shared.testing.shop import Purchase, Shop, db
from shared.testing.stack import Stack, running_stack


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def cpu_seconds(stack: Stack) -> Counter[str]:
    """CPU time (user + system) so far of every process of the stack, by component.

    The launcher's children carry ``BITLOOT_HOME`` and ``BITLOOT_COMPONENT``; PostgreSQL's
    backends do not (pg_ctl starts them), so they are found under the postmaster instead.
    """
    totals: Counter[str] = Counter()
    for name, procs in stack.processes().items():
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.Error:  # exited since
                continue
            totals[name] += times.user + times.system
    pid_file = stack.home / "postgres" / "data" / "postmaster.pid"
    if pid_file.exists():
        try:
            postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
            for proc in [postmaster, *postmaster.children(recursive=True)]:
                times = proc.cpu_times()
                totals["postgres"] += times.user + times.system
        except (psutil.Error, ValueError, IndexError):
            pass
    return totals


def print_cpu(before: Counter[str], after: Counter[str], own: float, orders: int) -> None:
    """CPU per order by component: what the system costs, and what shares its cores here."""
    spent = {k: after[k] - before.get(k, 0.0) for k in after}
    spent["load generator (this script)"] = own
    total = sum(spent.values())
    # Not part of BitLoot: the provider runs elsewhere in production, and so does the load.
    harness = spent.get("emulator", 0.0) + own
    print()
    print(f"{'CPU per order paid, by process':<40}{'ms':>10}{'share':>8}")
    for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        if seconds * 1000 / orders >= 0.5:
            print(f"{name:<40}{seconds * 1000 / orders:>10.1f}{seconds / total:>8.0%}")
    print(f"{'total':<40}{total * 1000 / orders:>10.1f}")
    system = (total - harness) * 1000 / orders
    print(f"{'  of which BitLoot + its infrastructure':<40}{system:>10.1f}")
    cores = os.cpu_count() or 1
    print(
        f"{cores} cores give {cores * 1000} ms of CPU per second: at this cost the machine "
        f"sustains at most {cores * orders / total:.1f} orders/s."
    )


async def prepare(shop: Shop, n: int, concurrency: int = 16) -> list[Purchase]:
    products = await shop.products()
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Purchase:
        async with sem:
            return await shop.buy(f"bench-{i}@example.com", products[i % len(products)]["sku"])

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def measure(stack: Stack, args: argparse.Namespace) -> None:
    n = args.rate * args.duration
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as client:
        shop = Shop(stack, client)
        t0 = time.monotonic()
        purchases = await prepare(shop, n)
        print(f"prepared {n} orders with invoices in {time.monotonic() - t0:.0f} s", flush=True)

        interval = 1.0 / args.rate
        cpu_before, own_before = cpu_seconds(stack), time.process_time()
        start = time.perf_counter()
        tasks = []
        for i, purchase in enumerate(purchases):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(shop.pay(purchase, "full")))
        await asyncio.gather(*tasks)
        paid_in = time.perf_counter() - start
        print(f"started {n} payments in {paid_in:.1f} s ({n / paid_in:.1f}/s)", flush=True)

        conn = await db(stack)
        ids = [uuid.UUID(p.order_id) for p in purchases]
        # Above capacity the backlog drains for minutes: wait as long as orders keep completing,
        # and call the rest lost only after --settle seconds without one.
        done, progress_at = -1, time.monotonic()
        while time.monotonic() - progress_at < args.settle:
            now_done = await conn.fetchval(
                "SELECT count(*) FROM orders.\"order\" WHERE id = ANY($1) AND status = 'fulfilled'",
                ids,
            )
            if now_done == n:
                break
            if now_done > done:
                done, progress_at = now_done, time.monotonic()
            await asyncio.sleep(0.5)
        fulfilled_at = {
            str(r["order_id"]): r["at"].timestamp()
            for r in await conn.fetch(
                "SELECT order_id, at FROM orders.order_history "
                "WHERE order_id = ANY($1) AND status = 'fulfilled'",
                ids,
            )
        }
        await conn.close()
        cpu_after, own = cpu_seconds(stack), time.process_time() - own_before

        log = (await client.get(f"{stack.emulator_url}/_emulator/ipn-log")).json()["entries"]
    final_ipn: dict[str, float] = {}
    by_invoice = {p.invoice_id: p.order_id for p in purchases}
    for entry in log:
        if entry["payment_status"] == "finished" and entry["outcome"] == "delivered":
            order_id = by_invoice.get(str(entry["invoice_id"]))
            if order_id is not None:
                ts = datetime.fromisoformat(entry["sent_at"].replace("Z", "+00:00")).timestamp()
                final_ipn[order_id] = min(ts, final_ipn.get(order_id, ts))
    email_at: dict[str, float] = {}
    box = mailbox.Maildir(str(stack.maildir), create=False)
    by_email = {p.email: p.order_id for p in purchases}
    for key in box.iterkeys():
        message = box.get_message(key)
        to = (message.get("To") or "").strip("<> ")
        order_id = by_email.get(to)
        path = Path(stack.maildir) / message.get_subdir() / key
        if order_id and path.exists() and "ready" in (message.get("Subject") or ""):
            email_at[order_id] = path.stat().st_mtime

    to_fulfilled = [(fulfilled_at[o] - final_ipn[o]) * 1000 for o in final_ipn if o in fulfilled_at]
    to_email = [(email_at[o] - final_ipn[o]) * 1000 for o in final_ipn if o in email_at]
    lost = n - len(fulfilled_at)
    print()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; worker replicas: {args.replicas}"
    )
    print(f"load: {n} orders paid at {args.rate}/s for {args.duration} s")
    print(f"{'measure':<40}{'p50':>10}{'p99':>10}{'n':>8}")
    print(
        f"{'final IPN → order fulfilled (ms)':<40}{pct(to_fulfilled, 0.5):>10.0f}"
        f"{pct(to_fulfilled, 0.99):>10.0f}{len(to_fulfilled):>8}"
    )
    print(
        f"{'final IPN → email captured (ms)':<40}{pct(to_email, 0.5):>10.0f}"
        f"{pct(to_email, 0.99):>10.0f}{len(to_email):>8}"
    )
    print(f"{'orders not fulfilled (lost)':<40}{lost:>10}")
    if len(final_ipn) > 1:
        # What reached the gateway: the emulator shares the cores and may deliver slower than
        # the payments were started.
        ipn_span = max(final_ipn.values()) - min(final_ipn.values())
        print(f"{'final IPNs delivered per second':<40}{len(final_ipn) / ipn_span:>10.1f}")
    if final_ipn and fulfilled_at:
        # Sustained rate: orders done over the time from the first final IPN to the last
        # fulfilment. Below saturation it equals the offered rate; above, it is the capacity.
        span = max(fulfilled_at.values()) - min(final_ipn.values())
        print(f"{'fulfilled per second (whole run)':<40}{len(fulfilled_at) / span:>10.1f}")
    print_cpu(cpu_before, cpu_after, own, n)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument(
        "--settle",
        type=float,
        default=60,
        help="seconds without a newly fulfilled order before the rest count as lost",
    )
    args = parser.parse_args()
    env = {
        "BITLOOT_WORKER_REPLICAS": str(args.replicas),
        "LOG_LEVEL": "WARNING",
        # Every delivery attempt of the run stays in the emulator's log (5 statuses per order,
        # plus retries), which is where the final IPN's time comes from.
        "EMULATOR_IPN_LOG_LIMIT": str(max(10_000, args.rate * args.duration * 10)),
    }
    with running_stack(env) as stack:
        asyncio.run(measure(stack, args))


if __name__ == "__main__":
    main()
