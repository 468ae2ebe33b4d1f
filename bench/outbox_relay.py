"""Outbox relay benchmark (not a test): throughput and commit → consumer latency.

Starts its own embedded PostgreSQL and NATS (JetStream with ``sync_interval: always``), then:
1. throughput: N events committed up front, one relay drains them; events/s published *and*
   acknowledged by JetStream;
2. latency: events committed one at a time at a steady rate while the relay runs with
   LISTEN/NOTIFY wake-up; a JetStream pull consumer records the time from each commit to the
   moment the consumer receives the message. Prints p50 / p99.

    uv run python bench/outbox_relay.py [--events 5000] [--latency-events 500] [--rate 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import ClassVar

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy
from shared.contracts.envelope import Event
from shared.db import create_engine, make_metadata, make_session_factory
from shared.devstack.nats import start_nats
from shared.devstack.postgres import EmbeddedPostgres, create_database
from shared.messaging import OutboxMixin, OutboxRelay, add_to_outbox
from shared.messaging.broker import ensure_streams, make_broker
from shared.messaging.outbox import jetstream_publisher
from shared.testing import free_port
from sqlalchemy import text
from sqlalchemy.orm import DeclarativeBase

SCHEMA = "bench_outbox"


class Base(DeclarativeBase):
    metadata = make_metadata(SCHEMA)


class Outbox(OutboxMixin, Base):
    __tablename__ = "outbox"


class BenchEvent(Event):
    SUBJECT: ClassVar[str] = "fulfillment.email_sent.v1"  # any subject of a real stream
    seq: int
    committed_ns: int


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="bitloot-bench-"))
    pg = EmbeddedPostgres(home / "pg" / "data", free_port())
    nats_port = free_port()
    nats_proc: subprocess.Popen[bytes] | None = None
    try:
        pg.start()
        await asyncio.to_thread(create_database, pg.url, "bench")
        url = pg.url.rsplit("/", 1)[0] + "/bench"
        nats_proc = start_nats(home / "nats", nats_port, free_port(), home / "nats.log")
        nats_url = f"nats://127.0.0.1:{nats_port}"
        for _ in range(100):
            try:
                nc = await nats.connect(nats_url)
                break
            except Exception:
                await asyncio.sleep(0.1)
        js = nc.jetstream()
        await ensure_streams(js)

        engine = create_engine(url, pool_size=10)
        async with engine.begin() as conn:
            await conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
            await conn.run_sync(Base.metadata.create_all)
        sessions = make_session_factory(engine)
        broker = make_broker(nats_url, name="bench")
        await broker.connect()

        # 1. throughput
        for start in range(0, args.events, 500):
            async with sessions() as s, s.begin():
                for i in range(start, min(start + 500, args.events)):
                    await add_to_outbox(s, Outbox, BenchEvent(seq=i, committed_ns=0))
        relay = OutboxRelay(
            name="bench",
            session_factory=sessions,
            outbox=Outbox,
            publish=jetstream_publisher(broker),
            batch_size=args.batch,
        )
        t0 = time.perf_counter()
        total = 0
        while (n := await relay.publish_pending()) > 0:
            total += n
        elapsed = time.perf_counter() - t0
        throughput = total / elapsed

        # 2. latency: commit → consumer received
        await js.purge_stream("FULFILLMENT")
        relay = OutboxRelay(
            name="bench-live",
            session_factory=sessions,
            outbox=Outbox,
            publish=jetstream_publisher(broker),
            database_url=url,
            sweep_seconds=1.0,
        )
        await relay.start()
        await asyncio.wait_for(relay.listening.wait(), 10)
        sub = await js.pull_subscribe(
            BenchEvent.SUBJECT,
            durable="bench-latency",
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
        )
        latencies: list[float] = []

        async def consume() -> None:
            while len(latencies) < args.latency_events:
                try:
                    msgs = await sub.fetch(50, timeout=1)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                now = time.time_ns()
                for m in msgs:
                    ev = BenchEvent.model_validate_json(m.data)
                    latencies.append((now - ev.committed_ns) / 1e6)
                    await m.ack()

        consumer = asyncio.create_task(consume())
        interval = 1.0 / args.rate
        next_at = time.perf_counter()
        for i in range(args.latency_events):
            async with sessions() as s, s.begin():
                await add_to_outbox(s, Outbox, BenchEvent(seq=i, committed_ns=time.time_ns()))
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.wait_for(consumer, 60)
        await relay.stop()
        await broker.stop()
        await nc.close()
        await engine.dispose()

        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}"
        )
        print("nats-server with sync_interval: always; Postgres fsync on")
        print(f"{'measure':<42}{'value':>14}")
        print(
            f"{'relay throughput (published + acked)':<42}{throughput:>10.0f} ev/s"
            f"  ({total} events)"
        )
        print(f"{'commit → consumer latency p50':<42}{statistics.median(latencies):>10.2f} ms")
        print(f"{'commit → consumer latency p99':<42}{pct(latencies, 0.99):>10.2f} ms")
        print(f"{'  (at a steady rate of)':<42}{args.rate:>10} ev/s  ({len(latencies)} events)")
    finally:
        if nats_proc is not None:
            nats_proc.terminate()
            nats_proc.wait()
        pg.stop("immediate")
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--latency-events", type=int, default=500)
    parser.add_argument("--rate", type=int, default=200)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
