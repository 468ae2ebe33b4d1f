"""Streams evolve by addition: a service of the previous release, starting next to a newer one,
must not take the newer subjects out of a stream."""

from __future__ import annotations

import nats
from shared.contracts import subjects
from shared.messaging.broker import ensure_streams
from shared.testing.plugin import Infra


async def test_ensure_streams_keeps_subjects_it_does_not_know(clean_infra: Infra) -> None:
    nc = await nats.connect(clean_infra.nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        # A newer release added a subject to PAYMENTS ...
        info = await js.stream_info("PAYMENTS")
        config = info.config
        config.subjects = [*(config.subjects or []), "payments.from_the_next_release.v1"]
        await js.update_stream(config)
        # ... then a service of this release (re)starts and ensures the streams it knows.
        await ensure_streams(js)
        kept = (await js.stream_info("PAYMENTS")).config.subjects or []
        assert "payments.from_the_next_release.v1" in kept
        assert set(subjects.PAYMENTS_EVENTS) <= set(kept)
        config = (await js.stream_info("PAYMENTS")).config
        config.subjects = [s for s in kept if s != "payments.from_the_next_release.v1"]
        await js.update_stream(config)  # leave the stream as other tests expect it
    finally:
        await nc.close()
