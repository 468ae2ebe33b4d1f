"""`make dev` brings every component up on its port and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil
from shared.testing.stack import running_stack
from shared.topology import SERVICES


def test_launcher_starts_everything_and_stops_cleanly_on_sigterm() -> None:
    with running_stack() as stack:
        log = stack.log_path.read_text()
        assert "BitLoot is ready" in log
        for service in SERVICES:
            api = stack.url(service.name)
            worker = stack.url(f"{service.name}-worker")
            assert api in log  # the launcher printed every URL
            assert httpx.get(f"{api}/ready", timeout=5).json()["status"] == "ready"
            assert httpx.get(f"{worker}/ready", timeout=5).status_code == 200
            assert "outbox_oldest_pending_seconds" in httpx.get(f"{worker}/metrics").text
        assert httpx.get(f"{stack.emulator_url}/v1/status").json() == {"message": "OK"}

        children = psutil.Process(stack.process.pid).children(recursive=True)
        assert len(children) >= 2 * len(SERVICES)
        started = time.monotonic()
        os.killpg(stack.process.pid, signal.SIGTERM)
        stack.process.wait(timeout=15)
        took = time.monotonic() - started
        assert took < 10, f"shutdown took {took:.1f}s"
        assert "BitLoot stopped." in stack.log_path.read_text()
        alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], f"orphans left: {alive}"
        # No stale pid file blocks the next start.
        assert not (stack.home / "run" / "launcher.pid").exists()
        pg_pid = stack.home / "postgres" / "data" / "postmaster.pid"
        assert not pg_pid.exists()
