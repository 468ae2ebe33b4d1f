"""NATS stopped while IPNs arrive: every one is answered 200 and published once NATS is back.

Uses its own nats-server on a free port so stopping it cannot disturb the shared one.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import webhooks_testkit as kit
from shared.contracts.webhooks import IpnReceived
from shared.devstack.bootstrap import ensure_nats_streams
from shared.devstack.nats import start_nats
from shared.launcher import port_open, wait_until
from shared.runtime import running
from shared.testing import free_port, wait_for
from webhooks import subscribers
from webhooks.main import build


class OwnNats:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.monitor = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = start_nats(self.home / "data", self.port, self.monitor, self.home / "nats.log")
        wait_until(lambda: port_open("127.0.0.1", self.port), 30, "nats")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[OwnNats]:
    server = OwnNats(tmp_path / "nats")
    server.start()
    ensure_nats_streams(server.url)
    try:
        yield server
    finally:
        server.stop()


async def test_ipns_during_a_nats_outage_are_all_accepted_then_all_published(
    webhooks_infra, db, own_nats
):
    settings = kit.make_settings(webhooks_infra, nats_url=own_nats.url)
    gw = await kit.open_gateway(settings)
    worker = build(settings)
    subscribers.register(worker)
    try:
        async with running(worker, subscribers=True):
            await kit.post_signed(gw.client, kit.ipn())
            await wait_for(
                lambda: kit.stream_messages(own_nats.url, IpnReceived.SUBJECT),
                message="relay works before the outage",
            )

            own_nats.stop()
            bodies = [kit.ipn() for _ in range(20)]
            responses = await asyncio.gather(*(kit.post_signed(gw.client, b) for b in bodies))
            assert [r.status_code for r in responses] == [200] * 20
            pending = await db.fetchval(
                "SELECT count(*) FROM webhooks.outbox WHERE sent_at IS NULL"
            )
            assert pending == 20  # nothing can leave while NATS is down, nothing is lost

            own_nats.start()
            await wait_for(
                lambda: db.fetchval(
                    "SELECT count(*) = 0 FROM webhooks.outbox WHERE sent_at IS NULL"
                ),
                timeout=45,
                message="every staged event published after NATS returned",
            )
        published = await kit.stream_messages(own_nats.url, IpnReceived.SUBJECT)
        events = [IpnReceived.model_validate_json(m) for m in published]
        assert len(events) == 21  # JetStream dedup dropped any re-publish of the same event id
        expected = {
            r["event_id"] for r in await db.fetch("SELECT event_id FROM webhooks.webhook_log")
        }
        assert {e.event_id for e in events} == expected
        assert {e.payment_id for e in events} >= {str(b["payment_id"]) for b in bodies}
    finally:
        await kit.close_gateway(gw)
