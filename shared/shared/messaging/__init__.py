"""NATS JetStream plumbing: broker, streams, transactional outbox, inbox guard, consumers."""

from shared.messaging.broker import ensure_streams, make_broker, stream_config
from shared.messaging.consumer import (
    ConsumerPolicy,
    DeadLetter,
    Delivery,
    NotYetVisibleError,
    durable_consumer,
)
from shared.messaging.inbox import InboxMixin, claim_event
from shared.messaging.outbox import OutboxMixin, OutboxRelay, add_to_outbox

__all__ = [
    "ConsumerPolicy",
    "DeadLetter",
    "Delivery",
    "InboxMixin",
    "NotYetVisibleError",
    "OutboxMixin",
    "OutboxRelay",
    "add_to_outbox",
    "claim_event",
    "durable_consumer",
    "ensure_streams",
    "make_broker",
    "stream_config",
]
