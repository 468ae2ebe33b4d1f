"""JetStream streams: one per publishing context, plus the dead-letter stream.

Each stream lists its subjects exactly (not ``orders.>``) so that request-reply subjects such as
``payments.create_invoice`` are never captured by a stream, which would answer them with a PubAck.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.contracts import subjects


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("ORDERS", subjects.ORDERS_EVENTS),
    StreamSpec("PAYMENTS", subjects.PAYMENTS_EVENTS),
    StreamSpec("WEBHOOKS", subjects.WEBHOOKS_EVENTS),
    StreamSpec("FULFILLMENT", subjects.FULFILLMENT_EVENTS),
)

DEAD_LETTER_STREAM = StreamSpec("DEADLETTER", ("deadletter.>",))


def dead_letter_subject(durable: str) -> str:
    return f"deadletter.{durable}"


def stream_for_subject(subject: str) -> str:
    if subject.startswith("deadletter."):
        return DEAD_LETTER_STREAM.name
    for spec in STREAMS:
        if subject in spec.subjects:
            return spec.name
    raise KeyError(f"no stream captures subject {subject}")
