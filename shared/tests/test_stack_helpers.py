"""The test stack's own helpers: ports for servers in other processes, start-up diagnostics."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from shared.testing import helpers
from shared.testing.helpers import _ephemeral_ports, free_port
from shared.testing.stack import _startup_failure


def test_free_ports_are_bindable_distinct_and_outside_the_ephemeral_range() -> None:
    low, high = _ephemeral_ports()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    for port in ports:
        # An outgoing connection can never be given one of these as its local port.
        assert not low <= port <= high
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_something_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    low, _ = _ephemeral_ports()
    with socket.socket() as taken:
        for busy in range(low - 1, 10_000, -1):  # a port below the range that we can hold
            try:
                taken.bind(("127.0.0.1", busy))
                break
            except OSError:
                continue
        taken.listen()
        draws = iter([busy, busy, busy - 1, busy - 2])
        monkeypatch.setattr(helpers._PORT_DRAW, "randint", lambda _a, _b: next(draws))

        port = free_port()

    assert port != busy
    assert port in (busy - 1, busy - 2)


def test_a_start_up_failure_carries_the_log_of_the_component_that_exited(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "web.log").write_text(
        "INFO: started\nERROR: [Errno 98] address already in use\n"
    )
    (tmp_path / "logs" / "orders-api.log").write_text("all fine\n")
    launcher = "Starting BitLoot\nweb exited during start-up; see logs/web.log\nBitLoot stopped.\n"

    report = _startup_failure(tmp_path, launcher)

    assert report.startswith("launcher exited:\nStarting BitLoot")
    assert "--- web.log (end) ---" in report
    assert "address already in use" in report
    assert "all fine" not in report
