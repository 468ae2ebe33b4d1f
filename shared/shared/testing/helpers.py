from __future__ import annotations

import asyncio
import functools
import inspect
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_HANDED_OUT: set[int] = set()
# Its own source: a test that seeds the module-level generator must not make two processes
# draw the same ports.
_PORT_DRAW = random.SystemRandom()


@functools.cache
def _ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (read once)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A loopback port nothing listens on, for a server in another process to bind soon.

    Chosen below the kernel's ephemeral range. A port the kernel picks (``bind(0)``) comes from
    that range, and until the server binds it any outgoing connection may be given it as its
    local port — a stack opens hundreds while it starts, and a server that lost its port exits
    with "address already in use" (the web process once did, mid-CI).
    """
    low, _ = _ephemeral_ports()
    if low > 12_000:
        for _ in range(500):
            port = _PORT_DRAW.randint(10_000, low - 1)
            if port in _HANDED_OUT:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket() as sock:  # no room below the range: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


async def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Await until ``predicate()`` is truthy and return its value — a condition, not a sleep."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        last = value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message} not met within {timeout}s (last value: {last!r})")
        await asyncio.sleep(interval)
