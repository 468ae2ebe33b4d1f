"""IPN ingest benchmark (not a test): the webhooks api against a bare FastAPI endpoint.

Starts its own embedded PostgreSQL (migrated webhooks schema), then two uvicorn processes
(uvloop, httptools, 1 worker, access log off): the real webhooks api and a bare FastAPI
endpoint that only reads the body and answers a small JSON. A load generator in a separate
process (asyncio + uvloop, raw HTTP/1.1 keep-alive, one connection per concurrent client)
sends N signed IPNs — a share of them exact duplicates, as providers do — at each concurrency
and reports req/s, p50 and p99 for both, and the ratio. Each concurrency is measured in
``--rounds`` alternating bare/api pairs and the medians are printed: on a shared VM one pair
scatters by several points.

    uv run python bench/ipn_ingest.py [--requests 10000] [--concurrency 16 64] [--duplicates 0.2]
                                      [--rounds 3]

Everything shares the machine's cores (server, PostgreSQL, load generator), like a small VM.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import hmac
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from fastapi import FastAPI, Request

SECRET = "bench-ipn-secret-not-for-production"
IPN_PATH = "/webhooks/nowpayments"


# ---------------------------------------------------------------------------------------------
# The bare endpoint (served by its own uvicorn process: --app-dir bench ipn_ingest:create_bare_app)


def create_bare_app() -> FastAPI:
    app = FastAPI()

    @app.post(IPN_PATH)
    async def ipn(request: Request) -> dict[str, str]:
        await request.body()
        return {"status": "accepted"}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


# ---------------------------------------------------------------------------------------------
# Load generator (runs in its own process: ipn_ingest.py --client ...)


def ipn_body(payment_id: int, status: str, paid: str, updated_at: int) -> bytes:
    """A current-style IPN in the provider's wire form: keys sorted, compact, JS numbers."""
    return (
        f'{{"actually_paid":{paid},"actually_paid_at_fiat":0,"fee":{{"currency":"btc",'
        f'"depositFee":0.000002,"serviceFee":0.0000115,"withdrawalFee":0}},'
        f'"invoice_id":{payment_id + 17},"order_description":"Game key — Ключ 🎮",'
        f'"order_id":"ord_{payment_id:x}","outcome_amount":0.0011885,"outcome_currency":"btc",'
        f'"parent_payment_id":null,"pay_address":"bc1qexampleaddressxyz","pay_amount":0.0012,'
        f'"pay_currency":"btc","payin_extra_id":null,"payment_id":{payment_id},'
        f'"payment_status":"{status}","price_amount":59.99,"price_currency":"usd",'
        f'"purchase_id":"5931000544","updated_at":{updated_at}}}'
    ).encode()


