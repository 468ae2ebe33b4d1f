"""Versioned event and request contracts — the only thing services know of each other.

One module per publishing context. Subjects are ``<context>.<event>.v<n>``; an incompatible
change is a new class with a new ``.v<n+1>`` subject, published side by side while consumers move.
"""

from shared.contracts.envelope import Event, Reply, Request, event_types
from shared.contracts.streams import (
    DEAD_LETTER_STREAM,
    STREAMS,
    StreamSpec,
    dead_letter_subject,
    stream_for_subject,
)

__all__ = [
    "DEAD_LETTER_STREAM",
    "STREAMS",
    "Event",
    "Reply",
    "Request",
    "StreamSpec",
    "dead_letter_subject",
    "event_types",
    "stream_for_subject",
]
