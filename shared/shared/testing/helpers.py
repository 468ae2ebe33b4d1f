from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Callable
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
