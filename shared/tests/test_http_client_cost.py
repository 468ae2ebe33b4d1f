"""httpx's transport (httpcore) asks which async library runs on every lock, event and
cancellation shield it sets up, by importing ``sniffio``. Without the package each of those
imports fails anew and walks ``sys.path`` (~120 µs each, ~0.65 ms of CPU per request measured);
with it the import is a ``sys.modules`` hit. anyio 4.x no longer pulls sniffio in, so the
services declare it themselves."""

from __future__ import annotations

import sys

from httpcore._synchronization import current_async_library


async def test_httpcore_finds_the_async_library_without_a_failing_import() -> None:
    assert current_async_library() == "asyncio"
    assert "sniffio" in sys.modules  # the import succeeded and is cached from now on