def build_requests(n: int, duplicates: float, seed: int, base_id: int) -> list[bytes]:
    rng = random.Random(seed)
    statuses = ["waiting", "confirming", "confirmed", "finished"]
    bodies: list[bytes] = []
    for i in range(n):
        if bodies and rng.random() < duplicates:
            bodies.append(rng.choice(bodies[-200:]))  # a provider retry of a recent IPN
            continue
        status = rng.choice(statuses)
        paid = "0" if status == "waiting" else "0.0012"
        bodies.append(ipn_body(base_id + i, status, paid, 1732626000000 + i))
    out = []
    for body in bodies:
        sig = hmac.new(SECRET.encode(), body, hashlib.sha512).hexdigest()
        out.append(
            (
                f"POST {IPN_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nUser-Agent: NOWPayments-bench\r\n"
                f"x-nowpayments-sig: {sig}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
    return out


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending the next request as soon as the previous answer is
    complete. A bare Protocol, not streams: the load generator shares the machine's cores with
    the servers it measures, so it should cost as little CPU per request as possible."""

    def __init__(
        self,
        requests: list[bytes],
        cursor: Any,
        latencies: list[float],
        statuses: list[int],
        done: asyncio.Future[None],
    ) -> None:
        self.requests = requests
        self.cursor = cursor
        self.latencies = latencies
        self.statuses = statuses
        self.done = done
        self.buffer = b""
        self.started = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._send_next()

    def _send_next(self) -> None:
        assert self.transport is not None
        index = next(self.cursor, None)
        if index is None:
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)
            return
        self.started = time.perf_counter()
        self.transport.write(self.requests[index])

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if len(self.buffer) < end + 4 + length:
            return
        self.latencies.append(time.perf_counter() - self.started)
        self.statuses.append(int(head[9:12]))
        self.buffer = self.buffer[end + 4 + length :]
        self._send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _run_connections(
    port: int,
    requests: list[bytes],
    cursor: Any,
    concurrency: int,
    latencies: list[float],
    statuses: list[int],
) -> None:
    loop = asyncio.get_running_loop()
    waiters = []
    for _ in range(concurrency):
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(
            functools.partial(_Connection, requests, cursor, latencies, statuses, done),
            "127.0.0.1",
            port,
        )
        waiters.append(done)
    await asyncio.gather(*waiters)


async def _load(port: int, requests: list[bytes], concurrency: int, warmup: int) -> dict[str, Any]:
    if warmup:
        await _run_connections(port, requests, iter(range(warmup)), concurrency, [], [])
    cursor = iter(range(warmup, len(requests)))
    latencies: list[float] = []
    statuses: list[int] = []
    cpu_before = time.process_time()
    started = time.perf_counter()
    await _run_connections(port, requests, cursor, concurrency, latencies, statuses)
    elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - cpu_before
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
        "non_200": sum(1 for s in statuses if s != 200),
        "client_cpu_us": client_cpu / max(1, len(latencies)) * 1e6,
    }


def client_main(args: argparse.Namespace) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    requests = build_requests(args.requests + args.warmup, args.duplicates, args.seed, args.base_id)
    result = asyncio.run(_load(args.port, requests, args.concurrency, args.warmup))
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# Orchestration


def _wait_http(port: int, path: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"nothing answered on port {port}{path}")


def _uvicorn(
    factory: str, port: int, env: dict[str, str], log: Path, app_dir: str | None = None
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        factory,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    if app_dir:
        cmd += ["--app-dir", app_dir]
    return subprocess.Popen(
        cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _cpu_by_pid(pids: list[int]) -> dict[int, float]:
    import psutil

    out: dict[int, float] = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            out[pid] = times.user + times.system
        except psutil.Error:
            pass
    return out


def _postgres_pids(data_dir: Path) -> list[int]:
    import psutil

    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    proc = psutil.Process(postmaster)
    return [postmaster, *(child.pid for child in proc.children(recursive=True))]


def _cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    # Backends started during the run (new pool connections) count from zero.
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _run_client(
    port: int, args: argparse.Namespace, concurrency: int, base_id: int, watch: dict[str, Any]
) -> dict[str, Any]:
    """One load run; also the CPU time the server process and PostgreSQL spent per request."""
    server_pid: int = watch["server"]
    server_before = _cpu_by_pid([server_pid])
    db_before = _cpu_by_pid(_postgres_pids(watch["pgdata"]))
    cmd = [
        sys.executable,
        __file__,
        "--client",
        "--port",
        str(port),
        "--requests",
        str(args.requests),
        "--warmup",
        str(args.warmup),
        "--concurrency",
        str(concurrency),
        "--duplicates",
        str(args.duplicates),
        "--seed",
        str(args.seed),
        "--base-id",
        str(base_id),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    served = args.requests + args.warmup
    server = _cpu_delta(server_before, _cpu_by_pid([server_pid]))
    db = _cpu_delta(db_before, _cpu_by_pid(_postgres_pids(watch["pgdata"])))
    result["server_cpu_us"] = server / served * 1e6
    result["db_cpu_us"] = db / served * 1e6
    return result


def _print_row(name: str, concurrency: int, r: dict[str, Any]) -> None:
    print(
        f"{name:<26}{concurrency:>5}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}"
        f"{r['p99_ms']:>9.2f}{r['non_200']:>9}{r['server_cpu_us']:>10.0f} us"
        f"{r['db_cpu_us']:>9.0f} us{r['client_cpu_us']:>13.0f} us"
    )


def _median_row(results: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("rps", "p50_ms", "p99_ms", "server_cpu_us", "db_cpu_us", "client_cpu_us")
    row: dict[str, Any] = {k: statistics.median(r[k] for r in results) for k in keys}
    row["non_200"] = sum(r["non_200"] for r in results)
    return row


def orchestrate(args: argparse.Namespace) -> None:
    from shared.db.migrations import upgrade
    from shared.devstack.postgres import EmbeddedPostgres, create_database
    from shared.testing import free_port

    home = Path(tempfile.mkdtemp(prefix="bitloot-bench-ipn-"))
    pg = EmbeddedPostgres(home / "pg" / "data", free_port())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pg.start()
        create_database(pg.url, "bench")
        url = pg.url.rsplit("/", 1)[0] + "/bench"
        upgrade("webhooks", url)

        env = {
            **os.environ,
            "DATABASE_URL": url,
            "NATS_URL": f"nats://127.0.0.1:{free_port()}",  # never contacted by the api
            "NOWPAYMENTS_IPN_SECRET": SECRET,
            "LOG_LEVEL": "WARNING",
            "WEBHOOKS_DB_POOL_SIZE": str(args.pool),
        }
        gateway_port, bare_port = free_port(), free_port()
        procs.append(_uvicorn("webhooks.main:create_api", gateway_port, env, home / "api.log"))
        procs.append(
            _uvicorn(
                "ipn_ingest:create_bare_app",
                bare_port,
                env,
                home / "bare.log",
                app_dir=str(Path(__file__).parent),
            )
        )
        _wait_http(gateway_port, "/ready")
        _wait_http(bare_port, "/health")

        rows: list[tuple[int, list[dict[str, Any]], list[dict[str, Any]]]] = []
        pgdata = home / "pg" / "data"
        for n, concurrency in enumerate(args.concurrency):
            bares: list[dict[str, Any]] = []
            gateways: list[dict[str, Any]] = []
            for r in range(args.rounds):
                # Fresh payments per run (only in-run duplicates); the two targets alternate
                # which goes first, so a drift in the machine's speed does not favour one.
                base_id = 10_000_000 * (n + 1) + 1_000_000 * r
                order = [("bare", bare_port, procs[1].pid), ("api", gateway_port, procs[0].pid)]
                for name, port, pid in order if r % 2 == 0 else order[::-1]:
                    result = _run_client(
                        port, args, concurrency, base_id, {"server": pid, "pgdata": pgdata}
                    )
                    (bares if name == "bare" else gateways).append(result)
            rows.append((concurrency, bares, gateways))

        stored = subprocess.run(
            [
                sys.executable,
                "-c",
                (
                    "import asyncio, asyncpg, sys\n"
                    "async def m():\n"
                    "    c = await asyncpg.connect(sys.argv[1])\n"
                    "    r = await c.fetchrow('SELECT count(*) AS rows, "
                    "sum(received_count) AS hits FROM webhooks.webhook_log')\n"
                    "    o = await c.fetchval('SELECT count(*) FROM webhooks.outbox')\n"
                    "    print(r['rows'], r['hits'], o)\n"
                    "asyncio.run(m())\n"
                ),
                url.replace("+asyncpg", ""),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()

        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}; PostgreSQL fsync on, synchronous_commit on"
        )
        print(
            f"{args.requests} requests per run after {args.warmup} warm-up, "
            f"{args.duplicates:.0%} duplicates, api pool {args.pool}"
        )
        header = (
            f"{'target':<26}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-200':>9}"
            f"{'app CPU/req':>13}{'db CPU/req':>12}{'client CPU/req':>16}"
        )
        print(header)
        print("-" * len(header))
        for concurrency, bares, gateways in rows:
            for r, (bare, gateway) in enumerate(zip(bares, gateways, strict=True)):
                label = f" (round {r + 1})" if len(bares) > 1 else ""
                for name, res in (("bare FastAPI", bare), ("webhooks api", gateway)):
                    _print_row(name + label, concurrency, res)
                ratio = gateway["rps"] / bare["rps"]
                print(f"{'  ratio webhooks/bare':<26}{concurrency:>5}{ratio:>10.0%}")
            if len(bares) > 1:
                for name, results in (("bare FastAPI", bares), ("webhooks api", gateways)):
                    _print_row(name + " (median)", concurrency, _median_row(results))
                ratios = [g["rps"] / b["rps"] for b, g in zip(bares, gateways, strict=True)]
                print(
                    f"{'  ratio (median of rounds)':<26}{concurrency:>5}"
                    f"{statistics.median(ratios):>10.0%}"
                    f"   rounds: {', '.join(f'{x:.0%}' for x in ratios)}"
                )
        import httpx

        metrics = httpx.get(f"http://127.0.0.1:{gateway_port}/metrics", timeout=5).text
        total = {
            line.split()[0]: float(line.split()[1])
            for line in metrics.splitlines()
            if line.startswith("webhooks_ingest_batch_size_")
        }
        batches = total.get("webhooks_ingest_batch_size_count", 0.0)
        if batches:
            mean = total["webhooks_ingest_batch_size_sum"] / batches
            print(f"ingest statements: {batches:.0f}, mean batch {mean:.1f} deliveries")
        print(
            f"stored: {stored[0]} webhook_log rows for {stored[1]} deliveries (incl. warm-up), "
            f"{stored[2]} outbox events"
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        pg.stop("immediate")
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--duplicates", type=float, default=0.2)
    parser.add_argument("--pool", type=int, default=10, help="api database pool size")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="bare/api runs per concurrency, alternating which goes first; medians are printed",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--base-id", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        args.concurrency = args.concurrency[0]
        client_main(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
