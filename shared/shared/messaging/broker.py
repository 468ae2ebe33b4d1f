from __future__ import annotations

from faststream.nats import NatsBroker
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from shared.contracts.streams import DEAD_LETTER_STREAM, STREAMS, StreamSpec
from shared.observability import get_logger

log = get_logger(__name__)

# Longer than any relay retry loop, far shorter than provider retries (hours): the database
# unique keys are the real guard, this window only absorbs relay crash-replays.
DUPLICATE_WINDOW_SECONDS = 10 * 60


def make_broker(nats_url: str, *, name: str) -> NatsBroker:
    return NatsBroker(
        nats_url,
        name=name,
        max_reconnect_attempts=-1,  # keep trying forever: NATS restarts must not kill workers
        reconnect_time_wait=1,
        connect_timeout=3,
        logger=None,
    )


def stream_config(spec: StreamSpec, *, replicas: int = 1, max_bytes: int = -1) -> StreamConfig:
    """Limits retention with no age limit: admin read models are rebuilt by replaying streams,
    so events are kept until an operator sets ``max_bytes`` (see docs/operations.md)."""
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_bytes=max_bytes,
        max_age=0,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    )


async def ensure_streams(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Create or update every stream (idempotent; safe from several processes at once)."""
    for spec in (*STREAMS, DEAD_LETTER_STREAM):
        config = stream_config(spec, replicas=replicas)
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
                log.info("stream_created", stream=spec.name)
                continue
            except Exception:  # another process created it first; fall through to update
                log.debug("stream_create_race", stream=spec.name)
                info = await js.stream_info(spec.name)
        # Subjects are only ever added: a service of the previous release, (re)starting beside
        # a newer one, must not take a new subject out of the stream (its events would then
        # be refused with "no responders" and the newer producer's outbox would stall).
        known = list(info.config.subjects or [])
        config.subjects = known + [s for s in config.subjects or [] if s not in known]
        await js.update_stream(config)


async def flush(broker: NatsBroker) -> None:
    """Round-trip to the server so subscriptions made so far are live before we say "ready"."""
    conn = broker.config.connection_state.connection
    if conn is not None:
        await conn.flush(timeout=5)
