"""Read what a JetStream stream holds, for assertions.

By sequence number with direct gets: the answer is exactly what is stored when it is asked,
however slow the server is. (Fetching through a consumer until a fetch times out ends early
when the server is slower than the timeout, and an exact count then comes up short.)
"""

from __future__ import annotations

import nats
import nats.js.errors


async def stored_messages(nats_url: str, stream: str) -> list[tuple[str, bytes]]:
    """Every message stored in ``stream`` as (subject, body), in stream order."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(stream)).state
        out: list[tuple[str, bytes]] = []
        if state.messages == 0:
            return out
        for seq in range(state.first_seq, state.last_seq + 1):
            try:
                msg = await js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:
                continue  # deleted
            out.append((msg.subject or "", msg.data or b""))
        return out
    finally:
        await nc.close()


async def stored_bodies(nats_url: str, stream: str, subject: str) -> list[bytes]:
    """The bodies of the messages stored in ``stream`` under exactly ``subject``, in order."""
    return [body for stored, body in await stored_messages(nats_url, stream) if stored == subject]
